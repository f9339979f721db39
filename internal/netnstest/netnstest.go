// Package netnstest gives kernel tests their own network namespaces and
// independent cross-checks with the system's nft and conntrack tools.
package netnstest

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"strconv"
	"testing"
	"time"

	"github.com/ctguard/ctguard/internal/netns"
	vnetns "github.com/vishvananda/netns"
)

// RequirePrivileged skips the test unless it runs as root. When
// CTGUARD_REQUIRE_PRIVILEGED=1 (set by .ci/run) it fails instead, so CI can
// never silently skip the kernel tests.
func RequirePrivileged(t testing.TB) {
	t.Helper()
	if os.Geteuid() == 0 {
		return
	}
	if os.Getenv("CTGUARD_REQUIRE_PRIVILEGED") == "1" {
		t.Fatalf("kernel test needs root (CAP_NET_ADMIN) and CTGUARD_REQUIRE_PRIVILEGED=1 forbids skipping")
	}
	t.Skip("kernel test skipped: needs root (CAP_NET_ADMIN) to create network namespaces")
}

// TimeScale is CTGUARD_TEST_TIME_SCALE (a whole number from 1 to 100,
// default 1): hack/kernels/matrix runs the kernel tests on emulated CPUs,
// many times slower than the machines their time bounds and loads were set
// on, and tells them how much slower.
func TimeScale() int {
	if n, err := strconv.Atoi(os.Getenv("CTGUARD_TEST_TIME_SCALE")); err == nil && n > 1 && n <= 100 {
		return n
	}
	return 1
}

// Slow stretches a time bound by TimeScale.
func Slow(d time.Duration) time.Duration {
	return d * time.Duration(TimeScale())
}

// NS is a named network namespace created for one test.
type NS struct {
	Name   string
	Handle vnetns.NsHandle
}

// Fd returns the namespace's file descriptor, for netlink sockets that must
// be opened inside it.
func (n *NS) Fd() int { return int(n.Handle) }

// NewNetNS creates a uniquely named network namespace (visible to
// "ip netns exec") with loopback up, and deletes it when the test ends. No
// thread is ever left inside it.
func NewNetNS(t testing.TB, prefix string) *NS {
	t.Helper()
	RequirePrivileged(t)
	name, err := netns.UniqueName("ctg-" + prefix + "-")
	if err != nil {
		t.Fatal(err)
	}
	n, err := netns.NewNamed(name)
	if err != nil {
		t.Fatal(err)
	}
	ns := &NS{Name: n.Name, Handle: n.Handle}
	t.Cleanup(func() {
		if err := n.Delete(); err != nil {
			t.Error(err)
		}
	})
	ns.MustRun(t, "ip", "link", "set", "lo", "up")
	return ns
}

// Run runs a command inside the namespace ("ip netns exec") and returns its
// output: all of its stdout, then all of its stderr. Kept apart, they cannot
// interleave: a tool that block-buffers stdout (conntrack -L) writes its
// stderr summary between two of its stdout buffers, which can cut a listed
// line in two.
func (n *NS) Run(name string, args ...string) ([]byte, error) {
	cmd := exec.Command("ip", append([]string{"netns", "exec", n.Name, name}, args...)...)
	var out, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &stderr
	err := cmd.Run()
	out.Write(stderr.Bytes())
	return out.Bytes(), err
}

// MustRun is Run that fails the test on error.
func (n *NS) MustRun(t testing.TB, name string, args ...string) []byte {
	t.Helper()
	out, err := n.Run(name, args...)
	if err != nil {
		t.Fatalf("%s %v in %s: %v\n%s", name, args, n.Name, err, out)
	}
	return out
}

// NftJSON runs "nft -j <args>" in the namespace and decodes its output.
func (n *NS) NftJSON(t testing.TB, args ...string) map[string]any {
	t.Helper()
	out := n.MustRun(t, "nft", append([]string{"-j"}, args...)...)
	var v map[string]any
	if len(bytes.TrimSpace(out)) == 0 {
		return map[string]any{}
	}
	if err := json.Unmarshal(out, &v); err != nil {
		t.Fatalf("nft -j %v: bad JSON: %v\n%s", args, err, out)
	}
	return v
}

// Sysctl reads a sysctl (dotted name) inside the namespace.
func (n *NS) Sysctl(t testing.TB, name string) string {
	t.Helper()
	return string(bytes.TrimSpace(n.MustRun(t, "sysctl", "-n", name)))
}

// Do runs fn on a locked OS thread switched into the namespace, so sockets
// fn creates live there (netns.Do). fn may call t.Fatal: the test then
// stops.
func (n *NS) Do(t testing.TB, fn func()) {
	t.Helper()
	if err := netns.Do(n.Fd(), func() error { fn(); return nil }); err != nil {
		if errors.Is(err, netns.ErrExited) {
			t.FailNow() // fn failed the test and ended its goroutine
		}
		t.Fatal(err)
	}
}
