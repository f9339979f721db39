// Package nslock keeps one ctguard per network namespace at a time, whatever
// its state directory: the lock is an abstract unix socket bound inside the
// namespace. The kernel scopes abstract socket names to the network
// namespace of the socket and frees the name when the socket closes, so the
// lock is released when its holder exits, kill -9 included, and needs no
// file anyone could leave behind.
//
// The holder listens on the name and tells whoever connects who it is (its
// role, pid and state directory); the kernel adds the holder's pid and uid
// (SO_PEERCRED). An abstract name has no permissions: any process in the
// namespace can bind it first. A holder that is not ctguard is named with
// its pid and uid, so the operator can find it.
package nslock

import (
	"bufio"
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/ctguard/ctguard/internal/netns"
	"golang.org/x/sys/unix"
)

// Name is the abstract socket name of the lock.
const Name = "@ctguard/controller"

// RoleRun is the role of the long-running controller; other roles are
// one-shot commands ("apply", "rollback") that hold the lock briefly.
const RoleRun = "run"

// Errors a HeldError matches.
var (
	// ErrControllerRunning: a "ctguard run" manages the namespace.
	ErrControllerRunning = errors.New(`"ctguard run" manages this network namespace`)
	// ErrBusy: a one-shot ctguard command, or something that is not
	// ctguard, held the lock for longer than the wait.
	ErrBusy = errors.New("another process holds ctguard's network namespace lock")
)

// Holder describes the process holding the lock.
type Holder struct {
	// Role is RoleRun, a one-shot command's name, or "" when the holder
	// did not say (it is not ctguard).
	Role string
	// PID is the holder's pid as this process sees it (0: unknown, e.g.
	// in another pid namespace); UID its user id (-1: unknown).
	PID, UID int
	// StateDir is the holder's --state-dir.
	StateDir string
}

// String names the holder for a message.
func (h Holder) String() string {
	var who string
	switch h.Role {
	case "":
		who = "a process that is not ctguard"
	case RoleRun:
		who = `"ctguard run"`
	default:
		who = fmt.Sprintf("a one-shot \"ctguard %s\"", h.Role)
	}
	var details []string
	if h.PID > 0 {
		details = append(details, "pid "+strconv.Itoa(h.PID))
	}
	if h.Role == "" && h.UID >= 0 {
		details = append(details, "uid "+strconv.Itoa(h.UID))
	}
	if h.StateDir != "" {
		details = append(details, "state dir "+h.StateDir)
	}
	if len(details) > 0 {
		who += " (" + strings.Join(details, ", ") + ")"
	}
	return who
}

// HeldError is returned by Acquire when another process holds the lock.
type HeldError struct {
	Holder Holder
	// Waited is how long Acquire waited for a one-shot holder.
	Waited time.Duration
}

// Error implements error.
func (e *HeldError) Error() string {
	if e.Holder.Role == RoleRun {
		return fmt.Sprintf("%s manages this network namespace", e.Holder)
	}
	if e.Holder.Role == "" {
		return fmt.Sprintf("%s holds ctguard's lock name %s in this network namespace (abstract unix socket; see ss -xlp)", e.Holder, Name)
	}
	return fmt.Sprintf("%s has held this network namespace for %s; try again when it is done", e.Holder, e.Waited.Round(time.Second))
}

// Is matches ErrControllerRunning for a controller holder, else ErrBusy.
func (e *HeldError) Is(target error) bool {
	if e.Holder.Role == RoleRun {
		return target == ErrControllerRunning
	}
	return target == ErrBusy
}

// Locker takes the lock of one network namespace.
type Locker struct {
	netnsFd  int
	stateDir string
}

// New returns a Locker for the namespace open as netnsFd (< 0: the
// current one); stateDir is told to whoever asks who holds the lock.
func New(netnsFd int, stateDir string) *Locker {
	return &Locker{netnsFd: netnsFd, stateDir: stateDir}
}

// pollInterval is how often Acquire retries while a one-shot command holds
// the lock.
const pollInterval = 50 * time.Millisecond

