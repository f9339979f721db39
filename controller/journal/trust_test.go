package journal

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// nobody is a uid other than the one running the tests.
const nobody = 65534

// chownOrSkip gives path to nobody; only root can.
func chownOrSkip(t *testing.T, path string) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root to chown")
	}
	if err := os.Lchown(path, nobody, nobody); err != nil {
		t.Fatal(err)
	}
}

// TestOpenRefusesDirOfAnotherUser is finding 1 of issue 13: a state
// directory owned by nobody with mode 0700 was accepted, and nobody could
// then write the journal root's rollback acts on.
func TestOpenRefusesDirOfAnotherUser(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "state")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	chownOrSkip(t, dir)
	_, err := Open(dir)
	if !errors.Is(err, ErrUntrusted) {
		t.Fatalf("Open(dir of nobody) error = %v, want ErrUntrusted", err)
	}
	for _, want := range []string{dir, "uid 65534", "chown 0 " + dir} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not name %q", err, want)
		}
	}
}

// TestOpenChecksTheDirASymlinkNames: a state dir given as a symlink (as
// systemd's DynamicUser= makes it) is the directory it names, checked as
// such.
func TestOpenChecksTheDirASymlinkNames(t *testing.T) {
	real := filepath.Join(t.TempDir(), "real")
	if err := os.Mkdir(real, 0o700); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(t.TempDir(), "link")
	if err := os.Symlink(real, link); err != nil {
		t.Fatal(err)
	}
	s, err := Open(link)
	if err != nil || filepath.Dir(s.Path()) != real {
		t.Fatalf("Open(symlink to a trusted dir) = %v, %v; want the store in %s", s, err, real)
	}
	chownOrSkip(t, real)
	if _, err := Open(link); !errors.Is(err, ErrUntrusted) || !strings.Contains(err.Error(), real) {
		t.Fatalf("Open(symlink to a dir of nobody) error = %v, want ErrUntrusted naming %s", err, real)
	}
}

// TestLoadRefusesUntrustedJournal: a journal another user owns, one others
// can write, or a symlink is never read.
func TestLoadRefusesUntrustedJournal(t *testing.T) {
	for name, prepare := range map[string]func(t *testing.T, s *Store){
		"owned by nobody": func(t *testing.T, s *Store) {
			chownOrSkip(t, s.Path())
		},
		"group writable": func(t *testing.T, s *Store) {
			if err := os.Chmod(s.Path(), 0o620); err != nil {
				t.Fatal(err)
			}
		},
		"symlink": func(t *testing.T, s *Store) {
			other := filepath.Join(t.TempDir(), "elsewhere.json")
			if err := os.Rename(s.Path(), other); err != nil {
				t.Fatal(err)
			}
			if err := os.Symlink(other, s.Path()); err != nil {
				t.Fatal(err)
			}
		},
	} {
		t.Run(name, func(t *testing.T) {
			s := newStore(t)
			if err := s.Save(fullJournal()); err != nil {
				t.Fatal(err)
			}
			prepare(t, s)
			if _, err := s.Load(); !errors.Is(err, ErrUntrusted) || !strings.Contains(err.Error(), s.Path()) {
				t.Fatalf("Load error = %v, want ErrUntrusted naming %s", err, s.Path())
			}
		})
	}
}

// TestLoadRefusesForeignSysctl: a journal naming any sysctl but the one
// ctguard owns (net.ipv4.ip_forward was written by rollback --all before)
// or a value it cannot take is damaged, never acted on.
func TestLoadRefusesForeignSysctl(t *testing.T) {
	for name, mutate := range map[string]func(j *Journal){
		"baseline name":  func(j *Journal) { j.Baseline.Sysctls = map[string]string{"net.ipv4.ip_forward": "1"} },
		"baseline value": func(j *Journal) { j.Baseline.Sysctls["net.netfilter.nf_conntrack_tcp_be_liberal"] = "1\n2" },
		"revision name":  func(j *Journal) { j.Revisions[0].Sysctls = map[string]string{"kernel.core_pattern": "|/tmp/x"} },
		"pending name": func(j *Journal) {
			j.Pending = &Revision{Number: 2, Sysctls: map[string]string{"net.ipv4.conf.all.rp_filter": "0"}}
		},
	} {
		t.Run(name, func(t *testing.T) {
			s := newStore(t)
			j := fullJournal()
			mutate(j)
			if err := s.Save(j); err != nil {
				t.Fatal(err)
			}
			if _, err := s.Load(); !errors.Is(err, ErrDamaged) {
				t.Fatalf("Load error = %v, want ErrDamaged", err)
			}
		})
	}
}

