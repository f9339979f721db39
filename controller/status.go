package controller

import (
	"context"
	"errors"
	"time"

	"github.com/ctguard/ctguard/controller/ruleset"
	"github.com/ctguard/ctguard/controller/sysctl"
	"golang.org/x/sys/unix"
)

// Status is what ctguard has applied in the namespace and what its
// counters show. JSON field names are part of the CLI contract.
type Status struct {
	Kernel string `json:"kernel"`
	// KernelNotes say how this kernel treats the incident's packets.
	KernelNotes []string `json:"kernelNotes,omitempty"`
	NetNS       string   `json:"netns"`
	// Revision is the revision in force; nil when nothing is applied.
	Revision *RevisionStatus `json:"revision"`
	// Interrupted is set when an apply or rollback was cut short: run
	// apply or rollback again.
	Interrupted bool `json:"interrupted"`
	// TablePresent says whether table inet ctguard exists; Drift whether
	// it differs from what the revision in force wants.
	TablePresent bool         `json:"tablePresent"`
	Drift        bool         `json:"drift"`
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
	// A journal of an earlier boot reads as empty: it describes nothing in
	// the kernel (the next apply or run archives it).
	j, err := c.readJournal(false)
	if err != nil {
		return Status{}, err
	}
	release := kernelRelease()
	st := Status{Kernel: release, KernelNotes: KernelNotes(release), NetNS: c.netns, Interrupted: j.Pending != nil}
	table, err := c.readTable()
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
		want := ruleset.Build(r.Policies)
		st.Drift = !ruleset.Equal(&want, table)
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
