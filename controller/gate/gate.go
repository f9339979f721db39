// Package gate is ctguard's synchronous handshake gate. A gate rule (see
// controller/ruleset) queues the SYN-ACK of every flow a gated perFlow
// policy may select that does not carry ctguard's mark bit yet, on hook
// prerouting after conntrack and before NAT, with the queue's bypass flag.
// The gate reads each queued packet's headers (its entry's REPLY tuple),
// sets BE_LIBERAL and the mark bit on the entry with a flags-only ctnetlink
// update addressed by that reply tuple, and only then accepts the packet:
// the server cannot send data before the client has seen the SYN-ACK, so
// nothing from the server can beat the flag.
//
// Nothing is ever dropped: any error accepts the packet unflagged (and is
// counted); when ctguard is not listening the kernel bypasses the queue, and
// a full queue fails open. Packets are read in batches (one recvmmsg); the
// updates of a batch and the one batch verdict that accepts it go in a
// single write on the queue socket: the kernel handles a write's messages
// in order before the write returns, so every flag is set before its packet
// moves on. The updates ask for no ack: only a refusal comes back, read
// with the next packets. Under load the gate paces its reads (Config.Hold)
// so that one wake-up serves many SYN-ACKs. One goroutine does all the I/O,
// without allocating per packet, in raw system calls that never block (it
// waits in the runtime's poller, and holds in a raw nanosleep).
//
// Policies that scope by sources, destinations or ports (or several gated
// policies wanting different directions) need the entry's original tuple,
// which a queued packet does not carry on kernels without
// CONFIG_NETFILTER_NETLINK_GLUE_CT: the gate then reads the entry first
// (a ctnetlink GET by the reply tuple, pipelined the same way) and flags
// only what the policies select, in the directions they want that the entry
// lacks.
package gate

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"github.com/ctguard/ctguard/controller/flows"
	"github.com/ctguard/ctguard/controller/selector"
	"github.com/ctguard/ctguard/internal/nlwire"
	"github.com/ctguard/ctguard/policy"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// Defaults of Config.
const (
	DefaultMaxBatch = 64
	// DefaultHold is the hold ctguard run uses unless told otherwise
	// (--gate-hold): under load it cuts the gate's wake-ups several times
	// over for at most this much (plus the kernel's timer slack) on a
	// SYN-ACK.
	DefaultHold = 200 * time.Microsecond
	// copyRange is how much of each packet the kernel copies to the gate:
	// the network and TCP headers with room for IPv6 extension headers.
	copyRange = 128
	// queueMaxLen bounds the packets waiting in the kernel; beyond it
	// the queue fails open (accepts).
	queueMaxLen = 4096
	// ackTimeout bounds the wait for the kernel's answers to the GETs of
	// a batch; on expiry the batch is accepted unflagged.
	ackTimeout = time.Second
	slotSize   = 512
	socketBuf  = 4 << 20
)

// Counter names one of the gate's counters.
type Counter int

// The gate's counters. Every queued packet ends in exactly one of Flagged,
// AlreadyLiberal, NotSelected, Gone or Errors, and is accepted.
const (
	// Queued counts packets the gate received.
	Queued Counter = iota
	// Flagged counts entries the gate flagged: updates the kernel did
	// not refuse. Updates ask for no ack (a refusal comes back anyway,
	// queued on the socket before the write returns), so an update counts
	// once the gate has read the socket empty after it (a refusal lost in
	// a receive overflow, itself counted in ReceiveErrors, counts here).
	Flagged
	// AlreadyLiberal counts selected entries that already had the flag in
	// every wanted direction.
	AlreadyLiberal
	// NotSelected counts entries the rule queued that no policy selects
	// (a scoped policy's rule queues every flow of its NAT kinds).
	NotSelected
	// Gone counts entries that vanished before their update (ENOENT).
	Gone
	// Errors counts packets accepted unflagged because something failed
	// (a packet that did not parse, a refused update, a timeout).
	Errors
	// ReceiveErrors counts receive errors of the queue socket (ENOBUFS:
	// the kernel could not deliver packets and accepted them unflagged).
	ReceiveErrors
	numCounters
)

var counterNames = [numCounters]string{"queued", "flagged", "already_liberal", "not_selected", "gone", "errors", "receive_errors"}

