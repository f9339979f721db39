package journal

import (
	"net/netip"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/ctguard/ctguard/internal/policytest"
	"github.com/ctguard/ctguard/policy"
)

// bigPolicy is a dropInvalid policy with n /32 destinations; edit >= 0
// replaces the one at that index by 10.200.0.1.
func bigPolicy(n, edit int) policy.Policy {
	d := dropPolicy().Document()
	d.Spec.Match.Destinations = make([]netip.Prefix, n)
	for i := range n {
		d.Spec.Match.Destinations[i] = netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}), 32)
	}
	if edit >= 0 {
		d.Spec.Match.Destinations[edit] = netip.MustParsePrefix("10.200.0.1/32")
	}
	return policytest.New(d)
}

// BenchmarkJournal200k saves and loads a journal of MaxRevisions
// revisions of a 200,000-CIDR policy, edited back and forth, as a
// reconcile that journals a changed policy does; journal-bytes is what
// the state directory then holds.
func BenchmarkJournal200k(b *testing.B) {
	dir := filepath.Join(b.TempDir(), "state")
	s, err := Open(dir)
	if err != nil {
		b.Fatal(err)
	}
	versions := [2][]policy.Policy{{bigPolicy(200000, -1)}, {bigPolicy(200000, 100000)}}
	j := &Journal{NetNS: "net:[1]"}
	for i := range MaxRevisions {
		j.Begin(Revision{AppliedAt: time.Now(), Policies: versions[i%2]})
		if err := j.Commit(); err != nil {
			b.Fatal(err)
		}
	}
	for b.Loop() {
		if err := s.Save(j); err != nil {
			b.Fatal(err)
		}
		if _, err := s.Load(); err != nil {
			b.Fatal(err)
		}
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		b.Fatal(err)
	}
	var total int64
	for _, e := range entries {
		if info, err := e.Info(); err == nil && info.Mode().IsRegular() {
			total += info.Size()
		}
	}
	b.ReportMetric(float64(total), "journal-bytes")
}
