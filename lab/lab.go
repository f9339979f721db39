// Package lab reproduces the incident ctguard exists for, end to end, in
// throwaway network namespaces: a client downloads through a masquerading
// NAT, crafted server segments hit the live flow mid-transfer, and the lab
// records whether the NAT box answered with its own RST, how conntrack's
// invalid counter moved and whether the download survived, first without
// any workaround, then with each mitigation applied in the NAT namespace.
// The handshake case opens many short connections, through an SNAT and a
// DNAT box, to a server that sends a segment beyond the client's window
// the instant each handshake completes (lab/handshake), and counts the
// connections reset. Run is the engine behind "ctguard lab"; lab/topo
// builds the namespaces.
package lab

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os/exec"
	"slices"
	"strings"
	"time"

	"github.com/ctguard/ctguard/lab/handshake"
	"github.com/ctguard/ctguard/lab/topo"
)

// Namespace is a network namespace of the lab (see topo.Namespace).
type Namespace = topo.Namespace

// Family is an IP address family (see topo.Family).
type Family = topo.Family

// NAT is the translation the lab's NAT box does (see topo.NAT).
type NAT = topo.NAT

// The topologies.
const (
	SNAT = topo.SNAT
	DNAT = topo.DNAT
)

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
	// Handshake is a segment beyond the window sent the instant each of
	// many short connections is established: it beats any flag set after
	// a conntrack event. It runs on the SNAT and the DNAT topology; the
	// mid-transfer cases on SNAT only.
	Handshake Case = "handshake"
)

// Cases lists every case, in the order Run uses by default.
var Cases = []Case{OldRetransmission, BeyondWindow, Handshake}

// ErrUnknownCase reports a case name the lab does not know.
var ErrUnknownCase = errors.New("unknown lab case (want old-retransmission, beyond-window or handshake)")

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

// NATMitigation is a Mitigation whose configuration depends on the kind of
// NAT box (dropInvalid's hook, the NAT kinds a per-flow policy selects).
// Run uses ApplyNAT when a mitigation has it; a plain Mitigation runs on
// SNAT boxes only.
type NATMitigation interface {
	Mitigation
	ApplyNAT(ctx context.Context, nat Namespace, kind NAT) (stop func() error, err error)
}

// Options select what Run reproduces. Zero values pick the defaults.
type Options struct {
	Families    []Family     // default: IPv4 and IPv6
	Cases       []Case       // default: Cases
	Topologies  []NAT        // handshake case; default: SNAT and DNAT (the mid-transfer cases run on SNAT only)
	Mitigations []Mitigation // run after the baseline, which always runs first; nil and "none" entries are ignored
	// WgetPath is the wget binary; "" downloads with Go's HTTP client, and
	// so does a wget that is not GNU wget (busybox's takes none of its
	// options).
	WgetPath string
	Logger   *slog.Logger // progress; default: discarded
	BodySize int          // download size in bytes; default 4 MiB
	Rate     int          // server pacing in bytes per second; default 1.5 MiB/s
	// Connections and ConnRate are the handshake case's load: how many
	// connections, opened at how many a second (default 40 at 200/s).
	Connections int
	ConnRate    float64
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
		if !slices.Contains(Cases, c) {
			return o, fmt.Errorf("%q: %w", c, ErrUnknownCase)
		}
	}
	if len(o.Topologies) == 0 {
		o.Topologies = []NAT{SNAT, DNAT}
	}
	for _, n := range o.Topologies {
		if n != SNAT && n != DNAT {
			return o, fmt.Errorf("%q: %w", n, topo.ErrUnknownNAT)
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
	if o.Connections <= 0 {
		o.Connections = handshake.DefaultConns
	}
	if o.ConnRate <= 0 {
		o.ConnRate = handshake.DefaultRate
	}
	if o.WgetPath != "" && !isGNUWget(o.WgetPath) {
		o.Logger.Warn("not GNU wget: downloading with the built-in client", "wget", o.WgetPath)
		o.WgetPath = ""
	}
	return o, nil
}

// isGNUWget reports whether the wget at path is GNU wget: the lab passes it
// GNU's options (busybox's wget, first on PATH in small images, rejects
// them and every download would fail).
func isGNUWget(path string) bool {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, path, "--version").Output()
	return err == nil && strings.HasPrefix(string(out), "GNU Wget")
}