// String returns the counter's snake_case name.
func (c Counter) String() string {
	if c < 0 || c >= numCounters {
		return "unknown"
	}
	return counterNames[c]
}

// Observer receives the gate's measurements as they happen (from its I/O
// goroutine: it must be fast and never block).
type Observer interface {
	// Count adds n to counter c.
	Count(c Counter, n int)
	// Batch reports a batch of packets handled and, per packet, the time
	// from reading it to its verdict being sent.
	Batch(packets int, latencies []time.Duration)
	// Hold reports a hold under load (Config.Hold) and how long it lasted:
	// the most a SYN-ACK that arrived during it waited for the gate.
	Hold(time.Duration)
}

// Config configures a Gate.
type Config struct {
	// NetNSFd is the network namespace (< 0: the caller's).
	NetNSFd int
	// Queue is the NFQUEUE number the gate rules use.
	Queue uint16
	// MarkBit is ctguard's ownership mark bit (flows.DefaultMarkBit when 0).
	MarkBit flows.MarkBit
	// MaxBatch bounds the packets handled together (DefaultMaxBatch when 0).
	MaxBatch int
	// Hold paces the gate under load (0: never). After a batch that shows
	// load (two packets or more, or one already queued when the gate came
	// back for it), the gate reads its queue again only Hold after that
	// wake-up, so what arrives meanwhile is handled in one batch: under
	// load at most one wake-up per Hold, and at most Hold (plus timer
	// slack) added to a SYN-ACK. After a lone packet the gate had to wait
	// for (the rule at low rates), or a full batch, it reads again at once.
	Hold time.Duration
	// Logger and Observer are optional.
	Logger   *slog.Logger
	Observer Observer
}

// Snapshot is a copy of the gate's counters.
type Snapshot struct {
	Queue          uint16 `json:"queue"`
	Queued         uint64 `json:"queued"`
	Flagged        uint64 `json:"flagged"`
	AlreadyLiberal uint64 `json:"alreadyLiberal"`
	NotSelected    uint64 `json:"notSelected"`
	Gone           uint64 `json:"gone"`
	Errors         uint64 `json:"errors"`
	ReceiveErrors  uint64 `json:"receiveErrors"`
}

// policies is the compiled set of gated policies.
type policies struct {
	sel *selector.Selector
	// fast: no policy needs the entry (no scoping, one set of
	// directions): every queued flow is flagged in dirs without a GET.
	fast bool
	dirs flows.Directions
}

// slot is one queued packet of a batch.
type slot struct {
	buf   [slotSize]byte
	id    uint32
	queue uint16
	t     Tuple
	at    time.Time
	dirs  flows.Directions // to set; 0: nothing to do
	done  bool             // the GET answered, or nothing to ask
	skip  bool             // failed and counted: accept unflagged
	entry flows.Flow       // the GET's answer
	found bool
	errno unix.Errno // the GET's error
}

// Gate is the handshake gate of one network namespace.
type Gate struct {
	cfg      Config
	log      *slog.Logger
	obs      Observer
	q, ct    *netlink.Conn // the queue (packets, updates, verdicts); the GETs
	qraw     syscall.RawConn
	ctraw    syscall.RawConn
	pols     atomic.Pointer[policies]
	counters [numCounters]atomic.Uint64

	// Run's state, touched only by the Run goroutine.
	slots     []slot
	w         writer
	seq       uint32
	rbuf      []byte // receive buffer of the current read
	rn        int
	rerr      error
	wbuf      []byte
	werr      error
	readWait  func(fd uintptr) bool
	readBatch func(fd uintptr) bool
	batch     *nlwire.Batch // the slots' buffers
	write     func(fd uintptr) bool
	latencies []time.Duration
	ctbuf     []byte
	unsettled int  // updates sent whose refusal, if any, is still unread
	waited    bool // the last read found the queue empty and waited
}

