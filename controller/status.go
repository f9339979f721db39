package controller

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/ctguard/ctguard/controller/journal"
	"github.com/ctguard/ctguard/controller/nft"
	"github.com/ctguard/ctguard/controller/ruleset"
	"github.com/ctguard/ctguard/controller/sysctl"
	"github.com/ctguard/ctguard/policy"
	"golang.org/x/sys/unix"
)

// StatusFormatVersion is the version of Status's JSON form
// ("formatVersion"). It grows when a field changes meaning, type or goes
// away; new fields do not change it.
const StatusFormatVersion = 1

// State sums a Status up; "ctguard status" exits with a code per state.
type State string

// The states, from worst to best.
const (
	// StateFailing: an apply was interrupted, or the running controller's
	// last reconcile failed, its policy source is rejected, or it stopped
	// publishing its status (stuck).
	StateFailing State = "failing"
	// StateDrifted: the table or the sysctl differs from the revision in
	// force (nobody repairs it unless a controller runs).
	StateDrifted State = "drifted"
	// StateNotApplied: ctguard has nothing applied here.
	StateNotApplied State = "notApplied"
	// StateInForce: the revision in force is what the kernel has.
	StateInForce State = "inForce"
)

// LiveStale is how old a running controller's live status may get before
// status calls the controller stuck (it publishes every
// DefaultPublishEvery).
const LiveStale = 30 * time.Second

// Status is what ctguard has applied in the namespace and what its
// counters show. Its JSON form is "ctguard status -o json": camelCase
// keys, versioned by FormatVersion.
type Status struct {
	// FormatVersion is StatusFormatVersion.
	FormatVersion int `json:"formatVersion"`
	// State sums up the fields below; Problems say why it is failing or
	// drifted, one line each.
	State    State    `json:"state"`
	Problems []string `json:"problems,omitempty"`
	Kernel   string   `json:"kernel"`
	// KernelNotes say how this kernel treats the incident's packets.
	KernelNotes []string `json:"kernelNotes,omitempty"`
	NetNS       string   `json:"netns"`
	// JournalError says why journal.json could not be read, and the way
	// out; the rest is then read from the kernel alone.
	JournalError string `json:"journalError,omitempty"`
	// Revision is the revision in force; nil when nothing is applied.
	Revision *RevisionStatus `json:"revision"`
	// Interrupted is set when an apply or rollback was cut short: run
	// apply or rollback again.
	Interrupted bool `json:"interrupted"`
	// TablePresent says whether ctguard's table inet ctguard exists; Drift
	// whether it or the sysctl differs from what the revision in force wants.
	TablePresent bool `json:"tablePresent"`
	// ForeignTable says why a table inet ctguard ctguard did not create
	// is left alone (empty when there is none).
	ForeignTable string `json:"foreignTable,omitempty"`
	Drift        bool   `json:"drift"`
	// GateFallback says the table holds guard rules where the policies
	// ask for the gate: the kernel refused the gate's NFQUEUE.
	GateFallback bool         `json:"gateFallback,omitempty"`
	Rules        []RuleStatus `json:"rules"`
	// BeLiberal is the global sysctl now; BeLiberalBaseline its value
	// before ctguard's first apply, when ctguard manages it.
	BeLiberal         int  `json:"beLiberal"`
	BeLiberalBaseline *int `json:"beLiberalBaseline,omitempty"`
	// ConntrackInvalid is conntrack's per-CPU "invalid" statistic, summed.
	ConntrackInvalid uint64 `json:"conntrackInvalid"`
	// Live is the last status a "ctguard run" published (nil if none).
	Live *LiveStatus `json:"live,omitempty"`
	// ControllerRunning says whether a "ctguard run" manages the state
	// directory: a process holds the controller lock (/proc/locks; where
	// that cannot be read, whether Live is younger than LiveStale).
	ControllerRunning bool `json:"controllerRunning"`
}

