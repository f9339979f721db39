package perflow

import (
	"context"
	"errors"
	"maps"
	"slices"
	"sync"

	"github.com/ctguard/ctguard/controller/flows"
	"golang.org/x/sys/unix"
)

// fakeConn is an in-memory conntrack table. Apply changes it like the
// kernel does and, when a subscription is open, echo an
// UPDATE event, as the kernel does.
type fakeConn struct {
	mu        sync.Mutex
	table     map[flows.Key]flows.Flow
	calls     []string // "subscribe", "dump", "set <flow> <dirs>", "clear <flow> <dirs>"
	setErr    error    // refuses every set when set
	src       *fakeSource
	dumpFails int // how many Dumps fail before they work again
	// subscribeFails is how many Subscribes fail before they work again.
	subscribeFails int
}

func newFakeConn(fs ...flows.Flow) *fakeConn {
	c := &fakeConn{table: map[flows.Key]flows.Flow{}}
	for _, f := range fs {
		c.table[f.Key()] = f
	}
	return c
}

func (c *fakeConn) Subscribe(int) (EventSource, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.calls = append(c.calls, "subscribe")
	if c.subscribeFails > 0 {
		c.subscribeFails--
		return nil, errRefused
	}
	c.src = &fakeSource{ch: make(chan fakeBatch, 1024), done: make(chan struct{})}
	return c.src, nil
}

// DumpFunc calls fn on a snapshot of the table, in source port order, with
// the lock released (fn calls the other methods, as on the kernel).
func (c *fakeConn) DumpFunc(ctx context.Context, fn func(*flows.Flow) error) error {
	c.mu.Lock()
	c.calls = append(c.calls, "dump")
	if c.dumpFails > 0 {
		c.dumpFails--
		c.mu.Unlock()
		return errRefused
	}
	fs := slices.SortedFunc(maps.Values(c.table), func(a, b flows.Flow) int {
		return int(a.Orig.SrcPort) - int(b.Orig.SrcPort)
	})
	c.mu.Unlock()
	for i := range fs {
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := fn(&fs[i]); err != nil {
			return err
		}
	}
	return nil
}

// DumpMark is DumpFunc over the flows whose mark matches.
func (c *fakeConn) DumpMark(ctx context.Context, value, mask uint32, fn func(*flows.Flow) error) error {
	return c.DumpFunc(ctx, func(f *flows.Flow) error {
		if f.Mark&mask != value {
			return nil
		}
		return fn(f)
	})
}

// Apply applies each update as the kernel would, in order.
func (c *fakeConn) Apply(ups []flows.Update) error {
	for i := range ups {
		u := &ups[i]
		f := flows.Flow{Proto: flows.ProtoTCP, Orig: u.Key.Orig, Zone: u.Key.Zone}
		switch err := c.change(&f, u.Dirs, u.Mark, u.Set); {
		case err == nil:
			u.Errno = 0
		case errors.Is(err, flows.ErrFlowGone):
			u.Errno = unix.ENOENT
		default:
			u.Errno = unix.EPERM
		}
	}
	return nil
}

func (c *fakeConn) change(f *flows.Flow, dirs flows.Directions, mark flows.MarkBit, set bool) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	verb := "clear "
	if set {
		verb = "set "
	}
	c.calls = append(c.calls, verb+f.String()+" "+dirs.String())
	if set && c.setErr != nil {
		return c.setErr
	}
	cur, ok := c.table[f.Key()]
	if !ok {
		return flows.ErrFlowGone
	}
	for _, d := range []struct {
		dir   flows.Directions
		flags *uint8
	}{{flows.Original, &cur.OrigFlags}, {flows.Reply, &cur.ReplyFlags}} {
		if dirs.Has(d.dir) {
			*d.flags &^= flows.BeLiberal
			if set {
				*d.flags |= flows.BeLiberal
			}
		}
	}
	cur.Mark &^= uint32(mark)
	if set {
		cur.Mark |= uint32(mark)
	}
	c.table[f.Key()] = cur
	if c.src != nil {
		c.src.ch <- fakeBatch{evs: []flows.Event{{Type: flows.EventUpdate, Flow: cur}}}
	}
	return nil
}

// put adds or replaces a flow in the table without any event.
func (c *fakeConn) put(f flows.Flow) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.table[f.Key()] = f
}

func (c *fakeConn) get(k flows.Key) *flows.Flow {
	c.mu.Lock()
	defer c.mu.Unlock()
	f := c.table[k]
	return &f
}

func (c *fakeConn) callLog() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.calls)
}

type fakeBatch struct {
	evs []flows.Event
	err error
}

// fakeSource delivers the batches sent on ch, one per Receive.
type fakeSource struct {
	ch   chan fakeBatch
	done chan struct{}
	once sync.Once
}

func (s *fakeSource) Receive(dst []flows.Event) ([]flows.Event, error) {
	select {
	case b := <-s.ch:
		return append(dst[:0], b.evs...), b.err
	case <-s.done:
		return dst[:0], flows.ErrClosed
	}
}

func (s *fakeSource) Close() error {
	s.once.Do(func() { close(s.done) })
	return nil
}

var errRefused = errors.New("refused")

// source returns the current event source.
func (c *fakeConn) source() *fakeSource {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.src
}

// send delivers a batch on the current event source.
func (c *fakeConn) send(b fakeBatch) { c.source().ch <- b }

// remove deletes a flow from the table without any event.
func (c *fakeConn) remove(k flows.Key) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.table, k)
}
