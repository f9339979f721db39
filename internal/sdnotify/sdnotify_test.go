package sdnotify

import (
	"net"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"
)

// listen opens a unixgram socket as systemd's notify socket would be.
func listen(t *testing.T) (*net.UnixConn, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "notify")
	c, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c, path
}

func TestSend(t *testing.T) {
	c, path := listen(t)
	t.Setenv("NOTIFY_SOCKET", path)
	t.Setenv("WATCHDOG_USEC", "")
	t.Setenv("WATCHDOG_PID", "")
	n, err := FromEnv()
	if err != nil || n == nil {
		t.Fatalf("FromEnv = %v, %v", n, err)
	}
	if err := n.Send(Ready, Status("policies\napplied")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 256)
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	k, err := c.Read(buf)
	if err != nil {
		t.Fatal(err)
	}
	if got := string(buf[:k]); got != "READY=1\nSTATUS=policies applied" {
		t.Fatalf("datagram %q", got)
	}
	if n.WatchdogInterval() != 0 {
		t.Fatalf("watchdog %v without WATCHDOG_USEC", n.WatchdogInterval())
	}
}

func TestFromEnv(t *testing.T) {
	me := strconv.Itoa(os.Getpid())
	tests := []struct {
		name              string
		socket, usec, pid string
		wantNil, wantErr  bool
		wantWatchdog      time.Duration
	}{
		{"not under systemd", "", "", "", true, false, 0},
		{"abstract socket", "@/org/freedesktop/systemd1/notify", "", "", false, false, 0},
		{"relative path", "notify", "", "", true, true, 0},
		{"watchdog", "/run/systemd/notify", "30000000", "", false, false, 30 * time.Second},
		{"watchdog for this pid", "/run/systemd/notify", "30000000", me, false, false, 30 * time.Second},
		{"watchdog for another pid", "/run/systemd/notify", "30000000", "1", false, false, 0},
		{"bad watchdog", "/run/systemd/notify", "soon", "", true, true, 0},
		{"zero watchdog", "/run/systemd/notify", "0", "", true, true, 0},
	}
	for _, tt := range tests {
		t.Setenv("NOTIFY_SOCKET", tt.socket)
		t.Setenv("WATCHDOG_USEC", tt.usec)
		t.Setenv("WATCHDOG_PID", tt.pid)
		n, err := FromEnv()
		if (err != nil) != tt.wantErr || (n == nil) != tt.wantNil || n.WatchdogInterval() != tt.wantWatchdog {
			t.Errorf("%s: FromEnv = %+v, %v", tt.name, n, err)
		}
	}
}

func TestNilNotifierIsQuiet(t *testing.T) {
	var n *Notifier
	if err := n.Send(Ready); err != nil || n.WatchdogInterval() != 0 {
		t.Fatalf("nil notifier: %v, %v", err, n.WatchdogInterval())
	}
}
