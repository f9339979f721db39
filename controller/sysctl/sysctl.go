// Package sysctl reads and writes the sysctls of one network namespace.
//
// net.* sysctls are per network namespace, and /proc/sys shows the
// namespace of the thread that opens the file. So every file is opened on a
// locked OS thread switched into the target namespace and back (netns.Do); once open,
// the file stays bound to that namespace and is read or written from any
// thread.
package sysctl

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/ctguard/ctguard/internal/netns"

	"github.com/ctguard/ctguard/policy"
)

// BeLiberal is the global switch of the liberal workaround: 1 turns off TCP
// window checking for every flow of the namespace.
const BeLiberal = policy.GlobalSysctl

// ErrNotOwned reports a write to a sysctl other than BeLiberal: the one
// sysctl ctguard owns, whatever a journal or caller names.
var ErrNotOwned = errors.New("ctguard writes no sysctl but " + BeLiberal)

// ErrInvalidName reports a sysctl name that is not a dotted name of plain
// components (letters, digits, '_' and '-').
var ErrInvalidName = errors.New("invalid sysctl name")

// Sysctl reads and writes the sysctls of one network namespace. A sysctl
// that does not exist (for example nf_conntrack not loaded) gives an error
// matching fs.ErrNotExist.
type Sysctl struct {
	netnsFd int
}

// Open returns a Sysctl for the network namespace open as netnsFd, or for
// the current namespace when netnsFd < 0. The caller keeps netnsFd open for
// as long as it uses the Sysctl.
func Open(netnsFd int) *Sysctl {
	return &Sysctl{netnsFd: netnsFd}
}

// Get returns the value of the dotted sysctl name, without its trailing
// newline.
func (s *Sysctl) Get(name string) (string, error) {
	f, err := s.open(name, os.O_RDONLY)
	if err != nil {
		return "", err
	}
	defer f.Close()
	b, err := io.ReadAll(f)
	if err != nil {
		return "", fmt.Errorf("get sysctl %s: %w", name, err)
	}
	return strings.TrimRight(string(b), "\n"), nil
}

// Set writes value to the dotted sysctl name in a single write. name must
// be BeLiberal (ErrNotOwned otherwise).
func (s *Sysctl) Set(name, value string) error {
	if name != BeLiberal {
		return fmt.Errorf("set sysctl %.64q: %w", name, ErrNotOwned)
	}
	f, err := s.open(name, os.O_WRONLY)
	if err != nil {
		return err
	}
	if _, err := f.WriteString(value); err != nil {
		f.Close()
		return fmt.Errorf("set sysctl %s=%q: %w", name, value, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("set sysctl %s=%q: %w", name, value, err)
	}
	return nil
}

// open opens the /proc/sys file of name from inside the target namespace.
func (s *Sysctl) open(name string, flag int) (*os.File, error) {
	path, err := procPath(name)
	if err != nil {
		return nil, err
	}
	var f *os.File
	err = netns.Do(s.netnsFd, func() (err error) {
		f, err = os.OpenFile(path, flag, 0)
		return err
	})
	if err != nil {
		if f != nil {
			f.Close() // opened, but the thread could not switch back
		}
		return nil, fmt.Errorf("sysctl %s: %w", name, err)
	}
	return f, nil
}

// procPath maps a dotted sysctl name to its /proc/sys file.
func procPath(name string) (string, error) {
	parts := strings.Split(name, ".")
	for _, p := range parts {
		if !validComponent(p) {
			return "", fmt.Errorf("%w: %q", ErrInvalidName, name)
		}
	}
	return "/proc/sys/" + strings.Join(parts, "/"), nil
}

// validComponent reports whether p is a non-empty run of letters, digits,
// '_' and '-'.
func validComponent(p string) bool {
	if p == "" {
		return false
	}
	for _, r := range p {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '_', r == '-':
		default:
			return false
		}
	}
	return true
}
