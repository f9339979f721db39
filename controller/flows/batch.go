package flows

import (
	"errors"
	"fmt"
	"sync"
	"syscall"
	"time"

	"github.com/ctguard/ctguard/internal/nlwire"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// Update is one flags-only update of a batch (see Updater.Apply): BE_LIBERAL
// set (Set) or cleared in Dirs, and the ownership mark bit Mark set or
// cleared with it (none when 0), as SetLiberal and ClearLiberal do.
type Update struct {
	// Key addresses the entry: its original tuple and zone, or with
	// ByReply its reply tuple (Key.Orig then holds the reply tuple), as a
	// queued SYN-ACK's headers give it.
	Key     Key
	ByReply bool
	Dirs    Directions
	Set     bool
	Mark    MarkBit
	// Errno is the kernel's answer, filled in by Apply: 0 when the update
	// applied, ENOENT when the entry was gone.
	Errno unix.Errno
}

// MaxBatch is the most updates Apply sends in one write; a longer slice
// goes in several. At about 130 bytes an update it stays well below the
// socket's send limit, and the acks of a write fit the receive buffer.
const MaxBatch = 256

const (
	updaterBuf  = 4 << 20
	updaterWait = 5 * time.Second
)

// Updater sends flags-only updates in batches on a netlink socket of its
// own: many messages per write, only the last one asking for an ack (the
// kernel acks a failed update anyway, and handles a write's messages in
// order before the write returns), and the answers read in bulk. It is
// safe for concurrent use (Apply calls are serialized) and allocates
// nothing per update.
type Updater struct {
	mu   sync.Mutex
	nl   *netlink.Conn
	raw  syscall.RawConn
	w    nlwire.Writer
	rbuf []byte
	seq  uint32

	// read/write state for the raw callbacks, set up once.
	rn       int
	rerr     error
	werr     error
	readWait func(fd uintptr) bool
	write    func(fd uintptr) bool
}

// NewUpdater opens an Updater in the network namespace netnsFd refers to
// (< 0: the calling thread's).
func NewUpdater(netnsFd int) (*Updater, error) {
	nl, err := netlink.Dial(unix.NETLINK_NETFILTER, nlConfig(netnsFd))
	if err != nil {
		return nil, fmt.Errorf("open ctnetlink update socket: %w", err)
	}
	raw, err := nl.SyscallConn()
	if err != nil {
		nl.Close()
		return nil, fmt.Errorf("ctnetlink update socket: %w", err)
	}
	_ = raw.Control(func(fd uintptr) {
		if unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, updaterBuf) != nil {
			_ = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUF, updaterBuf)
		}
		// Errors then carry only the failed message's header, not the
		// whole message back (best effort: old kernels lack it).
		_ = unix.SetsockoptInt(int(fd), unix.SOL_NETLINK, unix.NETLINK_CAP_ACK, 1)
	})
	u := &Updater{nl: nl, raw: raw, rbuf: make([]byte, 64<<10), w: nlwire.Writer{B: make([]byte, 0, MaxBatch*160)}}
	u.readWait = func(fd uintptr) bool {
		u.rn, u.rerr = nlwire.Recv(int(fd), u.rbuf, 0)
		return u.rerr != unix.EAGAIN
	}
	u.write = func(fd uintptr) bool {
		_, u.werr = nlwire.Write(int(fd), u.w.B)
		return u.werr != unix.EAGAIN
	}
	return u, nil
}

// Close closes the Updater's socket.
func (u *Updater) Close() error { return u.nl.Close() }

// Apply sends every update of ups, MaxBatch per write, and fills in each
// one's Errno. It fails only when the socket does (a send or receive error,
// or no answer within 5 seconds); the Errno of the updates whose answer
// did not come is then EIO.
func (u *Updater) Apply(ups []Update) error {
	u.mu.Lock()
	defer u.mu.Unlock()
	var errs error
	for len(ups) > 0 {
		n := min(len(ups), MaxBatch)
		if err := u.apply(ups[:n]); err != nil {
			errs = errors.Join(errs, err)
		}
		ups = ups[n:]
	}
	return errs
}

func (u *Updater) apply(ups []Update) error {
	u.w.B = u.w.B[:0]
	base := u.seq + 1
	for i := range ups {
		flags := uint16(unix.NLM_F_REQUEST)
		if i == len(ups)-1 {
			flags |= unix.NLM_F_ACK
		}
		ups[i].Errno = 0
		AppendUpdate(&u.w, base+uint32(i), flags, &ups[i])
	}
	last := base + uint32(len(ups)) - 1
	u.seq = last
	err := u.raw.Write(u.write)
	if err == nil {
		err = u.werr
	}
	if err == nil {
		err = u.nl.SetReadDeadline(time.Now().Add(updaterWait))
	}
	for done := false; err == nil && !done; {
		if err = u.raw.Read(u.readWait); err == nil {
			err = u.rerr
		}
		if err != nil {
			break
		}
		for b := u.rbuf[:min(u.rn, len(u.rbuf))]; ; {
			m, rest, ok := nlwire.Next(b)
			if !ok {
				break
			}
			b = rest
			if m.Type != unix.NLMSG_ERROR || m.Seq < base || m.Seq > last {
				continue // stale (a batch that timed out) or unexpected
			}
			ups[m.Seq-base].Errno = nlwire.Errno(m.Data)
			if m.Seq == last {
				done = true
			}
		}
	}
	if err != nil {
		for i := range ups {
			if ups[i].Errno == 0 {
				ups[i].Errno = unix.EIO
			}
		}
		return fmt.Errorf("batched conntrack updates: %w", err)
	}
	return nil
}
