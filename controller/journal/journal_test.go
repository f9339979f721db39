package journal

import (
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/ctguard/ctguard/internal/policytest"
	"github.com/ctguard/ctguard/policy"
)

var t0 = time.Date(2026, 11, 25, 9, 0, 0, 123456789, time.UTC)

func ptr[T any](v T) *T { return &v }

// egressPolicy is a perFlow liberal policy with prefixes, ports and every
// optional field set.
func egressPolicy() policy.Policy {
	return policytest.New(policy.Document{
		APIVersion: policy.APIVersion,
		Kind:       policy.Kind,
		Metadata:   policy.Metadata{Name: "egress"},
		Spec: policy.Spec{
			Workaround: policy.WorkaroundLiberal,
			Liberal: &policy.Liberal{
				Scope:         policy.ScopePerFlow,
				Directions:    []policy.Direction{policy.DirectionReply},
				ExistingFlows: ptr(true),
			},
			Match: policy.Match{
				Family:           policy.FamilyAny,
				Sources:          []netip.Prefix{netip.MustParsePrefix("198.18.0.0/24"), netip.MustParsePrefix("fd00:c79::/64")},
				Destinations:     []netip.Prefix{netip.MustParsePrefix("198.19.0.0/16")},
				DestinationPorts: []policy.PortRange{{From: 443, To: 443}, {From: 8000, To: 8100}},
				NATOnly:          ptr(false),
			},
		},
	})
}

// dropPolicy is a dropInvalid policy.
func dropPolicy() policy.Policy {
	return policytest.New(policy.Document{
		APIVersion: policy.APIVersion,
		Kind:       policy.Kind,
		Metadata:   policy.Metadata{Name: "wan-drop"},
		Spec: policy.Spec{
			Workaround:  policy.WorkaroundDropInvalid,
			DropInvalid: &policy.DropInvalid{Interfaces: []string{"wan0"}, Hooks: []policy.Hook{policy.HookInput, policy.HookForward}},
			Match:       policy.Match{Family: policy.FamilyIPv4},
		},
	})
}

func fullJournal() *Journal {
	return &Journal{
		Version: CurrentVersion,
		NetNS:   "net:[4026531840]",
		Baseline: &Baseline{
			RecordedAt: t0,
			Sysctls:    map[string]string{"net.netfilter.nf_conntrack_tcp_be_liberal": "0"},
		},
		Revisions: []Revision{{
			Number:    1,
			AppliedAt: t0.Add(time.Minute),
			Source:    "/etc/ctguard/policies",
			Policies:  []policy.Policy{egressPolicy(), dropPolicy()},
		}},
		Pending: &Revision{
			Number:    2,
			AppliedAt: t0.Add(2 * time.Minute),
			Source:    "<default>",
			Policies:  []policy.Policy{dropPolicy()},
			Sysctls:   map[string]string{"net.netfilter.nf_conntrack_tcp_be_liberal": "1"},
		},
	}
}

func newStore(t *testing.T) *Store {
	t.Helper()
	s, err := Open(filepath.Join(t.TempDir(), "state"))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestRoundTrip(t *testing.T) {
	s := newStore(t)
	want := fullJournal()
	if err := s.Save(want); err != nil {
		t.Fatal(err)
	}
	got, err := s.Load()
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("round trip differs:\ngot  %+v\nwant %+v", got, want)
	}
	if !got.Revisions[0].Policies[0].IsPerFlow() {
		t.Fatal("perFlow policy lost its scope")
	}
}

func TestPolicySourceIsNotStored(t *testing.T) {
	s := newStore(t)
	p := dropPolicy().WithSource("/etc/ctguard/wan.yaml")
	if err := s.Save(&Journal{Revisions: []Revision{{Number: 1, Source: p.Source(), Policies: []policy.Policy{p}}}}); err != nil {
		t.Fatal(err)
	}
	got, err := s.Load()
	if err != nil {
		t.Fatal(err)
	}
	if src := got.Revisions[0].Policies[0].Source(); src != "" {
		t.Fatalf("Policy.Source stored as %q; Revision.Source holds it", src)
	}
	if got.Revisions[0].Source != p.Source() {
		t.Fatalf("Revision.Source = %q", got.Revisions[0].Source)
	}
}

func TestSaveStampsVersion(t *testing.T) {
	s := newStore(t)
	j := &Journal{NetNS: "net:[1]"}
	if err := s.Save(j); err != nil {
		t.Fatal(err)
	}
	if j.Version != 0 {
		t.Fatal("Save modified its argument")
	}
	got, err := s.Load()
	if err != nil {
		t.Fatal(err)
	}
	if got.Version != CurrentVersion {
		t.Fatalf("Version = %d", got.Version)
	}
}

func TestLoadMissingIsEmpty(t *testing.T) {
	got, err := newStore(t).Load()
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, &Journal{Version: CurrentVersion}) {
		t.Fatalf("Load of missing journal = %+v", got)
	}
}

