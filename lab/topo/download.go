package topo

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"hash"
	"io"
	"net"
	"net/http"
	"os/exec"
	"strings"
	"sync/atomic"
	"syscall"
	"time"
)

// Download is the outcome of one download from the client namespace.
type Download struct {
	Tool     string            // "wget" or "go"
	Bytes    int64             // body bytes received
	SHA256   [sha256.Size]byte // digest of the bytes received
	Err      error             // transfer error (wget's exit status with its message, or the HTTP client's error)
	Duration time.Duration
}

// OK reports whether the download ended without error and delivered exactly
// body.
func (d Download) OK(body Body) bool {
	return d.Err == nil && d.Bytes == int64(len(body.Data)) && d.SHA256 == body.SHA256
}

// StallTimeout ends a download that, after its first byte, received
// nothing for this long. A connection the NAT box reset stalls on the
// client's side when nothing is in flight (the lab has no WAN latency): the
// server's socket is gone, the client waits for data that never comes.
// Before the first byte only ctx and wget's own timeout apply, so a slow
// start (a SYN retransmitted under load) is not mistaken for a stall.
const StallTimeout = 2 * time.Second

// ErrStalled reports a download ended by StallTimeout.
var ErrStalled = errors.New("download stalled")

// Fetch downloads url from the client namespace: with the wget binary at
// wgetPath when it is set (the incident's client, run once, no retries),
// otherwise with Go's HTTP client. It returns when the transfer ends, fails,
// stalls (ErrStalled) or ctx is done.
func (t *Topology) Fetch(ctx context.Context, url, wgetPath string) Download {
	start := time.Now()
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	sum := &countingHash{h: sha256.New()}
	go watchStall(ctx, sum, cancel)
	d := Download{Tool: "go"}
	if wgetPath != "" {
		d.Tool = "wget"
		d.Err = t.wget(ctx, wgetPath, url, sum)
	} else {
		d.Err = t.httpGet(ctx, url, sum)
	}
	if cause := context.Cause(ctx); errors.Is(cause, ErrStalled) {
		d.Err = cause
	}
	d.Bytes = sum.n.Load()
	copy(d.SHA256[:], sum.h.Sum(nil))
	d.Duration = time.Since(start)
	return d
}

// watchStall cancels the download when its byte count, once moving, stops
// for StallTimeout.
func watchStall(ctx context.Context, sum *countingHash, cancel context.CancelCauseFunc) {
	tick := time.NewTicker(StallTimeout / 10)
	defer tick.Stop()
	var last int64
	var since time.Time
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-tick.C:
			if n := sum.n.Load(); n == 0 || n != last {
				last, since = n, now
			} else if now.Sub(since) >= StallTimeout {
				cancel(fmt.Errorf("%w: no data for %s after %d bytes", ErrStalled, StallTimeout, n))
				return
			}
		}
	}
}

// wget runs wget in the client namespace. The child is forked from a
// locked thread that has joined the namespace (a child inherits the network
// namespace of the thread that forks it); the thread is switched back right
// after the fork. Pdeathsig kills wget if that thread dies, which happens
// only with the process or when the thread could not be switched back and
// is discarded; a cancelled ctx kills it too.
func (t *Topology) wget(ctx context.Context, path, url string, body io.Writer) error {
	var stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, path,
		"--progress=dot:giga", "--tries=1", "--timeout=10", "--no-proxy", "--output-document=-", url)
	cmd.Stdout = body
	cmd.Stderr = &stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := t.Client.Do(cmd.Start); err != nil {
		return fmt.Errorf("start wget in %s: %w", t.Client.Name, err)
	}
	if err := cmd.Wait(); err != nil {
		return fmt.Errorf("wget: %w: %s", err, lastLine(stderr.String()))
	}
	return nil
}

// httpGet downloads with Go's HTTP client over a connection whose socket is
// created on a thread inside the client namespace.
func (t *Topology) httpGet(ctx context.Context, url string, body io.Writer) error {
	client := &http.Client{Transport: &http.Transport{
		Proxy:             nil,
		DisableKeepAlives: true,
		DialContext: func(ctx context.Context, network, addr string) (conn net.Conn, err error) {
			err = t.Client.Do(func() (err error) {
				conn, err = (&net.Dialer{}).DialContext(ctx, network, addr)
				return err
			})
			return conn, err
		},
	}}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	if _, err := io.Copy(body, resp.Body); err != nil {
		return fmt.Errorf("GET %s: %w", url, err)
	}
	return nil
}

// countingHash hashes and counts what is written to it; the count may be
// read concurrently.
type countingHash struct {
	h hash.Hash
	n atomic.Int64
}

// Write implements io.Writer, hashing and counting p.
func (c *countingHash) Write(p []byte) (int, error) {
	c.n.Add(int64(len(p)))
	return c.h.Write(p)
}

// lastLine returns the last non-empty line of wget's messages: its verdict
// ("Read error at byte 868352/2097152 (Connection reset by peer). Giving
// up.").
func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return strings.TrimSpace(lines[len(lines)-1])
}
