package journal

import (
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/ctguard/ctguard/policy"
)

// policyFiles lists the policy files in the store's directory.
func policyFiles(t *testing.T, s *Store) []string {
	t.Helper()
	m, err := filepath.Glob(filepath.Join(filepath.Dir(s.Path()), policyFilePrefix+"*"))
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// TestPoliciesStoredOnce: ten revisions of the same large policy keep one
// policy file, journal.json stays small, and a revision that no longer
// exists takes its policy file with it.
func TestPoliciesStoredOnce(t *testing.T) {
	s := newStore(t)
	j := &Journal{NetNS: "net:[1]"}
	big := []policy.Policy{bigPolicy(20000, -1)}
	for i := range MaxRevisions {
		ps := big
		if i == 0 {
			ps = []policy.Policy{egressPolicy()}
		}
		j.Begin(Revision{AppliedAt: t0, Source: "p.yaml", Policies: ps})
		if err := s.Save(j); err != nil {
			t.Fatal(err)
		}
		if err := j.Commit(); err != nil {
			t.Fatal(err)
		}
		if err := s.Save(j); err != nil {
			t.Fatal(err)
		}
	}
	if files := policyFiles(t, s); len(files) != 2 {
		t.Fatalf("policy files %q, want 2 (egress, big)", files)
	}
	info, err := os.Stat(s.Path())
	if err != nil {
		t.Fatal(err)
	}
	if info.Size() > 8<<10 {
		t.Errorf("journal.json is %d bytes with policies stored apart", info.Size())
	}
	got, err := s.Load()
	if err != nil {
		t.Fatal(err)
	}
	if len(got.Revisions) != MaxRevisions || len(got.Latest().Policies[0].Match().Destinations) != 20000 || got.Revisions[0].Policies[0].Name() != "egress" {
		t.Fatalf("loaded %d revisions", len(got.Revisions))
	}
	// One more revision pushes the egress one out: its file goes.
	j.Begin(Revision{AppliedAt: t0, Source: "p.yaml", Policies: big})
	if err := j.Commit(); err != nil {
		t.Fatal(err)
	}
	if err := s.Save(j); err != nil {
		t.Fatal(err)
	}
	if files := policyFiles(t, s); len(files) != 1 {
		t.Fatalf("policy files %q, want only the big policy's", files)
	}
	if err := s.Remove(); err != nil {
		t.Fatal(err)
	}
	if files := policyFiles(t, s); len(files) != 0 {
		t.Fatalf("Remove left %q", files)
	}
}

// TestMigratesVersion1: a version 1 journal (policies inline) loads, and
// saving it writes version 2 that loads to the same journal.
func TestMigratesVersion1(t *testing.T) {
	s := newStore(t)
	const v1 = `{
  "version": 1,
  "netns": "net:[4026532000]",
  "revisions": [{"number": 3, "appliedAt": "2026-11-25T09:01:00Z", "source": "<default>", "policies": [
    {"apiVersion": "ctguard.io/v1alpha1", "kind": "MitigationPolicy", "metadata": {"name": "d"},
     "spec": {"workaround": "dropInvalid", "dropInvalid": {"hooks": ["input"]}, "match": {"family": "any", "destinations": ["198.18.0.0/24"]}}}]}],
  "pending": {"number": 4, "appliedAt": "2026-11-25T09:02:00Z", "source": "p.yaml", "policies": []}
}`
	if err := os.WriteFile(s.Path(), []byte(v1), 0o600); err != nil {
		t.Fatal(err)
	}
	old, err := s.Load()
	if err != nil {
		t.Fatal(err)
	}
	if old.Version != CurrentVersion || old.Latest().Policies[0].Match().Destinations[0] != netip.MustParsePrefix("198.18.0.0/24") {
		t.Fatalf("version 1 decoded as %+v", old)
	}
	if err := s.Save(old); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(s.Path())
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), `"version": 2`) || !strings.Contains(string(b), `"policiesRef": "sha256:`) || strings.Contains(string(b), "198.18.0.0/24") {
		t.Fatalf("saved journal:\n%s", b)
	}
	again, err := newStoreAt(t, filepath.Dir(s.Path())).Load()
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(again, old) {
		t.Fatalf("version 2 loads as\n%+v\nwant\n%+v", again, old)
	}
}

// TestPolicyFileChecked: a policy file that is missing, or does not hold
// what its name says, makes the journal damaged.
func TestPolicyFileChecked(t *testing.T) {
	for _, damage := range []string{"missing", "edited"} {
		t.Run(damage, func(t *testing.T) {
			s := newStore(t)
			if err := s.Save(&Journal{Revisions: []Revision{{Number: 1, AppliedAt: t0, Policies: []policy.Policy{dropPolicy()}}}}); err != nil {
				t.Fatal(err)
			}
			files := policyFiles(t, s)
			if len(files) != 1 {
				t.Fatalf("policy files %q", files)
			}
			var err error
			if damage == "missing" {
				err = os.Remove(files[0])
			} else {
				b, _ := os.ReadFile(files[0])
				err = os.WriteFile(files[0], []byte(strings.Replace(string(b), "wan0", "wan1", 1)), 0o600)
			}
			if err != nil {
				t.Fatal(err)
			}
			_, err = newStoreAt(t, filepath.Dir(s.Path())).Load()
			if !errors.Is(err, ErrDamaged) {
				t.Fatalf("Load = %v, want ErrDamaged", err)
			}
		})
	}
}

// TestPolicyTempFilesRemoved: a crash while writing a policy file leaves
// a temp file that RemoveTemps takes.
func TestPolicyTempFilesRemoved(t *testing.T) {
	s := newStore(t)
	name := filepath.Join(filepath.Dir(s.Path()), policyFilePrefix+"ab"+policyFileSuffix+".tmp-1")
	if err := os.WriteFile(name, []byte("["), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := s.RemoveTemps(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(name); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("temp policy file: %v", err)
	}
}

// newStoreAt opens a Store on dir (a fresh one: nothing cached).
func newStoreAt(t testing.TB, dir string) *Store {
	t.Helper()
	s, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// TestArchivedJournalKeepsItsPolicies: a journal archived at a new boot
// still finds its policies; they go with the archive.
func TestArchivedJournalKeepsItsPolicies(t *testing.T) {
	s := newStore(t)
	if err := s.Save(&Journal{Revisions: []Revision{{Number: 1, AppliedAt: t0, Policies: []policy.Policy{dropPolicy()}}}}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Archive(t0); err != nil {
		t.Fatal(err)
	}
	if err := s.Save(&Journal{Revisions: []Revision{{Number: 1, AppliedAt: t0, Policies: []policy.Policy{egressPolicy()}}}}); err != nil {
		t.Fatal(err)
	}
	if files := policyFiles(t, s); len(files) != 2 {
		t.Fatalf("policy files %q, want the archive's and the journal's", files)
	}
	archives, err := s.Archives()
	if err != nil || len(archives) != 1 {
		t.Fatalf("archives %q: %v", archives, err)
	}
	if err := os.Remove(archives[0]); err != nil {
		t.Fatal(err)
	}
	if err := s.Save(&Journal{Revisions: []Revision{{Number: 1, AppliedAt: t0, Policies: []policy.Policy{egressPolicy()}}}}); err != nil {
		t.Fatal(err)
	}
	if files := policyFiles(t, s); len(files) != 1 {
		t.Fatalf("policy files %q after the archive went, want the journal's", files)
	}
}
