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
	"strconv"
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

// Process is a "ctguard run" the lab started in a NAT namespace, with a
// state directory and policy file of its own.
type Process struct {
	binary, dir string
	nat         lab.Namespace
	log         *slog.Logger
	out         *syncBuffer

	cmd     *exec.Cmd
	done    chan struct{}
	waitErr error
}

// StartRun starts "BINARY run -f POLICY --cleanup-on-exit" in nat with the
// policy document doc and returns once its /readyz answers 200.
func StartRun(ctx context.Context, binary string, nat lab.Namespace, doc string, log *slog.Logger) (*Process, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	dir, err := os.MkdirTemp("", "ctguard-lab-run-")
	if err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(dir, "policy.yaml"), []byte(doc), 0o600); err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	p := &Process{binary: binary, dir: dir, nat: nat, log: log, out: &syncBuffer{}}
	if err := p.start(ctx); err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	return p, nil
}

// start starts the process and waits until it is ready; on failure the
// process is gone.
func (p *Process) start(ctx context.Context) error {
	p.cmd = exec.Command(p.binary, "--state-dir", filepath.Join(p.dir, "state"), "--log-level", "warn",
		"run", "-f", filepath.Join(p.dir, "policy.yaml"), "--metrics-addr", metricsAddr, "--cleanup-on-exit")
	p.cmd.Stdout, p.cmd.Stderr = p.out, p.out
	// The child inherits the namespace of the thread that forks it;
	// Pdeathsig ends it with that thread, i.e. with the lab.
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := p.nat.Do(p.cmd.Start); err != nil {
		return fmt.Errorf("start %s run in %s: %w", p.binary, p.nat.Name, err)
	}
	p.log.Debug("ctguard run started", "pid", p.cmd.Process.Pid, "namespace", p.nat.Name)
	done := make(chan struct{})
	p.done = done
	cmd := p.cmd
	go func() {
		p.waitErr = cmd.Wait()
		close(done)
	}()
	if err := waitReady(ctx, p.nat, done); err != nil {
		_ = p.cmd.Process.Kill()
		<-done
		return fmt.Errorf("ctguard run in %s: %w: %s", p.nat.Name, err, p.out.tail())
	}
	return nil
}

// Stop sends SIGTERM (ctguard then removes all it applied), waits, and
// reports a non-zero exit with the process's last log lines. It removes
// the state directory.
func (p *Process) Stop() error {
	defer os.RemoveAll(p.dir)
	select {
	case <-p.done:
		return fmt.Errorf("ctguard run exited early: %v: %s", p.waitErr, p.out.tail())
	default:
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(stopTimeout):
		_ = p.cmd.Process.Kill()
		<-p.done
		return fmt.Errorf("ctguard run did not stop within %s of SIGTERM: %s", stopTimeout, p.out.tail())
	}
	if p.waitErr != nil {
		return fmt.Errorf("ctguard run: %v: %s", p.waitErr, p.out.tail())
	}
	return nil
}

// Kill ends the process with SIGKILL, as a crash or an OOM kill would:
// what it applied stays in the kernel.
func (p *Process) Kill() error {
	if err := p.cmd.Process.Kill(); err != nil {
		return err
	}
	<-p.done
	return nil
}

// Restart starts the process again with the same state directory and
// policy (after Kill) and waits until it is ready.
func (p *Process) Restart(ctx context.Context) error {
	select {
	case <-p.done:
	default:
		return errors.New("ctguard run is still running")
	}
	return p.start(ctx)
}

// CPU returns the CPU time the running process has used: the sum of its
// threads' run times in /proc/PID/task/*/schedstat (nanoseconds; threads
// that already ended are not counted, and Go rarely ends one), or, where
// the kernel has no schedstat, utime+stime of /proc/PID/stat (10 ms ticks).
func (p *Process) CPU() (time.Duration, error) {
	pid := p.cmd.Process.Pid
	tasks, err := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/schedstat", pid))
	if err == nil && len(tasks) > 0 {
		var sum time.Duration
		for _, t := range tasks {
			b, err := os.ReadFile(t)
			if err != nil {
				continue // the thread ended meanwhile
			}
			f := strings.Fields(string(b))
			if len(f) == 0 {
				return 0, fmt.Errorf("malformed %s", t)
			}
			ns, err := strconv.ParseInt(f[0], 10, 64)
			if err != nil {
				return 0, fmt.Errorf("%s: %w", t, err)
			}
			sum += time.Duration(ns)
		}
		return sum, nil
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// The fields after the command name (which may hold spaces) start
	// with the state; utime and stime are fields 14 and 15.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, errors.New("malformed /proc stat")
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		return 0, errors.New("malformed /proc stat")
	}
	utime, err1 := strconv.ParseUint(f[11], 10, 64)
	stime, err2 := strconv.ParseUint(f[12], 10, 64)
	if err := errors.Join(err1, err2); err != nil {
		return 0, err
	}
	return time.Duration(utime+stime) * time.Second / clockTicks, nil
}

// clockTicks is USER_HZ, the unit of /proc's CPU times: 100 on every
// Linux architecture Go supports.
const clockTicks = 100

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
