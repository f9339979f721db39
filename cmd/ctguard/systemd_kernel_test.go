package main

import (
	"net"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestPrivilegedRunNotifiesSystemd plays systemd's side of Type=notify and
// WatchdogSec=: "ctguard run" sends READY=1 once the policies are applied
// and the per-flow engine listens (its /readyz answers 200 by then), feeds
// the watchdog, and sends STOPPING=1 on SIGTERM.
func TestPrivilegedRunNotifiesSystemd(t *testing.T) {
	t.Parallel()
	c := newCLI(t)
	sock := filepath.Join(t.TempDir(), "notify")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: sock, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	msgs := make(chan string, 100)
	go func() {
		buf := make([]byte, 4096)
		for {
			n, err := conn.Read(buf)
			if err != nil {
				close(msgs)
				return
			}
			msgs <- string(buf[:n])
		}
	}()
	next := func(what string) string {
		t.Helper()
		select {
		case m, ok := <-msgs:
			if !ok {
				t.Fatalf("notify socket closed waiting for %s", what)
			}
			return m
		case <-time.After(20 * time.Second):
			t.Fatalf("no %s within 20s", what)
		}
		return ""
	}
	path := writePolicy(t, perFlowPolicy("egress", true, ""))
	p := startRunEnv(t, c.ns, c.stateDir, []string{"NOTIFY_SOCKET=" + sock, "WATCHDOG_USEC=400000"}, "-f", path)

	for m := next("READY=1"); !strings.Contains(m, "READY=1"); m = next("READY=1") {
		if strings.Contains(m, "WATCHDOG=1") {
			t.Fatalf("watchdog fed before READY=1: %q", m)
		}
	}
	if code, _, err := p.get("/readyz"); err != nil || code != 200 {
		t.Fatalf("READY=1 sent while /readyz = %d, %v", code, err)
	}
	watchdogs := 0
	for watchdogs < 3 {
		if m := next("WATCHDOG=1"); m == "WATCHDOG=1" {
			watchdogs++
		}
	}
	if code := p.stop(syscall.SIGTERM); code != 0 {
		t.Fatalf("SIGTERM: exit %d", code)
	}
	for next("STOPPING=1") != "STOPPING=1" { // skip STATUS= lines
	}
}