// RevisionStatus summarises a journaled revision.
type RevisionStatus struct {
	Number    int       `json:"number"`
	AppliedAt time.Time `json:"appliedAt"`
	Source    string    `json:"source"`
	Policies  []string  `json:"policies"`
}

// RuleStatus is one rule of table inet ctguard with its counter.
type RuleStatus struct {
	Policy  string `json:"policy"`
	Purpose string `json:"purpose"`
	Chain   string `json:"chain"`
	Family  string `json:"family,omitempty"`
	Packets uint64 `json:"packets"`
	Bytes   uint64 `json:"bytes"`
}

// Status reads the journal and the kernel. It changes nothing.
func (c *Controller) Status(ctx context.Context) (Status, error) {
	// No lock: status only reads, and the journal is replaced atomically.
	// A journal of an earlier boot reads as empty: it describes nothing in
	// the kernel (the next apply or run archives it).
	j, err := c.readJournal(false)
	var journalErr string
	if errors.Is(err, journal.ErrDamaged) {
		// Report the kernel anyway: it is what matters in an incident.
		journalErr = err.Error() + ": " + DamagedJournalHint
		j, err = &journal.Journal{}, nil
	}
	if err != nil {
		return Status{}, err
	}
	release := kernelRelease()
	st := Status{Kernel: release, KernelNotes: KernelNotes(release), NetNS: c.netns, Interrupted: j.Pending != nil, JournalError: journalErr}
	table, err := c.readTable(j)
	if errors.Is(err, nft.ErrForeignTable) {
		st.ForeignTable, table, err = err.Error(), nil, nil
	}
	if err != nil {
		return Status{}, err
	}
	st.TablePresent = table != nil
	if r := j.Latest(); r != nil {
		rs := &RevisionStatus{Number: r.Number, AppliedAt: r.AppliedAt, Source: r.Source}
		for _, p := range r.Policies {
			rs.Policies = append(rs.Policies, p.Name())
		}
		st.Revision = rs
	}
	if table != nil {
		st.Rules = ruleStatuses(*table)
	}
	liberal, err := c.sysctls.Get(sysctl.BeLiberal)
	if err != nil {
		return Status{}, wrap("read sysctl", err)
	}
	if st.BeLiberal, err = strconv.Atoi(liberal); err != nil {
		return Status{}, wrap("read sysctl "+sysctl.BeLiberal, err)
	}
	st.Drift, st.GateFallback = c.drifted(j.Latest(), table, liberal)
	if j.Baseline != nil {
		if v, ok := j.Baseline.Sysctls[sysctl.BeLiberal]; ok {
			if n, err := strconv.Atoi(v); err == nil {
				st.BeLiberalBaseline = &n
			}
		}
	}
	if st.ConntrackInvalid, err = c.flows.Invalid(ctx); err != nil {
		return Status{}, wrap("read conntrack statistics", err)
	}
	held, err := c.store.ControllerHeld()
	if err != nil {
		c.log.Warn("cannot tell whether the controller lock is held", "err", err)
	}
	var live LiveStatus
	if err := c.store.LoadLive(&live); err == nil {
		st.Live = &live
	}
	// Only when the lock table cannot be read does a fresh live status
	// stand in for it (a controller killed with -9 leaves a fresh one).
	st.ControllerRunning = held || err != nil && st.Live != nil && time.Since(st.Live.UpdatedAt) < LiveStale
	st.summarize(time.Now())
	return st, nil
}

// DamagedJournalHint is the way out of a damaged journal.
const DamagedJournalHint = "move it aside (mv journal.json journal.json.damaged) to go on; ctguard then knows nothing it applied before: " +
	"check table inet ctguard (nft list table inet ctguard; ctguard replaces it only if it carries ctguard's mark) and " +
	"set net.netfilter.nf_conntrack_tcp_be_liberal back yourself if ctguard had changed it"

