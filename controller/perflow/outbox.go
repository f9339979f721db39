package perflow

import (
	"time"

	"github.com/ctguard/ctguard/controller/flows"
	"github.com/ctguard/ctguard/controller/selector"
	"golang.org/x/sys/unix"
)

// outbox collects flags-only updates and sends them together, in one
// Conn.Apply: the engine's only per-flow memory, a fixed window of
// flows.MaxBatch updates (about 120 bytes each, with their note) between
// the decision and the kernel's answer.
type outbox struct {
	conn  Conn
	ups   []flows.Update
	notes []note
	// done handles each update's answer, in order, at flush.
	done func(u *flows.Update, n *note)
	// failed receives a flush's socket error (optional).
	failed func(err error)
}

// note is what the engine needs to account for an update's answer.
type note struct {
	gen   *generation
	pols  selector.Mask // counted as Flagged, Gone or Failed (0: a clear)
	since time.Time     // when the triggering event was read (zero: no latency)
}

func newOutbox(conn Conn, done func(*flows.Update, *note)) *outbox {
	return &outbox{
		conn:  conn,
		ups:   make([]flows.Update, 0, flows.MaxBatch),
		notes: make([]note, 0, flows.MaxBatch),
		done:  done,
	}
}

// add queues an update of f's entry, flushing first when the window is full.
func (o *outbox) add(f *flows.Flow, dirs flows.Directions, set bool, mark flows.MarkBit, n note) {
	if len(o.ups) == cap(o.ups) {
		o.flush()
	}
	o.ups = append(o.ups, flows.Update{Key: f.Key(), Dirs: dirs, Set: set, Mark: mark})
	o.notes = append(o.notes, n)
}

// flush sends the queued updates and hands each answer to done.
func (o *outbox) flush() {
	if len(o.ups) == 0 {
		return
	}
	if err := o.conn.Apply(o.ups); err != nil && o.failed != nil {
		o.failed(err)
	}
	for i := range o.ups {
		o.done(&o.ups[i], &o.notes[i])
	}
	o.ups, o.notes = o.ups[:0], o.notes[:0]
}

// tally counts the answers of a one-shot sweep.
type tally struct {
	applied, gone, failed int
	firstErr              unix.Errno
	sockErr               error
}

// oneShot returns an outbox whose answers a tally counts.
func oneShot(conn Conn) (*outbox, *tally) {
	t := &tally{}
	o := newOutbox(conn, func(u *flows.Update, _ *note) { t.add(u) })
	o.failed = func(err error) {
		if t.sockErr == nil {
			t.sockErr = err
		}
	}
	return o, t
}

// err returns the first failure, nil when every update applied or found
// its flow gone.
func (t *tally) err() error {
	switch {
	case t.sockErr != nil:
		return t.sockErr
	case t.firstErr != 0:
		return t.firstErr
	}
	return nil
}

func (t *tally) add(u *flows.Update) {
	switch u.Errno {
	case 0:
		t.applied++
	case unix.ENOENT:
		t.gone++
	default:
		t.failed++
		if t.firstErr == 0 {
			t.firstErr = u.Errno
		}
	}
}