func TestLoadDamagedJournal(t *testing.T) {
	for name, content := range map[string]string{"empty": "", "truncated": `{"version": 1, "netns": "net:[`} {
		t.Run(name, func(t *testing.T) {
			s := newStore(t)
			if err := os.WriteFile(s.Path(), []byte(content), 0o600); err != nil {
				t.Fatal(err)
			}
			if _, err := s.Load(); !errors.Is(err, ErrDamaged) {
				t.Fatalf("Load error = %v, want ErrDamaged", err)
			}
		})
	}
}

func TestLocksRefuseFilesOfAnotherUser(t *testing.T) {
	for _, name := range []string{LockName, ControllerLockName} {
		t.Run(name, func(t *testing.T) {
			s := newStore(t)
			path := filepath.Join(filepath.Dir(s.Path()), name)
			if err := os.WriteFile(path, nil, 0o600); err != nil {
				t.Fatal(err)
			}
			chownOrSkip(t, path)
			var err error
			if name == LockName {
				_, err = s.Lock()
			} else {
				_, err = s.HoldController("apply")
			}
			if !errors.Is(err, ErrUntrusted) {
				t.Fatalf("error = %v, want ErrUntrusted", err)
			}
		})
	}
}

// TestTempFilesOfEveryKindRemoved is finding 11: live.json.tmp-* files a
// kill -9 left behind stayed for good.
func TestTempFilesOfEveryKindRemoved(t *testing.T) {
	s := newStore(t)
	dir := filepath.Dir(s.Path())
	for _, name := range []string{"journal.json.tmp-123", "live.json.tmp-456"} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte("{"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.RemoveTemps(); err != nil {
		t.Fatal(err)
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		t.Errorf("%s left behind", e.Name())
	}
}

// TestRemoveTakesLiveStatus: rollback --all removes live.json with the
// journal (finding 11).
func TestRemoveTakesLiveStatus(t *testing.T) {
	s := newStore(t)
	if err := s.Save(fullJournal()); err != nil {
		t.Fatal(err)
	}
	if err := s.SaveLive(map[string]int{"pid": 1}); err != nil {
		t.Fatal(err)
	}
	if err := s.Remove(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(filepath.Dir(s.Path()), LiveName)); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("live.json after Remove: %v", err)
	}
}

// TestOneShotHolderIsNamedAsSuch is part of finding 8 of issue 13: a
// one-shot command behind another got "ctguard run manages this state
// directory" at once, although no run existed.
func TestOneShotHolderIsNamedAsSuch(t *testing.T) {
	defer func(w time.Duration) { lockWait = w }(lockWait)
	lockWait = 200 * time.Millisecond
	s := newStore(t)
	release, err := s.HoldController("apply")
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	_, err = s.HoldController("rollback")
	if !errors.Is(err, ErrLocked) || errors.Is(err, ErrControllerRunning) || !strings.Contains(err.Error(), "one-shot ctguard apply pid ") {
		t.Fatalf("behind a one-shot apply: %v, want ErrLocked naming it", err)
	}
	if waited := time.Since(start); waited < lockWait {
		t.Errorf("gave up after %v, before the lock wait %v", waited, lockWait)
	}
	time.AfterFunc(50*time.Millisecond, release)
	second, err := s.HoldController("rollback")
	if err != nil {
		t.Fatalf("after the one-shot released: %v", err)
	}
	second()

	run, err := s.HoldController("run")
	if err != nil {
		t.Fatal(err)
	}
	defer run()
	if _, err := s.HoldController("apply"); !errors.Is(err, ErrControllerRunning) || !strings.Contains(err.Error(), "run pid ") {
		t.Fatalf("behind run: %v, want ErrControllerRunning naming its pid", err)
	}
}
