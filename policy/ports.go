package policy

import (
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
)

// String returns "443" for a single port and "8000-8100" for a range.
func (r PortRange) String() string {
	if r.From == r.To {
		return strconv.Itoa(int(r.From))
	}
	return fmt.Sprintf("%d-%d", r.From, r.To)
}

// Contains reports whether port lies in the range.
func (r PortRange) Contains(port uint16) bool {
	return r.From <= port && port <= r.To
}

// MarshalJSON encodes a single port as a number and a range as "A-B".
func (r PortRange) MarshalJSON() ([]byte, error) {
	if r.From == r.To {
		return strconv.AppendUint(nil, uint64(r.From), 10), nil
	}
	return json.Marshal(r.String())
}

// UnmarshalJSON accepts a port number or an "A-B" string, as MarshalJSON
// writes them, and rejects ports outside 1-65535 and reversed ranges. As
// encoding/json's convention asks, null leaves r unchanged.
func (r *PortRange) UnmarshalJSON(data []byte) error {
	if string(data) == "null" {
		return nil
	}
	s := string(data)
	if len(data) > 0 && data[0] == '"' {
		if err := json.Unmarshal(data, &s); err != nil {
			return err
		}
	}
	pr, msg := parsePortRange(s)
	if msg != "" {
		return fmt.Errorf("policy: %s", msg)
	}
	*r = pr
	return nil
}

// parsePortRange parses "443" or "8000-8100". On failure it returns a
// message for the operator instead of an error.
func parsePortRange(s string) (PortRange, string) {
	from, to, isRange := strings.Cut(s, "-")
	if !isRange {
		to = from
	}
	lo, ok1 := parsePortNumber(from)
	hi, ok2 := parsePortNumber(to)
	if !ok1 || !ok2 {
		return PortRange{}, fmt.Sprintf("invalid port %q: want a port 1-65535 or a range \"A-B\"", s)
	}
	for _, p := range []uint64{lo, hi} {
		if p < 1 || p > 65535 {
			if isRange {
				return PortRange{}, fmt.Sprintf("port %d in %q out of range 1-65535", p, s)
			}
			return PortRange{}, fmt.Sprintf("port %d out of range 1-65535", p)
		}
	}
	if lo > hi {
		return PortRange{}, fmt.Sprintf("reversed port range %q (did you mean \"%d-%d\"?)", s, hi, lo)
	}
	return PortRange{From: uint16(lo), To: uint16(hi)}, ""
}

// parsePortNumber accepts decimal digits only (no sign, spaces or base
// prefix); values past 65535 are returned for the caller to report.
func parsePortNumber(s string) (uint64, bool) {
	if s == "" || len(s) > 10 || strings.TrimLeft(s, "0123456789") != "" {
		return 0, false
	}
	n, err := strconv.ParseUint(s, 10, 64)
	return n, err == nil
}
