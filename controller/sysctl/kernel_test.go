package sysctl

import (
	"errors"
	"io/fs"
	"os/exec"
	"runtime"
	"strings"
	"testing"

	"github.com/ctguard/ctguard/internal/netnstest"
	"github.com/vishvananda/netns"
)

// hostSysctl reads a sysctl of the host namespace with the sysctl tool.
func hostSysctl(t *testing.T, name string) string {
	t.Helper()
	out, err := exec.Command("sysctl", "-n", name).CombinedOutput()
	if err != nil {
		t.Fatalf("sysctl -n %s: %v\n%s", name, err, out)
	}
	return strings.TrimSpace(string(out))
}

func TestPrivilegedSetInNamespace(t *testing.T) {
	ns := netnstest.NewNetNS(t, "sysctl")
	hostBefore := hostSysctl(t, BeLiberal)
	s := Open(ns.Fd())

	if got, err := s.Get(BeLiberal); err != nil || got != "0" {
		t.Fatalf("Get in fresh namespace = %q, %v; want 0", got, err)
	}
	for _, v := range []string{"1", "0", "1"} {
		if err := s.Set(BeLiberal, v); err != nil {
			t.Fatal(err)
		}
		if got := ns.Sysctl(t, BeLiberal); got != v {
			t.Fatalf("ip netns exec sysctl -n = %q after Set(%q)", got, v)
		}
		if got, err := s.Get(BeLiberal); err != nil || got != v {
			t.Fatalf("Get = %q, %v after Set(%q)", got, err, v)
		}
		if got := hostSysctl(t, BeLiberal); got != hostBefore {
			t.Fatalf("host %s changed: %q -> %q", BeLiberal, hostBefore, got)
		}
		if got, err := Open(-1).Get(BeLiberal); err != nil || got != hostBefore {
			t.Fatalf("Open(-1).Get = %q, %v; want host value %q", got, err, hostBefore)
		}
	}
}

func TestPrivilegedErrors(t *testing.T) {
	ns := netnstest.NewNetNS(t, "sysctl")
	s := Open(ns.Fd())
	if _, err := s.Get("net.ctguard.no_such_sysctl"); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("Get(missing) error = %v, want fs.ErrNotExist", err)
	}
	if err := s.Set(BeLiberal, "not-a-number"); err == nil {
		t.Fatal("Set(not-a-number) succeeded")
	}
	if got := ns.Sysctl(t, BeLiberal); got != "0" {
		t.Fatalf("failed Set changed the value to %q", got)
	}
}

func TestPrivilegedCallerThreadStaysHome(t *testing.T) {
	ns := netnstest.NewNetNS(t, "sysctl")
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	before, err := netns.Get()
	if err != nil {
		t.Fatal(err)
	}
	defer before.Close()
	s := Open(ns.Fd())
	for range 50 {
		if err := s.Set(BeLiberal, "1"); err != nil {
			t.Fatal(err)
		}
	}
	after, err := netns.Get()
	if err != nil {
		t.Fatal(err)
	}
	defer after.Close()
	if !before.Equal(after) {
		t.Fatalf("calling thread moved from %v to %v", before, after)
	}
}
