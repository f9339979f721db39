package journal

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

// procLocks lists every file lock on the system, one a line.
const procLocks = "/proc/locks"

// ControllerHeld reports whether a process holds the controller lock
// (HoldController) now: a running "ctguard run", or briefly a one-shot
// apply or rollback. It reads /proc/locks and takes no lock itself, so it
// never makes a starting controller fail, and it holds across PID
// namespaces and PID reuse, where signalling a recorded PID does not.
func (s *Store) ControllerHeld() (bool, error) {
	var st unix.Stat_t
	err := unix.Stat(filepath.Join(s.dir, ControllerLockName), &st)
	if errors.Is(err, unix.ENOENT) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("controller lock: %w", err)
	}
	f, err := os.Open(procLocks)
	if err != nil {
		return false, fmt.Errorf("controller lock: %w", err)
	}
	defer f.Close()
	return flockHeld(io.LimitReader(f, 16<<20), unix.Major(st.Dev), unix.Minor(st.Dev), st.Ino)
}

// flockHeld scans /proc/locks text for a FLOCK lock on the file with
// device major:minor and inode ino. A line reads, e.g.,
//
//	3: FLOCK  ADVISORY  WRITE 1234 fe:00:5309760 0 EOF
//
// with the device numbers in hex; a blocked waiter's line has "->" after
// the number and does not count.
func flockHeld(r io.Reader, major, minor uint32, ino uint64) (bool, error) {
	want := fmt.Sprintf("%02x:%02x:%d", major, minor, ino)
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 6 || fields[1] != "FLOCK" {
			continue
		}
		// fields: "N:", FLOCK, ADVISORY, WRITE|READ, pid, dev:ino, ...
		if fields[5] == want {
			return true, nil
		}
	}
	if err := sc.Err(); err != nil {
		return false, fmt.Errorf("controller lock: read %s: %w", procLocks, err)
	}
	return false, nil
}
