package nft

import (
	"fmt"
	"slices"
	"sync"

	"github.com/ctguard/ctguard/controller/ruleset"
)

// Fake is an in-memory table inet ctguard with the Client's methods, for
// unit tests of the controller. Like the kernel it is atomic (a failed
// Replace changes nothing), rejects what the kernel or Read would not take
// (ErrInvalidTable), reads set elements back canonically and carries counter
// values over a Replace. It is safe for concurrent use.
type Fake struct {
	mu      sync.Mutex
	table   *ruleset.Table
	failErr error
	// foreign is set while the table is someone else's (no ownership
	// mark); foreignContents describe it.
	foreign         bool
	foreignContents []string
	noQueue         bool
}

// NewFake returns a Fake without table inet ctguard.
func NewFake() *Fake { return &Fake{} }

// Read returns a copy of the table, or nil, nil when it is absent.
func (f *Fake) Read() (*ruleset.Table, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.table == nil {
		return nil, nil
	}
	t := clone(*f.table)
	if f.foreign {
		return nil, &ForeignTableError{Contents: slices.Clone(f.foreignContents), Table: &t}
	}
	return &t, nil
}

// SetForeign makes the table t without ctguard's ownership mark, as an
// operator's own table inet ctguard (contents describe it in errors) or a
// table of a ctguard that wrote no mark yet. A Replace makes it ctguard's.
func (f *Fake) SetForeign(t ruleset.Table, contents ...string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	c := clone(t)
	f.table, f.foreign, f.foreignContents = &c, true, contents
}

// Replace makes the table exactly t, keeping the values of counters that
// already exist, or fails and changes nothing.
func (f *Fake) Replace(t ruleset.Table) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.takeFailure(); err != nil {
		return fmt.Errorf("replace table inet ctguard: %w", err)
	}
	next, err := canonical(t)
	if err != nil {
		return err
	}
	if f.noQueue && hasGate(next) {
		return fmt.Errorf("replace table inet ctguard: %w", ErrNoQueue)
	}
	current := f.counters()
	for i, c := range next.Counters {
		if cur, ok := current[c.Name]; ok {
			next.Counters[i] = cur
		}
	}
	f.table, f.foreign = &next, false
	return nil
}

// Delete removes the table; an absent table is fine.
func (f *Fake) Delete() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.takeFailure(); err != nil {
		return fmt.Errorf("delete table inet ctguard: %w", err)
	}
	f.table, f.foreign = nil, false
	return nil
}

// AddForeign adds objects ctguard never creates (described) to the table,
// as an operator's nft command would. It reports whether the table exists.
func (f *Fake) AddForeign(descriptions ...string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.table == nil {
		return false
	}
	f.table.Foreign = append(f.table.Foreign, descriptions...)
	slices.Sort(f.table.Foreign)
	return true
}

// Counters returns the named counters; empty when the table is absent.
func (f *Fake) Counters() (map[string]ruleset.Counter, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.counters(), nil
}

// Close does nothing; it completes the Client's method set.
func (f *Fake) Close() error { return nil }

// Hit adds traffic to a named counter, as matching packets would. It
// reports whether the counter exists.
func (f *Fake) Hit(counter string, packets, bytes uint64) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.table == nil {
		return false
	}
	for i := range f.table.Counters {
		if c := &f.table.Counters[i]; c.Name == counter {
			c.Packets += packets
			c.Bytes += bytes
			return true
		}
	}
	return false
}

// FailNext makes the next Replace or Delete fail with err (wrapped) and
// change nothing, as a kernel that rejects the batch would.
func (f *Fake) FailNext(err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.failErr = err
}

// RefuseQueue makes every Replace of a table with gate rules fail with
// ErrNoQueue, as a kernel without NFQUEUE support does.
func (f *Fake) RefuseQueue() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.noQueue = true
}

func (f *Fake) takeFailure() error {
	err := f.failErr
	f.failErr = nil
	return err
}

func (f *Fake) counters() map[string]ruleset.Counter {
	out := map[string]ruleset.Counter{}
	if f.table != nil {
		for _, c := range f.table.Counters {
			out[c.Name] = c
		}
	}
	return out
}

// clone deep-copies a table.
func clone(t ruleset.Table) ruleset.Table {
	out := ruleset.Table{Counters: slices.Clone(t.Counters), Foreign: slices.Clone(t.Foreign)}
	for _, s := range t.Sets {
		s.Elements = slices.Clone(s.Elements)
		out.Sets = append(out.Sets, s)
	}
	for _, c := range t.Chains {
		c.Rules = slices.Clone(c.Rules)
		out.Chains = append(out.Chains, c)
	}
	return out
}
