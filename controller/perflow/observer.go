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

var counterNames = [numCounters]string{
	"flows_seen", "events_lost", "resyncs", "matched", "already_liberal", "flagged",
	"confirmed", "failed", "gone", "reflagged", "ended", "ended_by_reset",
}

// String returns the counter's snake_case name, e.g. "ended_by_reset".
func (c Counter) String() string {
	if c < 0 || c >= numCounters {
		return "unknown"
	}
	return counterNames[c]
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

func (c *counters) policyStats() PolicyStats {
	return PolicyStats{
		Matched:        c[Matched].Load(),
		AlreadyLiberal: c[AlreadyLiberal].Load(),
		Flagged:        c[Flagged].Load(),
		Confirmed:      c[Confirmed].Load(),
		Failed:         c[Failed].Load(),
		Gone:           c[Gone].Load(),
		Reflagged:      c[Reflagged].Load(),
		Ended:          c[Ended].Load(),
		EndedByReset:   c[EndedByReset].Load(),
	}
}
