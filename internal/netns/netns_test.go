package netns_test

import (
	"errors"
	"os"
	"runtime"
	"strings"
	"testing"

	"github.com/ctguard/ctguard/internal/netns"
)

func TestIdentity(t *testing.T) {
	cur, err := netns.Current()
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(cur, "net:[") || !strings.HasSuffix(cur, "]") {
		t.Fatalf("Current = %q", cur)
	}
	if got, err := netns.IdentityOf(-1); err != nil || got != cur {
		t.Fatalf("IdentityOf(-1) = %q, %v; want %q", got, err, cur)
	}
	f, err := os.Open("/proc/self/ns/net")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if got, err := netns.IdentityOf(int(f.Fd())); err != nil || got != cur {
		t.Fatalf("IdentityOf(own ns fd) = %q, %v; want %q", got, err, cur)
	}
	if _, err := netns.IdentityOf(int(os.Stdin.Fd())); err == nil {
		t.Fatal("IdentityOf(stdin) succeeded")
	}
}

func TestUniqueName(t *testing.T) {
	a, err := netns.UniqueName("ctg-x-")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := netns.UniqueName("ctg-x-")
	if a == b || len(a) != len("ctg-x-")+8 || !strings.HasPrefix(a, "ctg-x-") {
		t.Fatalf("UniqueName = %q, %q", a, b)
	}
	long, _ := netns.UniqueName(strings.Repeat("p", 40))
	if len(long) != 32 {
		t.Fatalf("UniqueName of a long prefix = %q (%d characters), want 32", long, len(long))
	}
}

// TestDoCurrent runs fn directly for fd < 0 and passes its error on.
func TestDoCurrent(t *testing.T) {
	want := errors.New("fn")
	if err := netns.Do(-1, func() error { return want }); err != want {
		t.Fatalf("Do(-1) = %v, want fn's error", err)
	}
}

// TestDoOwnNamespace switches into the namespace the thread is already in
// (allowed without privileges on a namespace of one's own user namespace
// only as root: skip otherwise) and checks a Goexit inside fn is reported.
func TestDoOwnNamespace(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("setns needs CAP_SYS_ADMIN")
	}
	f, err := os.Open("/proc/self/ns/net")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	ran := false
	if err := netns.Do(int(f.Fd()), func() error { ran = true; return nil }); err != nil || !ran {
		t.Fatalf("Do = %v, ran %v", err, ran)
	}
	if err := netns.Do(int(f.Fd()), func() error { runtime.Goexit(); return nil }); !errors.Is(err, netns.ErrExited) {
		t.Fatalf("Do with Goexit = %v, want ErrExited", err)
	}
}
