package journal

import (
	"testing"

	"github.com/ctguard/ctguard/internal/netnstest"
)

func TestPrivilegedNetNSOfFd(t *testing.T) {
	ns := netnstest.NewNetNS(t, "journal")
	host, err := CurrentNetNS()
	if err != nil {
		t.Fatal(err)
	}
	got, err := NetNSOfFd(ns.Fd())
	if err != nil {
		t.Fatal(err)
	}
	if got == host {
		t.Fatalf("test namespace has the host's identity %s", got)
	}
	want := string(ns.MustRun(t, "readlink", "/proc/self/ns/net"))
	if got+"\n" != want {
		t.Fatalf("NetNSOfFd = %q, readlink inside the namespace says %q", got, want)
	}
	if err := (&Journal{NetNS: host}).CheckNetNS(got); err == nil {
		t.Fatal("host journal accepted in the test namespace")
	}
}
