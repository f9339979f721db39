package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ctguard/ctguard/controller/journal"
)

// editJournal rewrites fields of the state directory's journal.json.
func editJournal(t *testing.T, stateDir string, fields map[string]string) {
	t.Helper()
	path := filepath.Join(stateDir, journal.FileName)
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var j map[string]any
	if err := json.Unmarshal(b, &j); err != nil {
		t.Fatal(err)
	}
	for k, v := range fields {
		j[k] = v
	}
	if b, err = json.Marshal(j); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

// TestPrivilegedRunArchivesJournalOfEarlierBoot: a journal edited to carry
// another boot id (and another namespace inode, as a namespace re-created
// at boot has) is archived by "ctguard run", which starts fresh and
// converges; a journal of another namespace in this boot is still refused.
func TestPrivilegedRunArchivesJournalOfEarlierBoot(t *testing.T) {
	t.Parallel()
	c := newCLI(t)
	path := writePolicy(t, dropPolicy("wan", "198.19.0.0/24"))
	c.mustRun(0, "apply", "-f", path)
	boot, err := journal.CurrentBootID()
	if err != nil {
		t.Fatal(err)
	}
	netns := strings.TrimSpace(string(c.ns.MustRun(t, "readlink", "/proc/self/ns/net")))
	var j journal.Journal
	b, _ := os.ReadFile(filepath.Join(c.stateDir, journal.FileName))
	if err := json.Unmarshal(b, &j); err != nil || j.BootID != boot || j.NetNS != netns {
		t.Fatalf("journal after apply: boot %q netns %q (%v), want %s %s", j.BootID, j.NetNS, err, boot, netns)
	}

	// A reboot: the kernel state is gone, the journal says another boot.
	c.ns.MustRun(t, "nft", "delete", "table", "inet", "ctguard")
	const earlier = "00000000-1111-2222-3333-444444444444"
	editJournal(t, c.stateDir, map[string]string{"bootId": earlier, "netns": "net:[4026531999]"})
	// plan and status read it as empty and leave it in place.
	c.mustRun(2, "plan", "-f", path)
	if out := c.mustRun(0, "status"); !strings.Contains(out, "none (nothing applied)") {
		t.Fatalf("status with an earlier boot's journal:\n%s", out)
	}

	p := startRun(t, c.ns, c.stateDir, "-f", path)
	p.waitReady()
	if !strings.Contains(tableText(c.ns), "198.19.0.0/24") {
		t.Fatalf("run did not converge:\n%s", tableText(c.ns))
	}
	recs := p.logged("journal of an earlier boot archived; starting fresh")
	if len(recs) != 1 {
		t.Fatalf("archive logged %d times, want once:\n%s", len(recs), p.logs.String())
	}
	archive, _ := recs[0]["archive"].(string)
	b, err = os.ReadFile(archive)
	if err != nil || !strings.Contains(string(b), earlier) {
		t.Fatalf("archive %q: %v, content %s", archive, err, b)
	}
	if revs, pending := journalRevisions(t, c.stateDir); len(revs) != 1 || revs[0] != 1 || pending {
		t.Fatalf("fresh journal revisions %v pending %t, want [1]", revs, pending)
	}
	b, _ = os.ReadFile(filepath.Join(c.stateDir, journal.FileName))
	if err := json.Unmarshal(b, &j); err != nil || j.BootID != boot || j.NetNS != netns {
		t.Fatalf("fresh journal: boot %q netns %q (%v), want %s %s", j.BootID, j.NetNS, err, boot, netns)
	}
	p.stop(syscall.SIGTERM)

	// The same boot, another namespace: refused, nothing archived.
	editJournal(t, c.stateDir, map[string]string{"netns": "net:[4026531999]"})
	p = startRun(t, c.ns, c.stateDir, "-f", path)
	select {
	case <-p.done:
	case <-time.After(20 * time.Second):
		t.Fatal("run with another namespace's journal still running after 20s")
	}
	if p.exit != 1 || !strings.Contains(p.logs.String(), "journal belongs to another network namespace") {
		t.Fatalf("run with another namespace's journal: exit %d, logs:\n%s", p.exit, p.logs.String())
	}
	if _, errOut, code := c.run("apply", "-f", path); code != 1 || !strings.Contains(errOut, "another network namespace") {
		t.Fatalf("apply with another namespace's journal: exit %d, %s", code, errOut)
	}
	if arch, _ := filepath.Glob(filepath.Join(c.stateDir, journal.FileName+".earlier-boot-*")); len(arch) != 1 {
		t.Fatalf("archives %v, want the one from the earlier boot", arch)
	}
}
