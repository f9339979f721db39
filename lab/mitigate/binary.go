package mitigate

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/ctguard/ctguard/lab"
)

// Timeouts of a ctguard process the lab runs.
const (
	// readyTimeout bounds the wait for /readyz.
	readyTimeout = 20 * time.Second
	// stopTimeout bounds the wait for exit after SIGTERM (cleanup included).
	stopTimeout = 10 * time.Second
	// metricsAddr is where the process serves /readyz, inside the NAT
	// namespace (its own loopback: no port is shared with anything).
	metricsAddr = "127.0.0.1:9468"
)

// runBinary starts "BINARY run -f POLICY --cleanup-on-exit" in nat with a
// state directory of its own and returns once its /readyz answers 200.
// stop sends SIGTERM (ctguard then removes all it applied) and reports a
// non-zero exit with the process's last log lines.
func runBinary(ctx context.Context, binary string, nat lab.Namespace, doc string, log *slog.Logger) (func() error, error) {
	dir, err := os.MkdirTemp("", "ctguard-lab-run-")
	if err != nil {
		return nil, err
	}
	file := filepath.Join(dir, "policy.yaml")
	if err := os.WriteFile(file, []byte(doc), 0o600); err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	out := &syncBuffer{}
	cmd := exec.Command(binary, "--state-dir", filepath.Join(dir, "state"), "--log-level", "warn",
		"run", "-f", file, "--metrics-addr", metricsAddr, "--cleanup-on-exit")
	cmd.Stdout, cmd.Stderr = out, out
	// The child inherits the namespace of the thread that forks it;
	// Pdeathsig ends it with that thread, i.e. with the lab.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := nat.Do(cmd.Start); err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("start %s run in %s: %w", binary, nat.Name, err)
	}
	log.Debug("ctguard run started", "pid", cmd.Process.Pid, "namespace", nat.Name)
	done := make(chan struct{})
	var waitErr error
	go func() {
		waitErr = cmd.Wait()
		close(done)
	}()
	stop := func() error {
		defer os.RemoveAll(dir)
		select {
		case <-done:
			return fmt.Errorf("ctguard run exited early: %v: %s", waitErr, out.tail())
		default:
		}
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(stopTimeout):
			_ = cmd.Process.Kill()
			<-done
			return fmt.Errorf("ctguard run did not stop within %s of SIGTERM: %s", stopTimeout, out.tail())
		}
		if waitErr != nil {
			return fmt.Errorf("ctguard run: %v: %s", waitErr, out.tail())
		}
		return nil
	}
	if err := waitReady(ctx, nat, done); err != nil {
		err = fmt.Errorf("ctguard run in %s: %w: %s", nat.Name, err, out.tail())
		return nil, errors.Join(err, stop())
	}
	return stop, nil
}

// waitReady polls /readyz from a socket inside nat until it answers 200,
// the process exits (done), ctx ends or readyTimeout passes.
func waitReady(ctx context.Context, nat lab.Namespace, done <-chan struct{}) error {
	client := &http.Client{Timeout: time.Second, Transport: &http.Transport{
		DisableKeepAlives: true,
		DialContext: func(ctx context.Context, network, addr string) (conn net.Conn, err error) {
			err = nat.Do(func() (err error) {
				conn, err = (&net.Dialer{}).DialContext(ctx, network, addr)
				return err
			})
			return conn, err
		},
	}}
	deadline := time.Now().Add(readyTimeout)
	for {
		resp, err := client.Get("http://" + metricsAddr + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		select {
		case <-done:
			return errors.New("exited before it was ready")
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("not ready after %s", readyTimeout)
		}
	}
}

// syncBuffer collects a process's output.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

// tail returns the last few lines written.
func (b *syncBuffer) tail() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	lines := strings.Split(strings.TrimSpace(b.buf.String()), "\n")
	return strings.Join(lines[max(len(lines)-5, 0):], "\n")
}
