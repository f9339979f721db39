package netns_test

import (
	"os"
	"testing"

	"github.com/ctguard/ctguard/internal/netns"
	"github.com/ctguard/ctguard/internal/netnstest"
)

// TestPrivilegedIdentityOf compares the identity of a fresh namespace with
// what readlink inside it says, and checks Do runs code inside it.
func TestPrivilegedIdentityOf(t *testing.T) {
	ns := netnstest.NewNetNS(t, "netns")
	host, err := netns.Current()
	if err != nil {
		t.Fatal(err)
	}
	got, err := netns.IdentityOf(ns.Fd())
	if err != nil {
		t.Fatal(err)
	}
	if got == host {
		t.Fatalf("test namespace has the host's identity %s", got)
	}
	want := string(ns.MustRun(t, "readlink", "/proc/self/ns/net"))
	if got+"\n" != want {
		t.Fatalf("IdentityOf = %q, readlink inside the namespace says %q", got, want)
	}
	// /proc/self names the process (its main thread); the thread Do
	// switched is /proc/thread-self.
	var inside string
	if err := netns.Do(ns.Fd(), func() (err error) { inside, err = os.Readlink("/proc/thread-self/ns/net"); return err }); err != nil || inside != got {
		t.Fatalf("the thread's namespace inside Do = %q, %v; want %q", inside, err, got)
	}
	if after, _ := netns.Current(); after != host {
		t.Fatalf("after Do the process reports %q, want %q", after, host)
	}
}
