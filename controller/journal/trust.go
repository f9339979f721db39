package journal

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/user"
	"strconv"

	"github.com/ctguard/ctguard/controller/sysctl"
	"golang.org/x/sys/unix"
)

// ctguard runs as root and acts on what the state directory says (a
// journal names the sysctls rollback restores). So it trusts the directory
// and every file it reads there only if the user running ctguard owns it
// and nobody else can write it, and opens them without following symlinks
// and checks the open file itself (fstat), so nothing can be swapped in
// between the check and the use.

// Errors callers branch on.
var (
	// ErrUntrusted: a state directory or file someone other than the user
	// running ctguard could have written.
	ErrUntrusted = errors.New("untrusted state")
	// ErrDamaged: journal.json cannot be decoded or holds what ctguard
	// never writes.
	ErrDamaged = errors.New("damaged journal")
)

// maxFileSize bounds what ctguard reads from the state directory: a
// journal of MaxRevisions revisions is a few hundred KiB at most.
const maxFileSize = 16 << 20

// openDir opens dir without following a symlink and checks the open
// directory.
func openDir(dir string) (*os.File, error) {
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		if errors.Is(err, unix.ELOOP) || errors.Is(err, unix.ENOTDIR) {
			return nil, fmt.Errorf("%w: state directory %s is not a directory (or is a symlink): point --state-dir at a real directory owned by %s with mode 0700", ErrUntrusted, dir, describeUID(os.Geteuid()))
		}
		return nil, &fs.PathError{Op: "open", Path: dir, Err: err}
	}
	f := os.NewFile(uintptr(fd), dir)
	if err := checkOwned(f, dir, true); err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}

// openFile opens name for reading or writing without following a symlink
// and without blocking (a FIFO), and checks the open file: a regular file
// the user running ctguard owns that nobody else can write.
func openFile(path string, flag int, perm os.FileMode) (*os.File, error) {
	f, err := os.OpenFile(path, flag|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_CLOEXEC, perm)
	if err != nil {
		if errors.Is(err, unix.ELOOP) {
			return nil, fmt.Errorf("%w: %s is a symlink: ctguard never follows one in its state directory; remove it", ErrUntrusted, path)
		}
		return nil, err
	}
	if err := checkOwned(f, path, false); err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}

// checkOwned checks the open file f (a directory when dir).
func checkOwned(f *os.File, path string, dir bool) error {
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		return &fs.PathError{Op: "fstat", Path: path, Err: err}
	}
	kind := "file"
	if dir {
		kind = "state directory"
	}
	want := uint32(unix.S_IFREG)
	if dir {
		want = unix.S_IFDIR
	}
	if st.Mode&unix.S_IFMT != want {
		return fmt.Errorf("%w: %s is not a regular %s: remove it", ErrUntrusted, path, kind)
	}
	euid := os.Geteuid()
	mode := st.Mode & 0o7777
	if int(st.Uid) != euid || mode&0o022 != 0 {
		return fmt.Errorf("%w: %s %s is owned by %s with mode %#o; ctguard runs as %s and trusts only what it owns and nobody else can write (check its content, then: chown %d %s && chmod go-w %s)",
			ErrUntrusted, kind, path, describeUID(int(st.Uid)), mode, describeUID(euid), euid, path, path)
	}
	return nil
}

// describeUID renders a uid with its user name when it has one.
func describeUID(uid int) string {
	if u, err := user.LookupId(strconv.Itoa(uid)); err == nil {
		return fmt.Sprintf("uid %d (%s)", uid, u.Username)
	}
	return fmt.Sprintf("uid %d", uid)
}

// readTrusted reads path, which must pass openFile's checks, up to
// maxFileSize bytes.
func readTrusted(path string) ([]byte, error) {
	f, err := openFile(path, os.O_RDONLY, 0)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxFileSize+1))
	if err != nil {
		return nil, err
	}
	if len(b) > maxFileSize {
		return nil, fmt.Errorf("%s is larger than %d MiB: ctguard never writes such a file", path, maxFileSize>>20)
	}
	return b, nil
}

// validate refuses a journal holding what ctguard never writes: a sysctl
// other than the one it owns, or a value that sysctl cannot take. A
// journal is data, and rollback writes what it names.
func (j *Journal) validate() error {
	check := func(where string, m map[string]string) error {
		for name, v := range m {
			if name != sysctl.BeLiberal {
				return fmt.Errorf("%s names sysctl %.64q: ctguard only ever writes %s", where, name, sysctl.BeLiberal)
			}
			if v != "0" && v != "1" {
				return fmt.Errorf("%s gives %s the value %.16q (not 0 or 1)", where, name, v)
			}
		}
		return nil
	}
	if j.Baseline != nil {
		if err := check("baseline", j.Baseline.Sysctls); err != nil {
			return err
		}
	}
	for _, r := range j.Revisions {
		if err := check(fmt.Sprintf("revision %d", r.Number), r.Sysctls); err != nil {
			return err
		}
	}
	if j.Pending != nil {
		return check("pending revision", j.Pending.Sysctls)
	}
	return nil
}
