package journal

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// DefaultDir is the default state directory (--state-dir).
const DefaultDir = "/var/lib/ctguard"

// File names inside the state directory.
const (
	FileName = "journal.json"
	LockName = "lock"
	// LiveName is the status snapshot a running controller keeps.
	LiveName = "live.json"
	// ControllerLockName is held by a running controller for its lifetime.
	ControllerLockName = "controller.lock"
	// tempSuffix ends the names of the temporary files Save and SaveLive
	// write before renaming; nothing reads them, so a crash mid-write
	// leaves the old file.
	tempSuffix = ".tmp-*"
)

// Errors callers branch on.
var (
	// ErrControllerRunning: a "ctguard run" manages the state directory.
	ErrControllerRunning = errors.New(`"ctguard run" manages this state directory`)
	// ErrLocked: another process holds the state lock.
	ErrLocked = errors.New("another ctguard holds the state lock")
)

// Store is the journal file of one state directory.
type Store struct {
	dir string
	// mu guards cache, the policy files decoded or written lately.
	mu    sync.Mutex
	cache policyCache
}

// Open returns the store in dir, creating dir with mode 0700 if needed. A
// symlink (systemd's DynamicUser= makes /var/lib/NAME one) is resolved
// once, here, and the store uses the directory it names. It refuses
// (ErrUntrusted) a directory the user running ctguard does not own, or
// that group or others can write.
func Open(dir string) (*Store, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("state directory: %w", err)
	}
	resolved, err := filepath.EvalSymlinks(dir)
	if err != nil {
		return nil, fmt.Errorf("state directory: %w", err)
	}
	d, err := openDir(resolved)
	if err != nil {
		return nil, err
	}
	d.Close()
	return &Store{dir: resolved}, nil
}

// Path returns the journal file's path.
func (s *Store) Path() string { return filepath.Join(s.dir, FileName) }

// Load reads the journal. A missing file gives an empty journal of
// CurrentVersion, not an error. A file the user running ctguard does not
// own, or others can write, gives ErrUntrusted; one that does not decode,
// or names a sysctl other than the one ctguard owns, gives ErrDamaged.
func (s *Store) Load() (*Journal, error) {
	b, err := readTrusted(s.Path())
	if errors.Is(err, fs.ErrNotExist) {
		return &Journal{Version: CurrentVersion}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("load journal: %w", err)
	}
	var dj diskJournal
	if err := json.Unmarshal(b, &dj); err != nil {
		return nil, fmt.Errorf("load journal %s: %w: %w", s.Path(), ErrDamaged, err)
	}
	if dj.Version != CurrentVersion && dj.Version != 1 {
		return nil, fmt.Errorf("load journal %s: %w %d (this ctguard reads 1 and %d)", s.Path(), ErrUnsupportedVersion, dj.Version, CurrentVersion)
	}
	j, err := s.resolve(&dj)
	if err != nil {
		return nil, fmt.Errorf("load journal %s: %w", s.Path(), err)
	}
	if err := j.validate(); err != nil {
		return nil, fmt.Errorf("load journal %s: %w: %w", s.Path(), ErrDamaged, err)
	}
	return j, nil
}

// resolve turns the journal as read into a Journal of CurrentVersion:
// version 1 holds its policies inline, version 2 by reference.
func (s *Store) resolve(dj *diskJournal) (*Journal, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	refs := map[string]bool{}
	rev := func(d diskRevision) (Revision, error) {
		r := d.Revision
		r.Policies = d.Policies
		if dj.Version == 1 {
			return r, nil
		}
		ps, err := s.loadPolicies(d.PoliciesRef)
		if err != nil {
			return Revision{}, fmt.Errorf("revision %d: %w", d.Number, err)
		}
		refs[d.PoliciesRef] = true
		r.Policies = ps
		return r, nil
	}
	j := dj.Journal
	j.Version = CurrentVersion
	j.Revisions = nil
	for _, d := range dj.Revisions {
		r, err := rev(d)
		if err != nil {
			return nil, err
		}
		j.Revisions = append(j.Revisions, r)
	}
	if dj.Pending != nil {
		r, err := rev(*dj.Pending)
		if err != nil {
			return nil, err
		}
		j.Pending = &r
	}
	if dj.Version != 1 {
		s.cache.keep(refs)
	}
	return &j, nil
}

