// Package journal keeps ctguard's rollback journal: what the box had before
// ctguard's first apply, what ctguard applied since, and the apply in
// progress. It lives as one JSON file in the state directory, replaced
// atomically, and a lock file keeps two ctguard processes from interleaving.
package journal

import (
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/ctguard/ctguard/policy"
)

// CurrentVersion is the schema version this package writes and reads.
const CurrentVersion = 1

// MaxRevisions is how many committed revisions a journal keeps.
const MaxRevisions = 10

// Errors callers branch on.
var (
	// ErrOtherNetNS: the journal belongs to another network namespace.
	ErrOtherNetNS = errors.New("journal belongs to another network namespace")
	// ErrNoPending: Commit was called without a pending revision.
	ErrNoPending = errors.New("journal has no pending revision")
	// ErrUnsupportedVersion: the file's schema version is not CurrentVersion.
	ErrUnsupportedVersion = errors.New("unsupported journal version")
)

// Journal is the content of journal.json. The JSON field names are the
// on-disk contract; change them only with a new CurrentVersion.
type Journal struct {
	// Version is the schema version (CurrentVersion).
	Version int `json:"version"`
	// NetNS identifies the network namespace the journal belongs to, as
	// readlink of its nsfs file gives it ("net:[4026531840]"). Empty until
	// the first apply.
	NetNS string `json:"netns,omitempty"`
	// BootID is the kernel's boot id (CurrentBootID) of the boot the
	// journal describes: a journal of an earlier boot describes nothing in
	// the kernel any more. Empty in journals written before ctguard
	// recorded it, and until the first apply.
	BootID string `json:"bootId,omitempty"`
	// Baseline is what the box had before ctguard's first apply; nil until
	// then. Rollback restores it.
	Baseline *Baseline `json:"baseline,omitempty"`
	// Revisions is the applied history, oldest first, at most MaxRevisions.
	Revisions []Revision `json:"revisions,omitempty"`
	// FlaggedDirections are the directions of every perFlow policy ctguard
	// applied since its first apply: the flags a rollback may clear on
	// the flows carrying ctguard's mark.
	FlaggedDirections []policy.Direction `json:"flaggedDirections,omitempty"`
	// Pending is the revision being applied. It is saved before the kernel
	// is touched and committed into Revisions after success: a journal
	// loaded with Pending set means an apply was interrupted.
	Pending *Revision `json:"pending,omitempty"`

	// savedAt is the file's modification time, set by Store.LoadFor.
	savedAt time.Time
}

// Baseline is the state of the box before ctguard first changed it.
type Baseline struct {
	// RecordedAt is when the baseline was read.
	RecordedAt time.Time `json:"recordedAt"`
	// Sysctls holds, for every sysctl ctguard changed and has not restored
	// yet, its value before ctguard changed it (dotted name -> value). A
	// sysctl absent here is the operator's: ctguard leaves it alone.
	Sysctls map[string]string `json:"sysctls"`
}

// Revision is one apply of a set of policies.
type Revision struct {
	// Number counts applies, from 1, growing by one per Begin.
	Number int `json:"number"`
	// AppliedAt is when the apply started.
	AppliedAt time.Time `json:"appliedAt"`
	// Source is where the policies came from: a file or directory path, or
	// "<default>" for the embedded policy. Policy.Source is not stored.
	Source string `json:"source"`
	// Policies are the validated policies applied, defaults filled in.
	Policies []policy.Policy `json:"policies"`
	// Sysctls are the values ctguard set (dotted name -> value).
	Sysctls map[string]string `json:"sysctls,omitempty"`
}

// Latest returns the newest committed revision, or nil if there is none.
func (j *Journal) Latest() *Revision {
	if len(j.Revisions) == 0 {
		return nil
	}
	return &j.Revisions[len(j.Revisions)-1]
}

// Begin numbers r after the newest committed revision and makes it the
// pending revision, replacing an interrupted one. Save the journal before
// touching the kernel.
func (j *Journal) Begin(r Revision) *Revision {
	r.Number = 1
	if last := j.Latest(); last != nil {
		r.Number = last.Number + 1
	}
	j.Pending = &r
	return j.Pending
}

// Commit moves the pending revision into Revisions, keeping the newest
// MaxRevisions. Save the journal after the kernel change succeeded.
func (j *Journal) Commit() error {
	if j.Pending == nil {
		return ErrNoPending
	}
	j.Revisions = append(j.Revisions, *j.Pending)
	if n := len(j.Revisions); n > MaxRevisions {
		j.Revisions = slices.Clone(j.Revisions[n-MaxRevisions:])
	}
	j.Pending = nil
	return nil
}

// CheckNetNS returns an error wrapping ErrOtherNetNS unless the journal is
// new (no NetNS yet) or belongs to the namespace netns.
func (j *Journal) CheckNetNS(netns string) error {
	if j.NetNS != "" && j.NetNS != netns {
		return fmt.Errorf("%w: journal is for %s, this is %s", ErrOtherNetNS, j.NetNS, netns)
	}
	return nil
}
