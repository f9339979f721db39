package metrics

import (
	"context"
	"io"
	"net"
	"net/http"
	"os"
	"testing"
	"time"
)

// openFds counts this process's open file descriptors.
func openFds(t *testing.T) int {
	t.Helper()
	entries, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skip("no /proc/self/fd")
	}
	return len(entries)
}

// TestIdleConnectionsCannotExhaustFds is finding 7 of issue 13: 19,985 idle
// connections to the metrics endpoint used up the fd limit and every
// reconcile failed with "too many open files". The server now holds at
// most MaxConnections of them, and drops idle ones within seconds.
func TestIdleConnectionsCannotExhaustFds(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- ServeListener(ctx, ln, New().Handler(nil), "", nil) }()
	defer func() { cancel(); <-done }()

	const idle = 200
	before := openFds(t)
	conns := make([]net.Conn, 0, idle)
	for range idle {
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, c)
	}
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	time.Sleep(300 * time.Millisecond) // let the server accept what it will
	// The client side holds idle fds; the server side at most MaxConnections.
	if grew := openFds(t) - before - idle; grew > MaxConnections+4 {
		t.Fatalf("the server holds %d fds for %d idle connections, want at most %d", grew, idle, MaxConnections)
	}

	// An accepted idle connection is dropped within the read timeout.
	start := time.Now()
	_ = conns[0].SetReadDeadline(time.Now().Add(readTimeout + 3*time.Second))
	if _, err := conns[0].Read(make([]byte, 1)); err != io.EOF {
		t.Fatalf("first idle connection: read %v after %v, want EOF (closed by the server)", err, time.Since(start))
	}
	t.Logf("idle connection closed by the server after %v", time.Since(start))
	for _, c := range conns {
		c.Close()
	}
	// Scrapes work again once the idle ones are gone.
	client := &http.Client{Timeout: 2 * readTimeout}
	resp, err := client.Get("http://" + ln.Addr().String() + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("healthz: %d", resp.StatusCode)
	}
}