// Save replaces the journal atomically with j, stamped CurrentVersion: it
// writes a temporary file in the same directory, syncs it, renames it over
// journal.json and syncs the directory. The file has mode 0600. Writers
// hold the state lock (Lock).
func (s *Store) Save(j *Journal) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := diskJournal{Journal: *j}
	out.Version = CurrentVersion
	refs := map[string]bool{}
	rev := func(r Revision) (diskRevision, error) {
		ref, err := s.savePolicies(r.Policies)
		if err != nil {
			return diskRevision{}, fmt.Errorf("save policies of revision %d: %w", r.Number, err)
		}
		refs[ref] = true
		r.Policies = nil
		return diskRevision{Revision: r, PoliciesRef: ref}, nil
	}
	for _, r := range j.Revisions {
		d, err := rev(r)
		if err != nil {
			return fmt.Errorf("save journal %s: %w", s.Path(), err)
		}
		out.Revisions = append(out.Revisions, d)
	}
	if j.Pending != nil {
		d, err := rev(*j.Pending)
		if err != nil {
			return fmt.Errorf("save journal %s: %w", s.Path(), err)
		}
		out.Pending = &d
	}
	b, err := json.MarshalIndent(&out, "", "  ")
	if err != nil {
		return fmt.Errorf("save journal: %w", err)
	}
	b = append(b, '\n')
	if err := s.replace(FileName, b); err != nil {
		return fmt.Errorf("save journal %s: %w", s.Path(), err)
	}
	s.cache.keep(refs)
	if err := s.removeUnreferenced(refs); err != nil {
		return fmt.Errorf("save journal %s: remove policy files no revision names: %w", s.Path(), err)
	}
	return nil
}

// SaveLive replaces live.json, the running controller's status snapshot,
// atomically with v as JSON. It needs no lock: there is one writer.
func (s *Store) SaveLive(v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err == nil {
		err = s.replace(LiveName, append(b, '\n'))
	}
	if err != nil {
		return fmt.Errorf("save live status: %w", err)
	}
	return nil
}

// LoadLive decodes live.json into v; a missing file matches fs.ErrNotExist.
func (s *Store) LoadLive(v any) error {
	b, err := readTrusted(filepath.Join(s.dir, LiveName))
	if err != nil {
		return err
	}
	if err := json.Unmarshal(b, v); err != nil {
		return fmt.Errorf("load live status %s: %w", filepath.Join(s.dir, LiveName), err)
	}
	return nil
}

// replace writes b to a temporary file and renames it over name.
func (s *Store) replace(name string, b []byte) (err error) {
	f, err := os.CreateTemp(s.dir, name+tempSuffix) // mode 0600
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(f.Name())
		}
	}()
	if _, err := f.Write(b); err != nil {
		return err
	}
	if err := f.Sync(); err != nil {
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Rename(f.Name(), filepath.Join(s.dir, name)); err != nil {
		return err
	}
	return s.syncDir()
}

// Remove deletes the journal and the live status; missing files are not
// an error.
func (s *Store) Remove() error {
	for _, name := range []string{FileName, LiveName} {
		if err := os.Remove(filepath.Join(s.dir, name)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("remove journal: %w", err)
		}
	}
	if err := s.removeUnreferenced(nil); err != nil {
		return fmt.Errorf("remove journal: %w", err)
	}
	if err := s.syncDir(); err != nil {
		return fmt.Errorf("remove journal: %w", err)
	}
	return nil
}

