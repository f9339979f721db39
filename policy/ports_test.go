package policy

import (
	"encoding/json"
	"testing"
)

func TestPortRangeJSON(t *testing.T) {
	tests := []struct {
		r    PortRange
		json string
	}{
		{PortRange{443, 443}, `443`},
		{PortRange{8000, 8100}, `"8000-8100"`},
		{PortRange{1, 65535}, `"1-65535"`},
	}
	for _, tt := range tests {
		got, err := json.Marshal(tt.r)
		if err != nil || string(got) != tt.json {
			t.Errorf("Marshal(%v) = %s, %v; want %s", tt.r, got, err, tt.json)
		}
		var back PortRange
		if err := json.Unmarshal(got, &back); err != nil || back != tt.r {
			t.Errorf("Unmarshal(%s) = %v, %v; want %v", got, back, err, tt.r)
		}
	}
}

func TestPortRangeUnmarshalAccepts(t *testing.T) {
	for in, want := range map[string]PortRange{
		`"443"`:     {443, 443},
		`"80-80"`:   {80, 80},
		`"1-65535"`: {1, 65535},
	} {
		var got PortRange
		if err := json.Unmarshal([]byte(in), &got); err != nil || got != want {
			t.Errorf("Unmarshal(%s) = %v, %v; want %v", in, got, err, want)
		}
	}
}

func TestPortRangeUnmarshalRejects(t *testing.T) {
	for in, want := range map[string]string{
		`0`:           "policy: port 0 out of range 1-65535",
		`65536`:       "policy: port 65536 out of range 1-65535",
		`"9-8"`:       `policy: reversed port range "9-8" (did you mean "8-9"?)`,
		`"0-10"`:      `policy: port 0 in "0-10" out of range 1-65535`,
		`-1`:          `policy: invalid port "-1": want a port 1-65535 or a range "A-B"`,
		`1.5`:         `policy: invalid port "1.5": want a port 1-65535 or a range "A-B"`,
		`"80-"`:       `policy: invalid port "80-": want a port 1-65535 or a range "A-B"`,
		`" 80"`:       `policy: invalid port " 80": want a port 1-65535 or a range "A-B"`,
		`{"from":80}`: `policy: invalid port "{\"from\":80}": want a port 1-65535 or a range "A-B"`,
	} {
		var got PortRange
		err := json.Unmarshal([]byte(in), &got)
		if err == nil || err.Error() != want {
			t.Errorf("Unmarshal(%s) error = %v, want %q", in, err, want)
		}
	}
}

func TestPortRangeStringAndContains(t *testing.T) {
	r := PortRange{8000, 8100}
	if r.String() != "8000-8100" || (PortRange{443, 443}).String() != "443" {
		t.Errorf("String() = %q, %q", r.String(), PortRange{443, 443}.String())
	}
	for port, want := range map[uint16]bool{7999: false, 8000: true, 8050: true, 8100: true, 8101: false} {
		if got := r.Contains(port); got != want {
			t.Errorf("Contains(%d) = %v, want %v", port, got, want)
		}
	}
}
