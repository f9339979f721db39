package controller

import (
	"context"
	"errors"
	"time"

	"github.com/ctguard/ctguard/controller/journal"
	"github.com/ctguard/ctguard/controller/nft"
	"github.com/ctguard/ctguard/controller/ruleset"
	"github.com/ctguard/ctguard/controller/sysctl"
	"github.com/ctguard/ctguard/policy"
	"golang.org/x/sys/unix"
)

// Status is what ctguard has applied in the namespace and what its
// counters show. JSON field names are part of the CLI contract.
type Status struct {
	Kernel string `json:"kernel"`
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
	// whether it differs from what the revision in force wants.
	TablePresent bool `json:"tablePresent"`
	// ForeignTable says why a table inet ctguard ctguard did not create
	// is left alone (empty when there is none).
	ForeignTable string `json:"foreignTable,omitempty"`
	Drift        bool   `json:"drift"`
	// GateFallback says the table holds guard rules where the policies
	// ask for the gate: the kernel refused the gate's NFQUEUE.
	GateFallback bool         `json:"gateFallback,omitempty"`
	Rules        []RuleStatus `json:"rules"`
	// BeLiberal is the global sysctl now and before ctguard's first apply.
	BeLiberal         string `json:"beLiberal"`
	BeLiberalBaseline string `json:"beLiberalBaseline,omitempty"`
	// ConntrackInvalid is conntrack's per-CPU "invalid" statistic, summed.
	ConntrackInvalid uint64 `json:"conntrackInvalid"`
	// Live is the last status a "ctguard run" published (nil if none);
	// LiveRunning says whether its process still exists.
	Live        *LiveStatus `json:"live,omitempty"`
	LiveRunning bool        `json:"liveRunning"`
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
	j, err := c.store.Load()
	var journalErr string
	if errors.Is(err, journal.ErrDamaged) {
		// Report the kernel anyway: it is what matters in an incident.
		journalErr = err.Error() + ": " + DamagedJournalHint
		j, err = &journal.Journal{}, nil
	}
	if err == nil {
		err = j.CheckNetNS(c.netns)
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
			rs.Policies = append(rs.Policies, p.Metadata.Name)
		}
		st.Revision = rs
		want := ruleset.Build(r.Policies, c.rules)
		st.Drift = !ruleset.Equal(&want, table)
		if st.Drift && !c.rules.NoQueue {
			// A controller whose kernel refused the gate's queue runs
			// guard rules instead.
			guarded := c.rules
			guarded.NoQueue = true
			want = ruleset.Build(r.Policies, guarded)
			st.Drift = !ruleset.Equal(&want, table)
			st.GateFallback = !st.Drift && hasGateRules(r.Policies, c.rules)
		}
	} else {
		st.Drift = table != nil
	}
	if table != nil {
		st.Rules = ruleStatuses(*table)
	}
	if st.BeLiberal, err = c.sysctls.Get(sysctl.BeLiberal); err != nil {
		return Status{}, wrap("read sysctl", err)
	}
	if j.Baseline != nil {
		st.BeLiberalBaseline = j.Baseline.Sysctls[sysctl.BeLiberal]
	}
	if st.ConntrackInvalid, err = c.flows.Invalid(ctx); err != nil {
		return Status{}, wrap("read conntrack statistics", err)
	}
	var live LiveStatus
	if err := c.store.LoadLive(&live); err == nil {
		st.Live = &live
		st.LiveRunning = processExists(live.PID)
	}
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

// processExists reports whether a process with the pid exists.
func processExists(pid int) bool {
	if pid <= 0 {
		return false
	}
	err := unix.Kill(pid, 0)
	return err == nil || errors.Is(err, unix.EPERM)
}