// Open binds the queue in the namespace: from now on the gate rules'
// packets come to this process (until Close, or its death, after which the
// kernel bypasses the queue). It fails when the kernel has no NFQUEUE or
// another process holds the queue.
func Open(cfg Config) (*Gate, error) {
	if cfg.MarkBit == 0 {
		cfg.MarkBit = flows.DefaultMarkBit
	}
	if cfg.MaxBatch <= 0 {
		cfg.MaxBatch = DefaultMaxBatch
	}
	g := &Gate{cfg: cfg, log: cfg.Logger, obs: cfg.Observer}
	if g.log == nil {
		g.log = slog.New(slog.DiscardHandler)
	}
	if g.obs == nil {
		g.obs = noObserver{}
	}
	g.slots = make([]slot, cfg.MaxBatch)
	g.latencies = make([]time.Duration, 0, cfg.MaxBatch)
	g.w.B = make([]byte, 0, cfg.MaxBatch*160)
	g.ctbuf = make([]byte, 64<<10)
	g.readWait = func(fd uintptr) bool {
		g.rn, g.rerr = nlwire.Recv(int(fd), g.rbuf, unix.MSG_TRUNC)
		return g.rerr != unix.EAGAIN
	}
	g.batch = nlwire.NewBatch(cfg.MaxBatch)
	for i := range g.slots {
		g.batch.Buffer(i, g.slots[i].buf[:])
	}
	g.readBatch = func(fd uintptr) bool {
		g.rn, g.rerr = g.batch.Recv(int(fd), len(g.slots), unix.MSG_TRUNC)
		if g.rerr == unix.EAGAIN {
			g.settle() // before waiting
			g.waited = true
			return false
		}
		return true
	}
	g.write = func(fd uintptr) bool {
		_, g.werr = nlwire.Write(int(fd), g.wbuf)
		return g.werr != unix.EAGAIN
	}
	g.pols.Store(&policies{sel: &selector.Selector{}})
	var err error
	if g.q, g.qraw, err = dial(cfg.NetNSFd); err != nil {
		return nil, fmt.Errorf("open the queue socket: %w", err)
	}
	if g.ct, g.ctraw, err = dial(cfg.NetNSFd); err != nil {
		g.q.Close()
		return nil, fmt.Errorf("open the ctnetlink socket: %w", err)
	}
	if err := g.bind(); err != nil {
		g.Close()
		return nil, fmt.Errorf("bind NFQUEUE %d: %w", cfg.Queue, err)
	}
	return g, nil
}

// dial opens a NETLINK_NETFILTER socket in the namespace with a large
// receive buffer and short error messages.
func dial(netnsFd int) (*netlink.Conn, syscall.RawConn, error) {
	cfg := &netlink.Config{}
	if netnsFd >= 0 {
		cfg.NetNS = netnsFd
	}
	nl, err := netlink.Dial(unix.NETLINK_NETFILTER, cfg)
	if err != nil {
		return nil, nil, err
	}
	raw, err := nl.SyscallConn()
	if err != nil {
		nl.Close()
		return nil, nil, err
	}
	_ = raw.Control(func(fd uintptr) {
		if unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, socketBuf) != nil {
			_ = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUF, socketBuf)
		}
		// An error carries only the failed request's header back, not the
		// whole request (best effort: old kernels lack it).
		_ = unix.SetsockoptInt(int(fd), unix.SOL_NETLINK, unix.NETLINK_CAP_ACK, 1)
	})
	return nl, raw, nil
}

// bind sends the queue configuration and waits for its ack.
func (g *Gate) bind() error {
	g.w.B = g.w.B[:0]
	g.seq++
	g.w.bind(g.seq, g.cfg.Queue, copyRange, queueMaxLen)
	g.wbuf = g.w.B
	if err := g.qraw.Write(g.write); err != nil {
		return err
	}
	if g.werr != nil {
		return g.werr
	}
	if err := g.q.SetReadDeadline(time.Now().Add(ackTimeout)); err != nil {
		return err
	}
	defer g.q.SetReadDeadline(time.Time{})
	for {
		g.rbuf = g.ctbuf
		if err := g.qraw.Read(g.readWait); err != nil {
			return err
		}
		if g.rerr != nil {
			return g.rerr
		}
		for b := g.rbuf[:min(g.rn, len(g.rbuf))]; ; {
			m, rest, ok := nlwire.Next(b)
			if !ok {
				break
			}
			b = rest
			if m.Type == unix.NLMSG_ERROR && m.Seq == g.seq {
				if e := nlwire.Errno(m.Data); e != 0 {
					return e
				}
				return nil
			}
		}
	}
}