// TestReadsVersion1File pins the on-disk field names.
func TestReadsVersion1File(t *testing.T) {
	s := newStore(t)
	const file = `{
  "version": 1,
  "netns": "net:[4026532000]",
  "baseline": {"recordedAt": "2026-11-25T09:00:00Z", "sysctls": {"net.netfilter.nf_conntrack_tcp_be_liberal": "0"}, "tableExisted": false},
  "revisions": [{"number": 3, "appliedAt": "2026-11-25T09:01:00Z", "source": "<default>", "policies": [
    {"apiVersion": "ctguard.io/v1alpha1", "kind": "MitigationPolicy", "metadata": {"name": "d"},
     "spec": {"workaround": "dropInvalid", "dropInvalid": {"hooks": ["input"]}, "match": {"family": "any"}}}],
    "sysctls": {"net.netfilter.nf_conntrack_tcp_be_liberal": "1"}}],
  "pending": {"number": 4, "appliedAt": "2026-11-25T09:02:00Z", "source": "p.yaml", "policies": []}
}`
	if err := os.WriteFile(s.Path(), []byte(file), 0o600); err != nil {
		t.Fatal(err)
	}
	j, err := s.Load()
	if err != nil {
		t.Fatal(err)
	}
	switch {
	case j.NetNS != "net:[4026532000]",
		j.Baseline == nil || j.Baseline.Sysctls["net.netfilter.nf_conntrack_tcp_be_liberal"] != "0",
		len(j.Revisions) != 1 || j.Latest().Number != 3 || j.Latest().Sysctls["net.netfilter.nf_conntrack_tcp_be_liberal"] != "1",
		j.Latest().Policies[0].Hooks()[0] != policy.HookInput,
		j.Pending == nil || j.Pending.Number != 4 || j.Pending.Source != "p.yaml":
		t.Fatalf("decoded %+v", j)
	}
}

func TestLoadRejects(t *testing.T) {
	tests := []struct {
		name, content string
		is            error
	}{
		{"newer version", `{"version": 3}`, ErrUnsupportedVersion},
		{"no version", `{"netns": "net:[1]"}`, ErrUnsupportedVersion},
		{"truncated", `{"version": 1, "revisions": [`, nil},
		{"not json", "\x00\x00", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newStore(t)
			if err := os.WriteFile(s.Path(), []byte(tt.content), 0o600); err != nil {
				t.Fatal(err)
			}
			_, err := s.Load()
			if err == nil || (tt.is != nil && !errors.Is(err, tt.is)) {
				t.Fatalf("Load error = %v, want %v", err, tt.is)
			}
			if !strings.Contains(err.Error(), s.Path()) {
				t.Fatalf("error %q does not name the file", err)
			}
		})
	}
}

// TestCrashBeforeRenameKeepsOldJournal simulates a crash between writing
// the temporary file and renaming it: the stray temp file must not be read.
func TestCrashBeforeRenameKeepsOldJournal(t *testing.T) {
	s := newStore(t)
	old := fullJournal()
	if err := s.Save(old); err != nil {
		t.Fatal(err)
	}
	stray := filepath.Join(filepath.Dir(s.Path()), FileName+".tmp-4242")
	if err := os.WriteFile(stray, []byte(`{"version": 1, "netns": "net:[9`), 0o600); err != nil {
		t.Fatal(err)
	}
	got, err := s.Load()
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, old) {
		t.Fatalf("Load after crash = %+v, want the old journal", got)
	}

	unlock, err := s.Lock()
	if err != nil {
		t.Fatal(err)
	}
	defer unlock()
	if _, err := os.Stat(stray); !os.IsNotExist(err) {
		t.Fatalf("Lock left the stray temp file: %v", err)
	}
	if err := s.Save(&Journal{NetNS: "net:[2]"}); err != nil {
		t.Fatal(err)
	}
	entries, err := os.ReadDir(filepath.Dir(s.Path()))
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	if !reflect.DeepEqual(names, []string{FileName, LockName}) {
		t.Fatalf("state dir holds %v", names)
	}
}

func TestRemove(t *testing.T) {
	s := newStore(t)
	if err := s.Remove(); err != nil {
		t.Fatalf("Remove of missing journal: %v", err)
	}
	if err := s.Save(fullJournal()); err != nil {
		t.Fatal(err)
	}
	if err := s.Remove(); err != nil {
		t.Fatal(err)
	}
	got, err := s.Load()
	if err != nil || got.Baseline != nil || len(got.Revisions) != 0 {
		t.Fatalf("Load after Remove = %+v, %v", got, err)
	}
}

func TestPermissions(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "var", "lib", "ctguard")
	s, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	// An existing journal with loose permissions is replaced by a 0600 one.
	if err := os.WriteFile(s.Path(), []byte(`{"version": 1}`), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := s.Save(fullJournal()); err != nil {
		t.Fatal(err)
	}
	unlock, err := s.Lock()
	if err != nil {
		t.Fatal(err)
	}
	unlock()
	for path, want := range map[string]os.FileMode{
		dir:                          0o700 | os.ModeDir,
		s.Path():                     0o600,
		filepath.Join(dir, LockName): 0o600,
	} {
		fi, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode() != want {
			t.Errorf("%s has mode %v, want %v", path, fi.Mode(), want)
		}
	}
}