// syncDir makes a rename or removal in the state directory durable.
func (s *Store) syncDir() error {
	d, err := os.Open(s.dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// lockWait is how long Lock waits for another ctguard to release the
// state lock: a one-shot command and a running controller's reconcile
// each hold it only briefly.
var lockWait = 5 * time.Second

// Lock takes the state lock (flock on dir/lock), waiting up to a few
// seconds for another holder. While it is held no other ctguard can take
// it; one that waited in vain gets an error wrapping ErrLocked. It also
// removes temporary files a crashed Save left behind. Call unlock once
// done; calling it again does nothing.
func (s *Store) Lock() (unlock func(), err error) {
	f, err := openFile(filepath.Join(s.dir, LockName), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("state lock: %w", err)
	}
	err = flockWait(f, func(late bool) error {
		if late {
			return fmt.Errorf("%w in %s", ErrLocked, s.dir)
		}
		return nil
	})
	if err != nil {
		f.Close()
		if errors.Is(err, ErrLocked) {
			return nil, err
		}
		return nil, fmt.Errorf("state lock %s: %w", s.dir, err)
	}
	if err := s.removeTemps(); err != nil {
		f.Close()
		return nil, fmt.Errorf("state lock %s: %w", s.dir, err)
	}
	var once sync.Once
	return func() { once.Do(func() { f.Close() }) }, nil
}

// RemoveTemps removes the temporary files a crashed Save or SaveLive left
// behind. Lock does it; a controller does it at start, before it writes.
func (s *Store) RemoveTemps() error { return s.removeTemps() }

// removeTemps removes leftover temporary files of Save and SaveLive.
func (s *Store) removeTemps() error {
	entries, err := os.ReadDir(s.dir)
	if err != nil {
		return err
	}
	for _, e := range entries {
		journalTemp, _ := filepath.Match(FileName+tempSuffix, e.Name())
		liveTemp, _ := filepath.Match(LiveName+tempSuffix, e.Name())
		policyTemp, _ := filepath.Match(policyFilePrefix+"*"+policyFileSuffix+tempSuffix, e.Name())
		if !journalTemp && !liveTemp && !policyTemp {
			continue
		}
		if err := os.Remove(filepath.Join(s.dir, e.Name())); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return err
		}
	}
	return nil
}

// HoldController takes the controller lock for role ("run" for a running
// controller, which holds it for its lifetime, or the name of a one-shot
// command that changes the kernel and holds it briefly), so they never
// fight a controller that would undo them at its next reconcile. The lock
// file names its holder. A controller holding it gives an error wrapping
// ErrControllerRunning at once; a one-shot holder is waited for up to a
// few seconds, then gives ErrLocked naming it. Call release once done.
func (s *Store) HoldController(role string) (release func(), err error) {
	path := filepath.Join(s.dir, ControllerLockName)
	f, err := openFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("controller lock: %w", err)
	}
	err = flockWait(f, func(late bool) error {
		holder := readHolder(f)
		switch {
		case strings.HasPrefix(holder, "run "):
			return fmt.Errorf("%w (ctguard %s, state dir %s)", ErrControllerRunning, holder, s.dir)
		case !late:
			return nil
		case holder == "":
			holder = "a ctguard command"
		default:
			holder = "one-shot ctguard " + holder
		}
		return fmt.Errorf("%w: %s holds %s; try again when it is done", ErrLocked, holder, path)
	})
	if err != nil {
		f.Close()
		if errors.Is(err, ErrLocked) || errors.Is(err, ErrControllerRunning) {
			return nil, err
		}
		return nil, fmt.Errorf("controller lock %s: %w", s.dir, err)
	}
	// Name the holder for whoever waits (best effort: a read-only lock
	// file still locks).
	if err := f.Truncate(0); err == nil {
		_, _ = f.WriteAt([]byte(fmt.Sprintf("%s pid %d\n", role, os.Getpid())), 0)
	}
	var once sync.Once
	return func() { once.Do(func() { f.Close() }) }, nil
}

// readHolder reads the "ROLE pid N" line a holder wrote into its lock file.
func readHolder(f *os.File) string {
	b := make([]byte, 64)
	n, _ := f.ReadAt(b, 0)
	line, _, _ := strings.Cut(string(b[:n]), "\n")
	return strings.Map(func(r rune) rune {
		if r < ' ' || r > '~' {
			return -1
		}
		return r
	}, line)
}

// flockWait takes an exclusive flock on f, polling every 50 ms while
// another process holds it. Each time it is held, busy decides: late says
// lockWait has passed since the first try, and an error from busy ends the
// wait with that error. A flock error other than "held" is returned as is.
func flockWait(f *os.File, busy func(late bool) error) error {
	deadline := time.Now().Add(lockWait)
	for {
		err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
		if !errors.Is(err, unix.EWOULDBLOCK) {
			return err
		}
		if err := busy(time.Now().After(deadline)); err != nil {
			return err
		}
		time.Sleep(50 * time.Millisecond)
	}
}
