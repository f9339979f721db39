package perflow

import (
	"sync/atomic"
)

// Counter names one of the engine's counters.
type Counter int

// The engine's counters. FlowsSeen, EventsLost and Resyncs are engine-wide
// (reported with policy ""); the others are per policy.
const (
	// FlowsSeen counts TCP flows examined (NEW events and dumped flows).
	FlowsSeen Counter = iota
	// EventsLost counts ENOBUFS reports from the event socket, and event
	// socket failures (each followed by a new subscription).
	EventsLost
	// Resyncs counts dumps run after event loss, a policy swap or on
	// ResyncInterval (failed ones included; not the start dump).
	Resyncs
	// Matched counts flows the policy selects.
	Matched
	// AlreadyLiberal counts matching flows that already carried the flag.
	AlreadyLiberal
	// Flagged counts flag updates the kernel accepted.
	Flagged
	// Confirmed counts flags seen landed in an UPDATE event or a dump.
	Confirmed
	// Failed counts flag updates the kernel refused.
	Failed
	// Gone counts flows that vanished before their update (ENOENT).
	Gone
	// Reflagged counts flags set again after the kernel lost them (kernels
	// before "preserve liberal flag in tcp options").
	Reflagged
	// Ended counts matching flows that ended: reached CLOSE or TIME_WAIT,
	// or were destroyed.
	Ended
	// EndedByReset counts matching flows that ended by going from
	// ESTABLISHED to CLOSE (a RST): the incident's signature.
	EndedByReset
	numCounters
)

// NumCounters is the number of counters: Counter values are 0 to
// NumCounters-1.
const NumCounters = int(numCounters)

// CounterInfo describes one counter; Counters is the one table that
// metrics, "ctguard status" and its JSON derive theirs from.
type CounterInfo struct {
	// Name is the snake_case name, e.g. "ended_by_reset"; Metric the
	// Prometheus name without the "ctguard_" prefix; Help its help text.
	Name, Metric, Help string
	// PerPolicy: counted per policy (label "policy"), else engine-wide.
	PerPolicy bool
	// Column is the heading of the counter's column in "ctguard status"
	// (per-policy counters).
	Column string
}

// Counters describes every counter, indexed by Counter.
var Counters = [numCounters]CounterInfo{
	FlowsSeen:      {Name: "flows_seen", Metric: "flows_seen_total", Help: "TCP flows examined by the per-flow engine."},
	EventsLost:     {Name: "events_lost", Metric: "events_lost_total", Help: "Conntrack event losses (e.g. ENOBUFS)."},
	Resyncs:        {Name: "resyncs", Metric: "resyncs_total", Help: "Full conntrack dumps done to resynchronise."},
	Matched:        {Name: "matched", Metric: "flows_matched_total", Help: "Flows selected by a perFlow policy.", PerPolicy: true, Column: "MATCHED"},
	AlreadyLiberal: {Name: "already_liberal", Metric: "flows_already_liberal_total", Help: "Selected flows that already carried the liberal flag.", PerPolicy: true, Column: "ALREADY LIBERAL"},
	Flagged:        {Name: "flagged", Metric: "flows_flagged_total", Help: "Liberal flag updates sent.", PerPolicy: true, Column: "FLAGGED"},
	Confirmed:      {Name: "confirmed", Metric: "flows_confirmed_total", Help: "Liberal flags confirmed set on the conntrack entry.", PerPolicy: true, Column: "CONFIRMED"},
	Failed:         {Name: "failed", Metric: "flows_failed_total", Help: "Liberal flag updates that failed.", PerPolicy: true, Column: "FAILED"},
	Gone:           {Name: "gone", Metric: "flows_gone_total", Help: "Flows that vanished before their flag landed.", PerPolicy: true, Column: "GONE"},
	Reflagged:      {Name: "reflagged", Metric: "flows_reflagged_total", Help: "Flows flagged again after the kernel cleared the flag.", PerPolicy: true, Column: "REFLAGGED"},
	Ended:          {Name: "ended", Metric: "flows_ended_total", Help: "Matched flows that ended.", PerPolicy: true, Column: "ENDED"},
	EndedByReset:   {Name: "ended_by_reset", Metric: "flows_ended_by_reset_total", Help: "Matched flows that ended with a TCP reset.", PerPolicy: true, Column: "ENDED BY RESET"},
}

// String returns the counter's snake_case name, e.g. "ended_by_reset".
func (c Counter) String() string {
	if c < 0 || c >= numCounters {
		return "unknown"
	}
	return Counters[c].Name
}

// Observer receives the engine's measurements as they happen, e.g. to feed
// Prometheus. It runs on the engine's event loop: it must be fast and never
// block.
type Observer interface {
	// Count adds one to counter c of the policy ("" for engine-wide ones).
	Count(c Counter, policy string)
	// FlagLatency reports the time from reading a NEW event to the kernel's
	// acknowledgement of its flag update.
	FlagLatency(policy string, seconds float64)
}

// noObserver is the Observer of an engine configured without one.
type noObserver struct{}

// Count discards the count.
func (noObserver) Count(Counter, string) {}

// FlagLatency discards the latency.
func (noObserver) FlagLatency(string, float64) {}

// counters is one policy's (or the engine's) set of counters.
type counters [numCounters]atomic.Uint64

// Snapshot is a copy of the engine's counters.
// The JSON names are part of "ctguard status -o json".
type Snapshot struct {
	FlowsSeen  uint64 `json:"flowsSeen"`
	EventsLost uint64 `json:"eventsLost"`
	Resyncs    uint64 `json:"resyncs"`
	// Policies holds the counters of each current per-flow policy, by name.
	Policies map[string]PolicyStats `json:"policies"`
}

// PolicyStats is one policy's counters (the ctguard_flows_*_total series).
type PolicyStats struct {
	Matched        uint64 `json:"matched"`
	AlreadyLiberal uint64 `json:"alreadyLiberal"`
	Flagged        uint64 `json:"flagged"`
	Confirmed      uint64 `json:"confirmed"`
	Failed         uint64 `json:"failed"`
	Gone           uint64 `json:"gone"`
	Reflagged      uint64 `json:"reflagged"`
	Ended          uint64 `json:"ended"`
	EndedByReset   uint64 `json:"endedByReset"`
}

// Get returns the value of per-policy counter c (0 for others).
func (p *PolicyStats) Get(c Counter) uint64 {
	if f := p.field(c); f != nil {
		return *f
	}
	return 0
}

// field returns the field of per-policy counter c, nil for others.
func (p *PolicyStats) field(c Counter) *uint64 {
	switch c {
	case Matched:
		return &p.Matched
	case AlreadyLiberal:
		return &p.AlreadyLiberal
	case Flagged:
		return &p.Flagged
	case Confirmed:
		return &p.Confirmed
	case Failed:
		return &p.Failed
	case Gone:
		return &p.Gone
	case Reflagged:
		return &p.Reflagged
	case Ended:
		return &p.Ended
	case EndedByReset:
		return &p.EndedByReset
	}
	return nil
}

func (c *counters) policyStats() PolicyStats {
	var p PolicyStats
	for i := range c {
		if f := p.field(Counter(i)); f != nil {
			*f = c[i].Load()
		}
	}
	return p
}