// SetPolicies sets the gated policies (perFlow with handshake gate; the
// others are ignored). New packets use them at once.
func (g *Gate) SetPolicies(ps []policy.Policy) error {
	var gated []policy.Policy
	for _, p := range ps {
		if p.IsPerFlow() && p.Handshake() == policy.HandshakeGate {
			gated = append(gated, p)
		}
	}
	sel, err := selector.Compile(gated)
	if err != nil {
		return err
	}
	pl := &policies{sel: sel, fast: true}
	for i, p := range gated {
		m := p.Match()
		d := selector.FlowDirections(p.Directions())
		if len(m.Sources) > 0 || len(m.Destinations) > 0 || len(m.DestinationPorts) > 0 || (i > 0 && d != pl.dirs) {
			pl.fast = false
		}
		pl.dirs = d
	}
	g.pols.Store(pl)
	return nil
}

// Stats returns the gate's counters.
func (g *Gate) Stats() Snapshot {
	return Snapshot{
		Queue:          g.cfg.Queue,
		Queued:         g.counters[Queued].Load(),
		Flagged:        g.counters[Flagged].Load(),
		AlreadyLiberal: g.counters[AlreadyLiberal].Load(),
		NotSelected:    g.counters[NotSelected].Load(),
		Gone:           g.counters[Gone].Load(),
		Errors:         g.counters[Errors].Load(),
		ReceiveErrors:  g.counters[ReceiveErrors].Load(),
	}
}

// Close unbinds the queue (the kernel bypasses it from then on) and closes
// the sockets.
func (g *Gate) Close() error {
	return errors.Join(g.q.Close(), g.ct.Close())
}

func (g *Gate) count(c Counter, n int) {
	if n == 0 {
		return
	}
	g.counters[c].Add(uint64(n))
	g.obs.Count(c, n)
}

// Run handles queued packets until ctx ends (nil) or the queue socket
// fails. Only one Run may be active.
func (g *Gate) Run(ctx context.Context) error {
	stop := context.AfterFunc(ctx, func() { g.q.SetReadDeadline(time.Unix(1, 0)) })
	defer stop()
	for {
		n, err := g.read()
		if n > 0 {
			g.handle(g.slots[:n])
			g.pace(n)
		}
		switch {
		case err == nil:
		case ctx.Err() != nil:
			return nil
		case errors.Is(err, unix.ENOBUFS):
			// The kernel could not deliver packets: it accepted them
			// (fail open). Count and go on.
			g.count(ReceiveErrors, 1)
			g.log.Warn("the gate's queue overflowed: packets were accepted unflagged (the resync flags their flows)")
		default:
			return fmt.Errorf("read NFQUEUE %d: %w", g.cfg.Queue, err)
		}
	}
}

// pace waits, after a batch of n packets, as long as Config.Hold asks.
// The wait is a plain sleep: the packets that arrive meanwhile stay in the
// kernel's queue (which fails open when full) for the next read. The sleep
// is a raw system call: an accounted one wakes the runtime's monitor
// thread, which cost as many context switches as the hold saved. It keeps
// the goroutine's processor (P) meanwhile, so other goroutines and a
// garbage collection's stop-the-world may wait up to one hold (the flag
// --gate-hold caps it at 10 ms).
func (g *Gate) pace(n int) {
	if d := holdFor(g.cfg.Hold, n, len(g.slots), g.waited, time.Since(g.slots[0].at)); d > 0 {
		start := time.Now()
		ts := unix.NsecToTimespec(d.Nanoseconds())
		// A raw call, like the gate's reads and writes (see nlwire.Recv).
		unix.RawSyscall(unix.SYS_NANOSLEEP, uintptr(unsafe.Pointer(&ts)), 0, 0) // a signal only shortens the hold
		g.obs.Hold(time.Since(start))
	}
}

// holdFor returns how long to wait before the next read after a batch of
// n packets out of at most limit, handled in elapsed since the wake-up. The
// gate holds when the batch shows load: two packets or more, or one that
// was already queued when the gate came back for it (waited is false). A
// full batch is followed at once: more may be queued.
func holdFor(hold time.Duration, n, limit int, waited bool, elapsed time.Duration) time.Duration {
	if hold <= 0 || n == 0 || n >= limit || n == 1 && waited {
		return 0
	}
	return max(hold-elapsed, 0)
}

