// Package detect runs the incident detector: it reads the evidence rules'
// nfnetlink_log group (package evidence), pairs and enriches the packets
// into incidents (package incident) with the flow's conntrack entry, and
// hands each incident to a callback. "ctguard detect" prints them; "ctguard
// run" keeps them in a ring and counts them.
package detect

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"os"
	"sync"

	"github.com/ctguard/ctguard/controller/evidence"
	"github.com/ctguard/ctguard/controller/flows"
	"github.com/ctguard/ctguard/controller/incident"
	"github.com/ctguard/ctguard/controller/ruleset"
	"github.com/ctguard/ctguard/policy"
)

// DefaultBuffer is the log socket's receive buffer: room for thousands of
// header-sized messages, far more than the evidence rules' limit lets
// through in a second.
const DefaultBuffer = 4 << 20

// Config configures a Watcher.
type Config struct {
	// NetNSFd is the network namespace to read in (< 0: the caller's).
	// Conn must be of the same namespace.
	NetNSFd int
	// Group is the evidence rules' nfnetlink_log group.
	Group uint16
	// Conn looks up conntrack entries and the invalid statistic; the
	// caller owns it.
	Conn *flows.Conn
	// Policies judge which policies cover an incident.
	Policies []policy.Policy
	// OnIncident receives each incident, on the Watcher's goroutine.
	OnIncident func(incident.Incident)
	// Buffer is the receive buffer (DefaultBuffer when 0).
	Buffer int
	Logger *slog.Logger
}

// Stats are the Watcher's counters.
type Stats struct {
	// Logged counts the packets received from the group; Lost the
	// messages the kernel could not deliver (sequence gaps); Overruns the
	// receive buffer overruns.
	Logged, Lost, Overruns uint64
	// Incidents counts incidents; Unpaired invalid segments no reset
	// followed (mitigated, ignored), those still waiting included;
	// Evicted those pushed out by the bound;
	// Repeats further resets of a connection already reported.
	Incidents, Unpaired, Evicted, Repeats uint64
	// LookupErrors counts failed conntrack lookups (other than no entry).
	LookupErrors uint64
}

// Watcher reads one group in the caller's network namespace.
type Watcher struct {
	cfg Config
	r   *evidence.Reader

	mu        sync.Mutex
	det       *incident.Detector
	incidents uint64
}

// Open binds the group (evidence.ErrGroupBusy when another process has).
// Bind before writing rules that log to it, so nothing logged is missed.
func Open(cfg Config) (*Watcher, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Buffer == 0 {
		cfg.Buffer = DefaultBuffer
	}
	det, err := incident.NewDetector(kernelSource{conn: cfg.Conn, local: cfg.NetNSFd < 0}, cfg.Policies)
	if err != nil {
		return nil, err
	}
	r, err := evidence.Open(cfg.NetNSFd, cfg.Group, ruleset.EvidenceSnaplen, cfg.Buffer)
	if err != nil {
		return nil, err
	}
	return &Watcher{cfg: cfg, r: r, det: det}, nil
}

// SetPolicies replaces the policies coverage is judged against.
func (w *Watcher) SetPolicies(ps []policy.Policy) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.det.SetPolicies(ps)
}

// Run reads until ctx ends (nil) or the socket fails, then closes it.
func (w *Watcher) Run(ctx context.Context) error {
	stop := context.AfterFunc(ctx, func() { w.r.Close() })
	defer stop()
	defer w.r.Close()
	var buf []evidence.Packet
	lost := uint64(0)
	for {
		var err error
		buf, err = w.r.Receive(buf[:0])
		if errors.Is(err, os.ErrClosed) || ctx.Err() != nil {
			return nil
		}
		if err != nil {
			return err
		}
		if st := w.r.Stats(); st.Lost+st.Overruns > lost {
			lost = st.Lost + st.Overruns
			w.cfg.Logger.Warn("evidence log messages lost: incidents may be missing", "lost", st.Lost, "overruns", st.Overruns)
		}
		for _, p := range buf {
			w.mu.Lock()
			inc, ok := w.det.Handle(p)
			if ok {
				w.incidents++
			}
			w.mu.Unlock()
			if ok && w.cfg.OnIncident != nil {
				w.cfg.OnIncident(inc)
			}
		}
	}
}

// Stats returns the counters so far.
func (w *Watcher) Stats() Stats {
	rs := w.r.Stats()
	w.mu.Lock()
	defer w.mu.Unlock()
	c := w.det.Correlator()
	return Stats{Logged: rs.Received, Lost: rs.Lost, Overruns: rs.Overruns,
		Incidents: w.incidents, Unpaired: c.Unpaired + uint64(c.Pending()), Evicted: c.Evicted, Repeats: c.Repeats, LookupErrors: w.det.LookupErrors}
}

// kernelSource is incident.Source over ctnetlink and, when local, the
// interface table of the caller's namespace (interface names are unknown
// in another namespace).
type kernelSource struct {
	conn  *flows.Conn
	local bool
}

func (k kernelSource) LookupReply(t flows.Tuple) (flows.Flow, error) { return k.conn.GetReply(t) }

func (k kernelSource) Invalid() (uint64, error) { return k.conn.Stats() }

func (k kernelSource) IfName(index uint32) string {
	if !k.local {
		return ""
	}
	if ifi, err := net.InterfaceByIndex(int(index)); err == nil {
		return ifi.Name
	}
	return ""
}
