package topo

import (
	"errors"
	"fmt"
	"runtime"

	"github.com/vishvananda/netns"
)

// Namespace is one of the lab's named network namespaces (visible to
// "ip netns list" while the topology lives).
type Namespace struct {
	Name   string
	Handle netns.NsHandle
}

// Fd returns the namespace's file descriptor, for netlink sockets opened with
// an explicit namespace (netlink.Config{NetNS: fd}, nftables.WithNetNSFd).
func (n Namespace) Fd() int { return int(n.Handle) }

// Do runs fn on a locked OS thread switched into the namespace: sockets fn
// creates and processes it starts (children inherit the thread's network
// namespace) belong to the namespace. The thread is switched back
// afterwards; if that fails it is discarded, never reused.
func (n Namespace) Do(fn func() error) error {
	return onNamespaceThread(func() error { return netns.Set(n.Handle) }, fn)
}

// onNamespaceThread runs enter and then fn on a fresh locked OS thread and
// always switches the thread back to its original namespace. A goroutine
// that exits while still locked takes its thread with it, which is how a
// thread that could not be restored is thrown away.
func onNamespaceThread(enter, fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("get current netns: %w", err)
			return
		}
		defer orig.Close()
		err = enter()
		if err == nil && fn != nil {
			err = fn()
		}
		if rerr := netns.Set(orig); rerr != nil {
			errc <- errors.Join(err, fmt.Errorf("restore thread netns: %w", rerr))
			return // still locked: the runtime discards the thread
		}
		runtime.UnlockOSThread()
		errc <- err
	}()
	return <-errc
}

// newNamespace creates a named network namespace without leaving any thread
// inside it.
func newNamespace(name string) (Namespace, error) {
	h := netns.None()
	err := onNamespaceThread(func() error {
		var err error
		h, err = netns.NewNamed(name)
		return err
	}, nil)
	if err != nil {
		if h.IsOpen() {
			h.Close()
		}
		return Namespace{}, fmt.Errorf("create netns %s: %w", name, err)
	}
	return Namespace{Name: name, Handle: h}, nil
}

// remove closes the handle and deletes the namespace's name; the kernel
// frees the namespace when nothing else holds it.
func (n Namespace) remove() error {
	n.Handle.Close()
	if err := netns.DeleteNamed(n.Name); err != nil {
		return fmt.Errorf("delete netns %s: %w", n.Name, err)
	}
	return nil
}