// read waits for a packet, then takes whatever else is queued, up to
// MaxBatch, in one system call (recvmmsg); it returns how many slots it
// filled with packets. The acks of earlier updates, read among them, are
// counted here.
func (g *Gate) read() (int, error) {
	g.waited = false
	if err := g.qraw.Read(g.readBatch); err != nil {
		return 0, err
	}
	if g.rerr != nil {
		return 0, g.rerr
	}
	n := 0
	for i := range g.rn {
		raw, s := g.batch.Len(i), &g.slots[i]
		truncated := raw > len(s.buf) // cannot happen with copyRange
		if truncated {
			// Keep the packet id (the first attribute) for the verdict.
			raw = len(s.buf)
			binary.NativeEndian.PutUint32(s.buf[:], uint32(raw))
		}
		m, _, ok := nlwire.Next(s.buf[:raw])
		if ok && m.Type == unix.NLMSG_ERROR {
			g.countAck(m.Data)
			continue
		}
		if !ok || m.Type != subsysQueue<<8|nfqnlMsgPacket {
			continue
		}
		id, payload, ok := packetInfo(m.Data)
		if !ok {
			continue
		}
		// Slot n takes the packet's fields (n <= i: its buffer is done).
		t, tok := replyTuple(payload)
		d := &g.slots[n]
		d.id, d.queue, d.at = id, m.ResID, time.Now()
		d.t, d.dirs, d.done, d.skip, d.entry, d.found, d.errno = t, 0, false, false, flows.Flow{}, false, 0
		if !tok || truncated {
			d.done, d.skip = true, true // accepted unflagged
			g.count(Errors, 1)
		}
		n++
	}
	if g.rn < len(g.slots) {
		g.settle()
	}
	return n, nil
}

// settle counts the updates sent so far as flagged, less those refused:
// the gate has read the queue socket empty, so every refusal (queued
// before its write returned) has been counted.
func (g *Gate) settle() {
	g.count(Flagged, g.unsettled)
	g.unsettled = 0
}

// handle flags the batch's flows and accepts its packets.
func (g *Gate) handle(batch []slot) {
	g.count(Queued, len(batch))
	pl := g.pols.Load()
	if pl.fast {
		for i := range batch {
			switch {
			case batch[i].done:
			case pl.dirs == 0: // no gated policy (yet): a rule of an older table
				g.count(NotSelected, 1)
			default:
				batch[i].dirs = pl.dirs
			}
		}
	} else {
		g.exchange(batch)
		for i := range batch {
			g.decide(&batch[i], pl)
		}
	}
	g.answer(batch)
}

// decide sets what to flag on a slot whose entry the GET returned.
func (g *Gate) decide(s *slot, pl *policies) {
	switch {
	case s.skip:
		return
	case s.errno == unix.ENOENT:
		g.count(Gone, 1)
		return
	case !s.found:
		g.count(Errors, 1)
		return
	}
	f := &s.entry
	r := pl.sel.Match(f)
	want := r.Dirs
	if f.HasFlags {
		want &^= f.Liberal()
	}
	switch {
	case r.Policies == 0:
		g.count(NotSelected, 1)
	case want == 0:
		g.count(AlreadyLiberal, 1)
	default:
		s.dirs = want
	}
}

