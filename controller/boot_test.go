package controller

import (
	"context"
	"errors"
	"os"
	"testing"

	"github.com/ctguard/ctguard/controller/journal"
	"github.com/ctguard/ctguard/controller/nft"
)

const bootA, bootB = "aaaaaaaa-0000-0000-0000-000000000001", "bbbbbbbb-0000-0000-0000-000000000002"

// rebooted is the fixture's controller after a reboot: another boot, and
// the namespace's identity changed with it.
func (f *fixture) rebooted(netns, boot string) *Controller {
	return New(Config{Tables: nft.NewFake(), Sysctls: f.sys, Flows: f.flows, Store: f.store, NetNS: netns, BootID: boot})
}

func TestJournalOfEarlierBootIsArchived(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	f.c = f.rebooted("net:[1]", bootA)
	if _, err := f.c.Apply(ctx, mustParse(t, dropDoc)); err != nil {
		t.Fatal(err)
	}
	old, err := os.ReadFile(f.store.Path())
	if err != nil {
		t.Fatal(err)
	}

	after := f.rebooted("net:[7]", bootB)
	// Read-only commands treat it as empty and leave it alone.
	st, err := after.Status(ctx)
	if err != nil || st.Revision != nil {
		t.Fatalf("status after a reboot: revision %+v, %v; want none", st.Revision, err)
	}
	p, err := after.Plan(ctx, mustParse(t, dropDoc))
	if err != nil || p.Empty() {
		t.Fatalf("plan after a reboot: empty %t, %v; want changes", p.Empty(), err)
	}
	if now, _ := os.ReadFile(f.store.Path()); string(now) != string(old) {
		t.Fatal("status or plan changed the journal")
	}
	if arch, _ := f.store.Archives(); len(arch) != 0 {
		t.Fatalf("status or plan archived: %v", arch)
	}

	res, err := after.Apply(ctx, mustParse(t, dropDoc))
	if err != nil {
		t.Fatalf("apply after a reboot: %v", err)
	}
	if res.Revision != 1 {
		t.Fatalf("revision %d after a fresh start, want 1", res.Revision)
	}
	arch, err := f.store.Archives()
	if err != nil || len(arch) != 1 {
		t.Fatalf("archives %v, %v; want one", arch, err)
	}
	if b, _ := os.ReadFile(arch[0]); string(b) != string(old) {
		t.Fatalf("archive %s is not the old journal", arch[0])
	}
	j, err := f.store.Load()
	if err != nil || j.NetNS != "net:[7]" || j.BootID != bootB {
		t.Fatalf("new journal: %+v, %v", j, err)
	}

	// Same boot, another namespace: refused as before, nothing archived.
	other := f.rebooted("net:[8]", bootB)
	if _, err := other.Apply(ctx, mustParse(t, dropDoc)); !errors.Is(err, journal.ErrOtherNetNS) {
		t.Fatalf("apply from another namespace of the same boot: %v, want ErrOtherNetNS", err)
	}
	if _, err := other.Rollback(ctx, true); !errors.Is(err, journal.ErrOtherNetNS) {
		t.Fatalf("rollback from another namespace of the same boot: %v, want ErrOtherNetNS", err)
	}
	if arch, _ := f.store.Archives(); len(arch) != 1 {
		t.Fatalf("archives %v after a refusal, want still one", arch)
	}
}

// A journal written before ctguard recorded boot ids gets this boot's id
// at the next apply of its own namespace.
func TestJournalWithoutBootIDGetsIt(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	if _, err := f.c.Apply(ctx, mustParse(t, dropDoc)); err != nil {
		t.Fatal(err)
	}
	if j, _ := f.store.Load(); j.BootID != "" {
		t.Fatalf("boot id %q without one configured", j.BootID)
	}
	c := f.rebooted("net:[1]", bootA)
	if _, err := c.Apply(ctx, mustParse(t, dropDoc)); err != nil {
		t.Fatal(err)
	}
	if j, _ := f.store.Load(); j.BootID != bootA || len(j.Revisions) != 1 {
		t.Fatalf("journal after apply: boot %q, %d revisions; want %s, 1", j.BootID, len(j.Revisions), bootA)
	}
}
