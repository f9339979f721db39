package journal

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// ErrEarlierBoot: the journal was written during an earlier boot. The
// kernel state it describes (table, sysctl, flags) died with that boot.
var ErrEarlierBoot = errors.New("journal is from an earlier boot")

// bootIDPath holds the kernel's random identifier of the current boot.
const bootIDPath = "/proc/sys/kernel/random/boot_id"

// CurrentBootID returns the kernel's identifier of the current boot, a
// UUID that changes at every boot and is the same in every namespace.
func CurrentBootID() (string, error) {
	b, err := os.ReadFile(bootIDPath)
	if err != nil {
		return "", fmt.Errorf("boot id: %w", err)
	}
	id := strings.TrimSpace(string(b))
	if len(id) != 36 {
		return "", fmt.Errorf("boot id: %s holds %q, not a UUID", bootIDPath, id)
	}
	return id, nil
}

// Identity is what a journal belongs to: one network namespace during one
// boot. A namespace's identity (its nsfs inode) is unique only within a
// boot: namespaces re-created at boot, and the host's on kernels before
// 6.18, get a new inode every boot.
type Identity struct {
	// NetNS is the namespace's nsfs identity, e.g. "net:[4026531840]".
	NetNS string
	// BootID is CurrentBootID; empty when unknown (no boot check).
	BootID string
	// BootTime is when this boot started; it dates journals written by
	// a ctguard that did not record the boot id yet. Zero: unknown.
	BootTime time.Time
}

// CurrentIdentity returns the identity of the namespace netns during the
// current boot.
func CurrentIdentity(netns string) (Identity, error) {
	id := Identity{NetNS: netns}
	var err error
	if id.BootID, err = CurrentBootID(); err != nil {
		return Identity{}, err
	}
	id.BootTime = bootTime()
	return id, nil
}

// bootTime is the wall-clock time the current boot started (CLOCK_BOOTTIME
// counts suspended time too), or zero if it cannot be read.
func bootTime() time.Time {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_BOOTTIME, &ts); err != nil {
		return time.Time{}
	}
	return time.Now().Add(-time.Duration(ts.Nano()))
}

// Check tells whether the journal describes this identity's kernel state.
// It returns nil for a new journal or one of this namespace and boot; an
// error wrapping ErrEarlierBoot for a journal written during another boot
// (whatever its namespace: the namespace identity of another boot means
// nothing now); an error wrapping ErrOtherNetNS for another namespace of
// this boot. A journal without a boot id (written before ctguard recorded
// it) counts as from an earlier boot when its namespace differs and it was
// last saved before this boot started.
func (j *Journal) Check(id Identity) error {
	if j.NetNS == "" && j.BootID == "" {
		return nil
	}
	if j.BootID != "" && id.BootID != "" && j.BootID != id.BootID {
		return fmt.Errorf("%w: journal is for boot %s, this is boot %s", ErrEarlierBoot, j.BootID, id.BootID)
	}
	if j.BootID == "" && j.NetNS != id.NetNS && !id.BootTime.IsZero() && !j.savedAt.IsZero() && j.savedAt.Before(id.BootTime) {
		return fmt.Errorf("%w: journal of %s was last saved at %s, before this boot started at %s", ErrEarlierBoot,
			j.NetNS, j.savedAt.UTC().Format(time.RFC3339), id.BootTime.UTC().Format(time.RFC3339))
	}
	return j.CheckNetNS(id.NetNS)
}

// LoadFor loads the journal and checks it against id (Journal.Check). On
// ErrEarlierBoot or ErrOtherNetNS it returns the journal with the error.
func (s *Store) LoadFor(id Identity) (*Journal, error) {
	j, err := s.Load()
	if err != nil {
		return nil, err
	}
	if fi, err := os.Stat(s.Path()); err == nil {
		j.savedAt = fi.ModTime()
	}
	return j, j.Check(id)
}

// Stamp records the identity in the journal (it belongs to it from now on).
func (j *Journal) Stamp(id Identity) {
	j.NetNS = id.NetNS
	j.BootID = id.BootID
}

// archivePrefix starts the names of archived journals in the state
// directory; the rest is the UTC time of the archiving.
const archivePrefix = FileName + ".earlier-boot-"

// MaxArchives is how many archived journals the state directory keeps;
// older ones are removed when a new one is archived.
const MaxArchives = 5

// Archive renames the journal to journal.json.earlier-boot-TIME in the
// state directory, keeping it for the operator, and removes the oldest
// archives beyond MaxArchives. It returns the archive's path. The caller
// holds the state lock.
func (s *Store) Archive(now time.Time) (string, error) {
	name := archivePrefix + now.UTC().Format("20060102T150405.000000000Z")
	path := filepath.Join(s.dir, name)
	if err := os.Rename(s.Path(), path); err != nil {
		return "", fmt.Errorf("archive journal: %w", err)
	}
	if err := s.syncDir(); err != nil {
		return "", fmt.Errorf("archive journal: %w", err)
	}
	if err := s.pruneArchives(); err != nil {
		return path, fmt.Errorf("archive journal: prune old archives: %w", err)
	}
	return path, nil
}

// Archives lists the archived journals' paths, oldest first.
func (s *Store) Archives() ([]string, error) {
	entries, err := os.ReadDir(s.dir)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, e := range entries {
		if e.Type().IsRegular() && strings.HasPrefix(e.Name(), archivePrefix) {
			out = append(out, filepath.Join(s.dir, e.Name()))
		}
	}
	slices.Sort(out) // the time in the name sorts
	return out, nil
}

// pruneArchives keeps the newest MaxArchives archives.
func (s *Store) pruneArchives() error {
	all, err := s.Archives()
	if err != nil || len(all) <= MaxArchives {
		return err
	}
	for _, p := range all[:len(all)-MaxArchives] {
		if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return err
		}
	}
	return s.syncDir()
}
