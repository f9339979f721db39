package journal

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/ctguard/ctguard/internal/netns"
)

func TestCurrentBootID(t *testing.T) {
	id, err := CurrentBootID()
	if err != nil {
		t.Fatal(err)
	}
	again, err := CurrentBootID()
	if err != nil || again != id {
		t.Fatalf("CurrentBootID = %q then %q, %v", id, again, err)
	}
	cur, err := netns.Current()
	if err != nil {
		t.Fatal(err)
	}
	full, err := CurrentIdentity(cur)
	if err != nil {
		t.Fatal(err)
	}
	if full.BootID != id || full.NetNS != cur || full.BootTime.IsZero() || full.BootTime.After(time.Now()) {
		t.Fatalf("CurrentIdentity = %+v", full)
	}
}

func TestCheckIdentity(t *testing.T) {
	const bootA, bootB = "11111111-1111-1111-1111-111111111111", "22222222-2222-2222-2222-222222222222"
	booted := t0
	here := Identity{NetNS: "net:[1]", BootID: bootA, BootTime: booted}
	tests := []struct {
		name    string
		journal Journal
		id      Identity
		want    error
	}{
		{"new journal", Journal{}, here, nil},
		{"same namespace and boot", Journal{NetNS: "net:[1]", BootID: bootA}, here, nil},
		{"earlier boot, same namespace inode", Journal{NetNS: "net:[1]", BootID: bootB}, here, ErrEarlierBoot},
		{"earlier boot, other namespace inode", Journal{NetNS: "net:[9]", BootID: bootB}, here, ErrEarlierBoot},
		{"same boot, other namespace", Journal{NetNS: "net:[9]", BootID: bootA}, here, ErrOtherNetNS},
		{"boot unknown here: namespace only", Journal{NetNS: "net:[9]", BootID: bootB}, Identity{NetNS: "net:[1]"}, ErrOtherNetNS},
		{"no boot id, same namespace", Journal{NetNS: "net:[1]", savedAt: booted.Add(-time.Hour)}, here, nil},
		{"no boot id, other namespace, saved before this boot", Journal{NetNS: "net:[9]", savedAt: booted.Add(-time.Hour)}, here, ErrEarlierBoot},
		{"no boot id, other namespace, saved during this boot", Journal{NetNS: "net:[9]", savedAt: booted.Add(time.Hour)}, here, ErrOtherNetNS},
	}
	for _, tt := range tests {
		err := tt.journal.Check(tt.id)
		if tt.want == nil && err != nil || tt.want != nil && !errors.Is(err, tt.want) {
			t.Errorf("%s: Check = %v, want %v", tt.name, err, tt.want)
		}
	}
}

func TestLoadForDatesOldJournals(t *testing.T) {
	s := newStore(t)
	if err := s.Save(&Journal{NetNS: "net:[9]"}); err != nil {
		t.Fatal(err)
	}
	here := Identity{NetNS: "net:[1]", BootID: "11111111-1111-1111-1111-111111111111", BootTime: time.Now()}
	old := time.Now().Add(-time.Hour)
	if err := os.Chtimes(s.Path(), old, old); err != nil {
		t.Fatal(err)
	}
	if j, err := s.LoadFor(here); !errors.Is(err, ErrEarlierBoot) || j == nil || j.NetNS != "net:[9]" {
		t.Fatalf("LoadFor a journal saved before this boot: %v, %+v", err, j)
	}
	here.BootTime = old.Add(-time.Hour)
	if _, err := s.LoadFor(here); !errors.Is(err, ErrOtherNetNS) {
		t.Fatalf("LoadFor a journal saved during this boot: %v, want ErrOtherNetNS", err)
	}
}

func TestArchiveKeepsTheNewest(t *testing.T) {
	s := newStore(t)
	now := t0
	var archived []string
	for i := range MaxArchives + 2 {
		if err := s.Save(&Journal{NetNS: "net:[1]", BootID: "boot"}); err != nil {
			t.Fatal(err)
		}
		path, err := s.Archive(now.Add(time.Duration(i) * time.Second))
		if err != nil {
			t.Fatal(err)
		}
		archived = append(archived, path)
		if _, err := os.Stat(s.Path()); !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("journal still there after Archive: %v", err)
		}
	}
	got, err := s.Archives()
	if err != nil {
		t.Fatal(err)
	}
	want := archived[2:]
	if len(got) != len(want) {
		t.Fatalf("archives %v, want %v", got, want)
	}
	for i := range got {
		if got[i] != want[i] {
			t.Fatalf("archives %v, want %v", got, want)
		}
	}
	b, err := os.ReadFile(got[0])
	if err != nil || len(b) == 0 {
		t.Fatalf("archive %s unreadable: %v", got[0], err)
	}
	// Archives never look like a journal's temporary files, which Lock removes.
	if ok, _ := filepath.Match("*"+tempSuffix, filepath.Base(got[0])); ok {
		t.Fatalf("archive name %s matches *%s", got[0], tempSuffix)
	}
	if _, err := s.Archive(now); err == nil {
		t.Fatal("Archive without a journal succeeded")
	}
}