func TestOpenRefuses(t *testing.T) {
	open := filepath.Join(t.TempDir(), "open")
	if err := os.Mkdir(open, 0o777); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(open, 0o777); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(open); !errors.Is(err, ErrUntrusted) {
		t.Fatalf("Open(0777 dir) error = %v, want ErrUntrusted", err)
	}
	file := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(file); err == nil {
		t.Fatal("Open(regular file) succeeded")
	}
}

// TestLockContention: flock locks belong to the open file description, so a
// second Lock in the same process contends exactly like another process.
func TestLockContention(t *testing.T) {
	defer func(w time.Duration) { lockWait = w }(lockWait)
	lockWait = 100 * time.Millisecond
	s := newStore(t)
	unlock, err := s.Lock()
	if err != nil {
		t.Fatal(err)
	}
	other, err := Open(filepath.Dir(s.Path()))
	if err != nil {
		t.Fatal(err)
	}
	_, err = other.Lock()
	if !errors.Is(err, ErrLocked) {
		t.Fatalf("second Lock error = %v, want ErrLocked", err)
	}
	if want := "another ctguard holds the state lock in " + filepath.Dir(s.Path()); err.Error() != want {
		t.Fatalf("second Lock error = %q, want %q", err, want)
	}
	unlock()
	unlock() // idempotent
	unlock2, err := other.Lock()
	if err != nil {
		t.Fatalf("Lock after unlock: %v", err)
	}
	unlock2()

	// A holder that lets go within lockWait is waited for.
	unlock3, err := s.Lock()
	if err != nil {
		t.Fatal(err)
	}
	time.AfterFunc(30*time.Millisecond, unlock3)
	unlock2, err = other.Lock()
	if err != nil {
		t.Fatalf("Lock after unlock: %v", err)
	}
	unlock2()
}

func TestPendingSemantics(t *testing.T) {
	s := newStore(t)
	j, err := s.Load()
	if err != nil {
		t.Fatal(err)
	}
	if j.Latest() != nil || j.Pending != nil {
		t.Fatal("empty journal has revisions")
	}
	if err := j.Commit(); !errors.Is(err, ErrNoPending) {
		t.Fatalf("Commit without Begin = %v, want ErrNoPending", err)
	}

	// An apply is saved as pending before the kernel is touched ...
	if r := j.Begin(Revision{AppliedAt: t0, Source: "a.yaml", Policies: []policy.Policy{dropPolicy()}}); r.Number != 1 {
		t.Fatalf("first revision number %d", r.Number)
	}
	if err := s.Save(j); err != nil {
		t.Fatal(err)
	}
	// ... so a crash now leaves an interrupted apply on disk.
	j, err = s.Load()
	if err != nil {
		t.Fatal(err)
	}
	if j.Pending == nil || j.Pending.Source != "a.yaml" || j.Latest() != nil {
		t.Fatalf("interrupted apply not visible: %+v", j)
	}
	// A new apply replaces the interrupted one and keeps its number.
	if r := j.Begin(Revision{AppliedAt: t0, Source: "b.yaml"}); r.Number != 1 {
		t.Fatalf("retry numbered %d", r.Number)
	}
	if err := j.Commit(); err != nil {
		t.Fatal(err)
	}
	if j.Pending != nil || j.Latest().Source != "b.yaml" || j.Latest().Number != 1 {
		t.Fatalf("after Commit: %+v", j)
	}

	for i := 2; i <= MaxRevisions+3; i++ {
		if r := j.Begin(Revision{Source: "c.yaml"}); r.Number != i {
			t.Fatalf("revision %d numbered %d", i, r.Number)
		}
		if err := j.Commit(); err != nil {
			t.Fatal(err)
		}
	}
	if len(j.Revisions) != MaxRevisions || j.Revisions[0].Number != 4 || j.Latest().Number != MaxRevisions+3 {
		t.Fatalf("kept revisions %d..%d (%d)", j.Revisions[0].Number, j.Latest().Number, len(j.Revisions))
	}
}

func TestCheckNetNS(t *testing.T) {
	tests := []struct {
		journal, current string
		wantErr          bool
	}{
		{"", "net:[1]", false},
		{"net:[1]", "net:[1]", false},
		{"net:[1]", "net:[2]", true},
	}
	for _, tt := range tests {
		err := (&Journal{NetNS: tt.journal}).CheckNetNS(tt.current)
		if tt.wantErr != errors.Is(err, ErrOtherNetNS) {
			t.Errorf("journal %q, current %q: error %v", tt.journal, tt.current, err)
		}
	}
}

func TestHoldControllerExcludesOthers(t *testing.T) {
	s := newStore(t)
	release, err := s.HoldController("run")
	if err != nil {
		t.Fatal(err)
	}
	other, err := Open(filepath.Dir(s.Path()))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := other.HoldController("apply"); !errors.Is(err, ErrControllerRunning) {
		t.Fatalf("second HoldController: %v, want ErrControllerRunning", err)
	}
	release()
	release2, err := other.HoldController("apply")
	if err != nil {
		t.Fatalf("HoldController after release: %v", err)
	}
	release2()
}
