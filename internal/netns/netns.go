// Package netns runs code inside a network namespace and names and
// identifies namespaces: the one place ctguard switches a thread's
// namespace.
//
// A thread's network namespace is per OS thread (setns(2)), not per
// goroutine: Do locks a fresh goroutine to its thread, switches it in, runs
// the function and switches it back before unlocking it. A thread that
// cannot be switched back is never unlocked, so the Go runtime discards it
// with its goroutine and no other goroutine ever runs in the wrong
// namespace. Sockets the function creates stay in the namespace after Do
// returns; processes it starts inherit it.
package netns

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"

	"github.com/vishvananda/netns"
)

// ErrExited is returned by Do when fn ended its goroutine without
// returning (runtime.Goexit, e.g. a test's t.FailNow inside fn).
var ErrExited = errors.New("netns: the function exited its goroutine (runtime.Goexit) instead of returning")

// Do runs fn on a fresh goroutine whose locked OS thread is switched into
// the namespace open as fd, and switches the thread back afterwards. With
// fd < 0 it runs fn directly, in the caller's namespace.
func Do(fd int, fn func() error) error {
	if fd < 0 {
		return fn()
	}
	return onThread(func() error { return netns.Set(netns.NsHandle(fd)) }, fn)
}

// onThread runs enter and then fn on a fresh locked OS thread, and always
// tries to switch the thread back to its original namespace.
func onThread(enter, fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("get current netns: %w", err)
			return
		}
		returned := false
		var fnErr error
		// Deferred so that it also runs when fn calls runtime.Goexit.
		defer func() {
			defer orig.Close()
			if !returned {
				fnErr = ErrExited
			}
			if rerr := netns.Set(orig); rerr != nil {
				// Still locked: the runtime discards the thread.
				errc <- errors.Join(fnErr, fmt.Errorf("restore thread netns: %w", rerr))
				return
			}
			runtime.UnlockOSThread()
			errc <- fnErr
		}()
		if err := enter(); err != nil {
			fnErr, returned = fmt.Errorf("enter netns: %w", err), true
			return
		}
		if fn != nil {
			fnErr = fn()
		}
		returned = true
	}()
	return <-errc
}

// NS is a named network namespace (visible to "ip netns list") and an open
// handle on it.
type NS struct {
	Name   string
	Handle netns.NsHandle
}

// Fd returns the namespace's file descriptor, for netlink sockets opened with
// an explicit namespace (netlink.Config{NetNS: fd}, nftables.WithNetNSFd).
func (n NS) Fd() int { return int(n.Handle) }

// Do runs fn on a locked OS thread switched into the namespace (see Do).
func (n NS) Do(fn func() error) error { return Do(n.Fd(), fn) }

// NewNamed creates a named network namespace without leaving any thread
// inside it.
func NewNamed(name string) (NS, error) {
	h := netns.None()
	err := onThread(func() error {
		var err error
		h, err = netns.NewNamed(name)
		return err
	}, nil)
	if err != nil {
		if h.IsOpen() {
			h.Close()
		}
		return NS{}, fmt.Errorf("create netns %s: %w", name, err)
	}
	return NS{Name: name, Handle: h}, nil
}

// Delete closes the handle and deletes the namespace's name; the kernel
// frees the namespace when nothing else holds it.
func (n NS) Delete() error {
	n.Handle.Close()
	if err := netns.DeleteNamed(n.Name); err != nil {
		return fmt.Errorf("delete netns %s: %w", n.Name, err)
	}
	return nil
}

// maxName bounds a generated name: short enough for "ip netns" and for the
// suffixes callers add.
const maxName = 32

// UniqueName returns prefix followed by 8 random hex digits, cut to 32
// characters.
func UniqueName(prefix string) (string, error) {
	b := make([]byte, 4)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("netns name: %w", err)
	}
	name := prefix + hex.EncodeToString(b)
	if len(name) > maxName {
		name = name[:maxName]
	}
	return name, nil
}

// Current returns the identity of the process's network namespace, e.g.
// "net:[4026531840]" (its nsfs inode: unique within one boot).
func Current() (string, error) { return identity("/proc/self/ns/net") }

// IdentityOf returns the identity of the network namespace open as fd, or
// of the process's namespace when fd < 0.
func IdentityOf(fd int) (string, error) {
	if fd < 0 {
		return Current()
	}
	return identity("/proc/self/fd/" + strconv.Itoa(fd))
}

// identity reads the nsfs link at path and checks that it names a network
// namespace.
func identity(path string) (string, error) {
	id, err := os.Readlink(path)
	if err != nil {
		return "", fmt.Errorf("network namespace identity: %w", err)
	}
	if !strings.HasPrefix(id, "net:[") {
		return "", fmt.Errorf("network namespace identity: %s is %q, not a network namespace", path, id)
	}
	return id, nil
}