// exchange sends, in one write, a GET for every slot that needs one, then
// reads the answers until each has one or the timeout passes. Answers are
// recorded in the slots.
func (g *Gate) exchange(batch []slot) {
	g.w.B = g.w.B[:0]
	base := g.seq + 1
	pending := 0
	for i := range batch {
		s := &batch[i]
		if s.done {
			continue
		}
		g.w.get(base+uint32(i), &s.t)
		pending++
	}
	g.seq = base + uint32(len(batch))
	if pending == 0 {
		return
	}
	g.wbuf = g.w.B
	err := g.ctraw.Write(g.write)
	if err == nil {
		err = g.werr
	}
	if err == nil {
		err = g.ct.SetReadDeadline(time.Now().Add(ackTimeout))
	}
	for err == nil && pending > 0 {
		g.rbuf = g.ctbuf
		if err = g.ctraw.Read(g.readWait); err != nil {
			break
		}
		if err = g.rerr; err != nil {
			break
		}
		for b := g.ctbuf[:min(g.rn, len(g.ctbuf))]; ; {
			m, rest, ok := nlwire.Next(b)
			if !ok {
				break
			}
			b = rest
			i := int(m.Seq - base)
			if m.Seq < base || i >= len(batch) || batch[i].done {
				continue
			}
			s := &batch[i]
			switch {
			case m.Type == unix.NLMSG_ERROR:
				s.done, s.errno = true, nlwire.Errno(m.Data)
				pending--
			case m.Type == subsysCtnetlink<<8|ipctnlMsgCtNew:
				s.found = flows.DecodeFlow(m.Data, &s.entry) && s.entry.Reply.Src.IsValid()
			}
		}
	}
	if err != nil {
		// Accept the rest unflagged; a timed-out answer may still come:
		// its sequence number is then stale and ignored.
		g.log.Warn("the gate's ctnetlink exchange failed; packets accepted unflagged", "err", err)
		for i := range batch {
			if !batch[i].done {
				batch[i].done, batch[i].skip, batch[i].dirs = true, true, 0
				g.count(Errors, 1)
			}
		}
	}
}

// countAck counts an ack the queue socket received (the data of an
// NLMSG_ERROR message, struct nlmsgerr: the error code, then the request's
// header, whose type follows its 4-byte length) when it answers one of the
// gate's updates: the update is settled.
func (g *Gate) countAck(data []byte) {
	const typeAt = 4 + 4
	if len(data) < 4+nlwire.MsgHdrLen ||
		binary.NativeEndian.Uint16(data[typeAt:]) != subsysCtnetlink<<8|ipctnlMsgCtNew {
		return // not an update's: the echoed request is another message
	}
	g.unsettled = max(g.unsettled-1, 0)
	switch nlwire.Errno(data) {
	case 0:
		g.count(Flagged, 1)
	case unix.ENOENT:
		g.count(Gone, 1)
	default:
		g.count(Errors, 1)
	}
}

// answer sets the flag and the mark bit on every slot's entry that needs
// it, addressed by the reply tuple, and accepts every packet of the batch,
// all in one write on the queue socket: the updates first, asking for no
// ack (the kernel answers a refusal all the same, counted by read), then
// the batch verdicts.
func (g *Gate) answer(batch []slot) {
	g.w.B = g.w.B[:0]
	updates := 0
	for i := range batch {
		s := &batch[i]
		if s.dirs == 0 || s.skip {
			continue
		}
		g.seq++
		u := flows.Update{Key: flows.Key{Orig: s.t}, ByReply: true, Dirs: s.dirs, Set: true, Mark: g.cfg.MarkBit}
		flows.AppendUpdate(&g.w.Writer, g.seq, unix.NLM_F_REQUEST, &u)
		updates++
	}
	g.w.verdicts(batch)
	g.wbuf = g.w.B
	err := g.qraw.Write(g.write)
	if err == nil {
		err = g.werr
	}
	now := time.Now()
	g.latencies = g.latencies[:0]
	for i := range batch {
		g.latencies = append(g.latencies, now.Sub(batch[i].at))
	}
	if err == nil {
		g.unsettled += updates
	} else {
		// Neither the updates nor the verdicts reached the kernel: the
		// packets wait there until the socket closes (then the kernel
		// accepts them). Nothing better to do than say so.
		g.log.Error("sending the gate's updates and verdicts failed", "err", err)
		g.count(Errors, len(batch))
	}
	g.obs.Batch(len(batch), g.latencies)
}

// verdicts appends the batch verdicts accepting every packet of batch: one
// per run of packets from one queue, with the run's highest id (the ids of
// a queue grow, and a batch verdict covers every id up to its own).
func (w *writer) verdicts(batch []slot) {
	var queue uint16
	var maxID uint32
	for i := range batch {
		if i > 0 && batch[i].queue != queue {
			w.acceptUpTo(queue, maxID)
			maxID = 0
		}
		queue, maxID = batch[i].queue, max(maxID, batch[i].id)
	}
	if len(batch) > 0 {
		w.acceptUpTo(queue, maxID)
	}
}

// noObserver is the Observer of a gate configured without one.
type noObserver struct{}

func (noObserver) Count(Counter, int)         {}
func (noObserver) Batch(int, []time.Duration) {}
func (noObserver) Hold(time.Duration)         {}