// hasGateRules reports whether the policies ask for gate rules.
func hasGateRules(ps []policy.Policy, opts ruleset.Options) bool {
	for _, ch := range ruleset.Build(ps, opts).Chains {
		if ch.Hook == ruleset.HookPrerouting {
			return true
		}
	}
	return false
}

// summarize sets FormatVersion, State and Problems from the other fields.
func (st *Status) summarize(now time.Time) {
	st.FormatVersion = StatusFormatVersion
	var failing, drifted []string
	if st.Interrupted {
		failing = append(failing, "the last apply or rollback was interrupted: run it again")
	}
	if st.JournalError != "" {
		failing = append(failing, "the journal is damaged: "+st.JournalError)
	}
	if st.ForeignTable != "" {
		failing = append(failing, st.ForeignTable)
	}
	if live := st.Live; live != nil && st.ControllerRunning {
		if age := now.Sub(live.UpdatedAt); age >= LiveStale {
			failing = append(failing, fmt.Sprintf("the controller holds its lock but published no status for %s: it may be stuck", age.Round(time.Second)))
		}
		if live.ReconcileFailing || live.LastError != "" {
			failing = append(failing, "the controller reports: "+live.LastError)
		}
	}
	if st.Drift {
		drifted = append(drifted, "the table or the sysctl differs from the revision in force")
	}
	st.Problems = append(failing, drifted...)
	switch {
	case len(failing) > 0:
		st.State = StateFailing
	case len(drifted) > 0:
		st.State = StateDrifted
	case st.Revision == nil && !st.TablePresent:
		st.State = StateNotApplied
	default:
		st.State = StateInForce
	}
}

// drifted says whether table (nil: absent) or the global sysctl's value
// liberal differs from what the revision in force r wants; with nothing in
// force, any table has drifted. gateFallback says the table holds guard
// rules where r asks for the gate: a controller whose kernel refused the
// gate's queue runs them, which is not drift.
func (c *Controller) drifted(r *journal.Revision, table *ruleset.Table, liberal string) (drift, gateFallback bool) {
	if r == nil {
		return table != nil, false
	}
	want := c.build(r.Policies) // built once per policies: scrapes call this
	if !ruleset.Equal(&want, table) {
		if c.rules.NoQueue || !hasGateRules(r.Policies, c.rules) {
			return true, false
		}
		guarded := c.rules
		guarded.NoQueue = true
		if want = ruleset.Build(r.Policies, guarded); !ruleset.Equal(&want, table) {
			return true, false
		}
		gateFallback = true
	}
	v, ok := r.Sysctls[sysctl.BeLiberal]
	return ok && v != liberal, gateFallback
}

// ruleStatuses pairs every rule with its named counter's values.
func ruleStatuses(t ruleset.Table) []RuleStatus {
	var out []RuleStatus
	eachCountedRule(t, func(ch ruleset.Chain, r ruleset.Rule, v ruleset.Counter) {
		out = append(out, RuleStatus{
			Policy:  r.Policy,
			Purpose: string(r.Purpose),
			Chain:   ch.Name(),
			Family:  string(r.NFProto),
			Packets: v.Packets,
			Bytes:   v.Bytes,
		})
	})
	return out
}

// eachCountedRule calls fn for every rule with the values of its counter.
func eachCountedRule(t ruleset.Table, fn func(ruleset.Chain, ruleset.Rule, ruleset.Counter)) {
	values := make(map[string]ruleset.Counter, len(t.Counters))
	for _, ctr := range t.Counters {
		values[ctr.Name] = ctr
	}
	for _, ch := range t.Chains {
		for _, r := range ch.Rules {
			fn(ch, r, values[r.Counter])
		}
	}
}

// kernelRelease returns uname -r.
func kernelRelease() string {
	var u unix.Utsname
	if err := unix.Uname(&u); err != nil {
		return "unknown"
	}
	return unix.ByteSliceToString(u.Release[:])
}
