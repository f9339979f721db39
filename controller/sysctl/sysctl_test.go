package sysctl

import (
	"errors"
	"io/fs"
	"testing"
)

func TestProcPath(t *testing.T) {
	tests := []struct {
		name, want string
		wantErr    bool
	}{
		{name: BeLiberal, want: "/proc/sys/net/netfilter/nf_conntrack_tcp_be_liberal"},
		{name: "net.ipv4.ip_forward", want: "/proc/sys/net/ipv4/ip_forward"},
		{name: "net.ipv4.conf.all.rp_filter", want: "/proc/sys/net/ipv4/conf/all/rp_filter"},
		{name: "net.ipv4.conf.lan-0.forwarding", want: "/proc/sys/net/ipv4/conf/lan-0/forwarding"},
		{name: "", wantErr: true},
		{name: "net..ipv4", wantErr: true},
		{name: ".net", wantErr: true},
		{name: "net.", wantErr: true},
		{name: "net/ipv4/ip_forward", wantErr: true},
		{name: "net.ipv4.../../etc", wantErr: true},
		{name: "net.ipv4 .ip_forward", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := procPath(tt.name)
			if tt.wantErr {
				if !errors.Is(err, ErrInvalidName) {
					t.Fatalf("procPath(%q) = %q, %v; want ErrInvalidName", tt.name, got, err)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("procPath(%q) = %q, %v; want %q", tt.name, got, err, tt.want)
			}
		})
	}
}

func TestGetCurrentNamespace(t *testing.T) {
	got, err := Open(-1).Get("kernel.ostype")
	if err != nil {
		t.Fatal(err)
	}
	if got != "Linux" {
		t.Fatalf("kernel.ostype = %q, want Linux (no trailing newline)", got)
	}
}

func TestGetMissing(t *testing.T) {
	_, err := Open(-1).Get("net.ctguard.no_such_sysctl")
	if !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("Get(missing) error = %v, want fs.ErrNotExist", err)
	}
}

func TestInvalidNameNeverTouchesProc(t *testing.T) {
	s := Open(-1)
	if _, err := s.Get("../../etc/passwd"); !errors.Is(err, ErrInvalidName) {
		t.Fatalf("Get error = %v, want ErrInvalidName", err)
	}
}

// TestSetWritesOnlyBeLiberal: ctguard owns one sysctl; a write to any other
// name (here one a forged journal could name) fails before /proc is opened.
func TestSetWritesOnlyBeLiberal(t *testing.T) {
	s := Open(-1)
	for _, name := range []string{"net.ipv4.ip_forward", "net/ipv4/ip_forward", "kernel.core_pattern", ""} {
		if err := s.Set(name, "1"); !errors.Is(err, ErrNotOwned) {
			t.Errorf("Set(%q) error = %v, want ErrNotOwned", name, err)
		}
	}
}