// Acquire takes the lock for role. While a one-shot command holds it,
// Acquire waits up to wait; a controller holding it, or a holder that is
// not ctguard, gives a *HeldError at once. Call release once done; calling
// it again does nothing.
func (l *Locker) Acquire(role string, wait time.Duration) (release func(), err error) {
	start := time.Now()
	for {
		ln, err := l.listen()
		if err == nil {
			go l.serve(ln, role)
			var once sync.Once
			return func() { once.Do(func() { ln.Close() }) }, nil
		}
		if !errors.Is(err, unix.EADDRINUSE) {
			return nil, fmt.Errorf("network namespace lock: %w", err)
		}
		h, err := l.Query()
		if errors.Is(err, unix.ECONNREFUSED) {
			continue // released meanwhile
		}
		if err != nil {
			return nil, fmt.Errorf("network namespace lock: who holds it: %w", err)
		}
		if h.Role == RoleRun || h.Role == "" || time.Since(start) >= wait {
			return nil, &HeldError{Holder: h, Waited: time.Since(start)}
		}
		time.Sleep(pollInterval)
	}
}

// listen binds the lock name inside the namespace.
func (l *Locker) listen() (*net.UnixListener, error) {
	var ln *net.UnixListener
	err := l.inNetNS(func() error {
		var err error
		ln, err = net.ListenUnix("unix", &net.UnixAddr{Name: Name, Net: "unix"})
		return err
	})
	return ln, err
}

// serve tells every client who holds the lock, until ln is closed.
func (l *Locker) serve(ln *net.UnixListener, role string) {
	line := fmt.Sprintf("ctguard %s pid=%d state-dir=%s\n", role, os.Getpid(), l.stateDir)
	for {
		c, err := ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
		_ = c.SetWriteDeadline(time.Now().Add(time.Second))
		_, _ = c.Write([]byte(line))
		c.Close()
	}
}

// queryTimeout bounds how long Query waits for the holder to say who it is.
const queryTimeout = time.Second

// Query returns who holds the lock; an error matching unix.ECONNREFUSED
// means nobody.
func (l *Locker) Query() (Holder, error) {
	var c *net.UnixConn
	err := l.inNetNS(func() error {
		var err error
		c, err = net.DialUnix("unix", nil, &net.UnixAddr{Name: Name, Net: "unix"})
		return err
	})
	if err != nil {
		return Holder{}, err
	}
	defer c.Close()
	h := Holder{UID: -1}
	if raw, err := c.SyscallConn(); err == nil {
		_ = raw.Control(func(fd uintptr) {
			if cred, err := unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED); err == nil {
				h.PID, h.UID = int(cred.Pid), int(cred.Uid)
			}
		})
	}
	_ = c.SetReadDeadline(time.Now().Add(queryTimeout))
	line, _ := bufio.NewReader(&limited{c, 512}).ReadString('\n')
	parseHello(strings.TrimSpace(line), &h)
	return h, nil
}

// parseHello reads "ctguard ROLE pid=N state-dir=DIR" into h; anything
// else leaves the role empty (not ctguard).
func parseHello(line string, h *Holder) {
	fields := strings.Fields(line)
	if len(fields) < 2 || fields[0] != "ctguard" {
		return
	}
	h.Role = fields[1]
	for _, f := range fields[2:] {
		k, v, _ := strings.Cut(f, "=")
		switch k {
		case "pid":
			if n, err := strconv.Atoi(v); err == nil && h.PID <= 0 {
				h.PID = n // the kernel's view is unknown (another pid namespace)
			}
		case "state-dir":
			h.StateDir = v
		}
	}
}

// limited reads at most n bytes from a connection.
type limited struct {
	c net.Conn
	n int
}

func (r *limited) Read(p []byte) (int, error) {
	if r.n <= 0 {
		return 0, errors.New("holder says too much")
	}
	if len(p) > r.n {
		p = p[:r.n]
	}
	n, err := r.c.Read(p)
	r.n -= n
	return n, err
}

// inNetNS runs fn on a locked OS thread switched into the namespace (or
// directly for the current one), so the sockets fn creates live there.
func (l *Locker) inNetNS(fn func() error) error { return netns.Do(l.netnsFd, fn) }
