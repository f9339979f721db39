// Package lab reproduces the incident ctguard exists for, end to end, in
// throwaway network namespaces: a client downloads through a masquerading
// NAT, crafted server segments hit the live flow mid-transfer, and the lab
// records whether the NAT box answered with its own RST, how conntrack's
// invalid counter moved and whether the download survived, first without
// any workaround, then with each mitigation applied in the NAT namespace.
// Run is the engine behind "ctguard lab"; lab/topo builds the namespaces.
package lab

import (
	"context"
	"errors"
	"fmt"
	"log/slog"

	"github.com/ctguard/ctguard/lab/topo"
)

// Namespace is a network namespace of the lab (see topo.Namespace).
type Namespace = topo.Namespace

// Family is an IP address family (see topo.Family).
type Family = topo.Family

// The address families.
const (
	IPv4 = topo.IPv4
	IPv6 = topo.IPv6
)

// Case is a way a server segment can fall outside conntrack's TCP window.
type Case string

// The cases the lab reproduces.
const (
	// OldRetransmission is a spurious retransmission of data the client
	// ACKed long ago (the incident as written; ignored by Linux 6.1+).
	OldRetransmission Case = "old-retransmission"
	// BeyondWindow is a segment whose sequence number lies beyond the
	// client's receive window (still invalid on current kernels).
	BeyondWindow Case = "beyond-window"
)

// Cases lists every case, in the order Run uses by default.
var Cases = []Case{OldRetransmission, BeyondWindow}

// ErrUnknownCase reports a case name the lab does not know.
var ErrUnknownCase = errors.New("unknown lab case (want old-retransmission or beyond-window)")

// Baseline is the workaround name of the runs without any mitigation.
const Baseline = "none"

// Mitigation is a workaround applied in the NAT namespace before a run's
// download starts, with ctguard's own code paths.
type Mitigation interface {
	// Name is the workaround's name in the report: "liberal",
	// "liberal-global", "dropInvalid".
	Name() string
	// Apply installs the workaround in nat and returns how to remove it.
	// The lab calls stop when the run ends, before it deletes nat.
	Apply(ctx context.Context, nat Namespace) (stop func() error, err error)
}

// Options select what Run reproduces. Zero values pick the defaults.
type Options struct {
	Families    []Family     // default: IPv4 and IPv6
	Cases       []Case       // default: Cases
	Mitigations []Mitigation // run after the baseline, which always runs first; nil and "none" entries are ignored
	WgetPath    string       // the wget binary; "" downloads with Go's HTTP client
	Logger      *slog.Logger // progress; default: discarded
	BodySize    int          // download size in bytes; default 4 MiB
	Rate        int          // server pacing in bytes per second; default 1.5 MiB/s
}

// Defaults of Options.
const (
	DefaultBodySize = 4 << 20
	DefaultRate     = 3 << 19 // 1.5 MiB/s
)

// withDefaults fills in the zero fields and validates cases and families.
func (o Options) withDefaults() (Options, error) {
	if len(o.Families) == 0 {
		o.Families = []Family{IPv4, IPv6}
	}
	if len(o.Cases) == 0 {
		o.Cases = Cases
	}
	for _, c := range o.Cases {
		if c != OldRetransmission && c != BeyondWindow {
			return o, fmt.Errorf("%q: %w", c, ErrUnknownCase)
		}
	}
	for _, f := range o.Families {
		if _, err := topo.AddressesFor(f); err != nil {
			return o, err
		}
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.BodySize <= 0 {
		o.BodySize = DefaultBodySize
	}
	if o.Rate <= 0 {
		o.Rate = DefaultRate
	}
	return o, nil
}
