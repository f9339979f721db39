package nslock

import (
	"bufio"
	"errors"
	"net"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ctguard/ctguard/internal/netnstest"
)

// TestHelperHold is not a test: run by the tests below as a child process
// (inside a namespace by "ip netns exec"), it takes the lock as
// NSLOCK_HELPER_ROLE ("squat": binds the name as a non-ctguard process
// would), says "held" and sleeps until killed.
func TestHelperHold(t *testing.T) {
	role := os.Getenv("NSLOCK_HELPER_ROLE")
	if role == "" {
		t.Skip("helper process only")
	}
	if role == "squat" {
		ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: Name, Net: "unix"})
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
	} else if _, err := New(-1, "/helper").Acquire(role, 0); err != nil {
		t.Fatal(err)
	}
	os.Stdout.WriteString("held\n")
	time.Sleep(time.Minute)
}

// holdInChild starts the helper in ns and waits until it holds the lock.
func holdInChild(t *testing.T, ns *netnstest.NS, role string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command("ip", "netns", "exec", ns.Name, os.Args[0], "-test.run=^TestHelperHold$")
	cmd.Env = append(os.Environ(), "NSLOCK_HELPER_ROLE="+role)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	line, _ := bufio.NewReader(out).ReadString('\n')
	if strings.TrimSpace(line) != "held" {
		t.Fatalf("helper said %q", line)
	}
	return cmd
}

// TestPrivilegedOneControllerPerNamespace is finding 3 of issue 13: two
// controllers with different state directories ran in one namespace.
func TestPrivilegedOneControllerPerNamespace(t *testing.T) {
	a := netnstest.NewNetNS(t, "s13lka")
	b := netnstest.NewNetNS(t, "s13lkb")
	release, err := New(a.Fd(), "/state/one").Acquire(RoleRun, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer release()

	start := time.Now()
	_, err = New(a.Fd(), "/state/two").Acquire(RoleRun, time.Second)
	var held *HeldError
	if !errors.As(err, &held) || !errors.Is(err, ErrControllerRunning) {
		t.Fatalf("second controller in the namespace: %v, want ErrControllerRunning", err)
	}
	if time.Since(start) > 500*time.Millisecond {
		t.Errorf("refusing behind a controller took %v: it must not wait", time.Since(start))
	}
	if held.Holder.PID != os.Getpid() || held.Holder.StateDir != "/state/one" {
		t.Errorf("holder %+v, want pid %d and state dir /state/one", held.Holder, os.Getpid())
	}
	for _, want := range []string{`"ctguard run"`, "pid ", "/state/one"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("message %q lacks %q", err, want)
		}
	}
	if _, err := New(a.Fd(), "/x").Acquire("apply", time.Second); !errors.Is(err, ErrControllerRunning) {
		t.Fatalf("one-shot apply behind a controller: %v", err)
	}

	// Another namespace has a lock of its own.
	rb, err := New(b.Fd(), "/state/one").Acquire(RoleRun, 0)
	if err != nil {
		t.Fatalf("controller in another namespace: %v", err)
	}
	rb()

	release()
	release() // twice is fine
	again, err := New(a.Fd(), "/state/two").Acquire(RoleRun, 0)
	if err != nil {
		t.Fatalf("after release: %v", err)
	}
	again()
}

// TestPrivilegedOneShotWaitsForOneShot: a one-shot holder is waited for (up
// to the wait), and named as a one-shot command, not as a controller.
func TestPrivilegedOneShotWaitsForOneShot(t *testing.T) {
	ns := netnstest.NewNetNS(t, "s13lkw")
	release, err := New(ns.Fd(), "/s").Acquire("apply", 0)
	if err != nil {
		t.Fatal(err)
	}
	_, err = New(ns.Fd(), "/s").Acquire("rollback", 200*time.Millisecond)
	if !errors.Is(err, ErrBusy) || errors.Is(err, ErrControllerRunning) || !strings.Contains(err.Error(), `one-shot "ctguard apply"`) {
		t.Fatalf("behind a one-shot apply: %v, want ErrBusy naming it", err)
	}
	time.AfterFunc(200*time.Millisecond, release)
	start := time.Now()
	second, err := New(ns.Fd(), "/s").Acquire("rollback", 5*time.Second)
	if err != nil {
		t.Fatalf("waiting for a one-shot apply: %v", err)
	}
	second()
	t.Logf("acquired %v after waiting for the one-shot holder", time.Since(start))
}

// TestPrivilegedKilledHolderReleases: the kernel frees the name when its
// holder dies, kill -9 included; a squatter that is not ctguard is named
// with its pid and uid.
func TestPrivilegedKilledHolderReleases(t *testing.T) {
	ns := netnstest.NewNetNS(t, "s13lkk")
	child := holdInChild(t, ns, RoleRun)
	_, err := New(ns.Fd(), "/s").Acquire(RoleRun, 0)
	var held *HeldError
	if !errors.As(err, &held) || held.Holder.Role != RoleRun || held.Holder.PID <= 0 {
		t.Fatalf("behind a controller child: %v", err)
	}
	child.Process.Signal(syscall.SIGKILL)
	child.Wait()
	release, err := New(ns.Fd(), "/s").Acquire(RoleRun, time.Second)
	if err != nil {
		t.Fatalf("after kill -9 of the holder: %v", err)
	}
	release()

	holdInChild(t, ns, "squat")
	_, err = New(ns.Fd(), "/s").Acquire("apply", time.Second)
	if !errors.As(err, &held) || held.Holder.Role != "" || !strings.Contains(err.Error(), "not ctguard") || !strings.Contains(err.Error(), "uid 0") {
		t.Fatalf("behind a squatter: %v", err)
	}
}
