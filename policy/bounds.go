package policy

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"strings"
	"unicode/utf8"

	"golang.org/x/sys/unix"
)

// ctguard runs as root and reloads its policies on every change: every
// input is bounded, and a policy path never blocks it.

// MaxFileSize is the largest policy file ctguard reads.
const MaxFileSize = 16 << 20

// MaxErrors is how many problems Load and Parse report; past it they stop
// and say so.
const MaxErrors = 50

// A message quotes an offending value, key or name in full up to
// maxQuoted bytes, and only its first clippedTo bytes beyond.
const (
	maxQuoted = 200
	clippedTo = 64
)

// ErrNotRegular is wrapped by the error for a policy path that is neither a
// regular file nor a directory (a FIFO, a device, a socket), or a directory
// entry named *.yaml or *.yml that is not a regular file.
var ErrNotRegular = errors.New("not a regular file")

// ErrTooLarge is wrapped by the error for a policy file over MaxFileSize.
var ErrTooLarge = fmt.Errorf("larger than %d MiB", MaxFileSize>>20)

// readFile reads a policy file without blocking on a FIFO or device: it
// opens with O_NONBLOCK and checks the open file before reading at most
// MaxFileSize bytes.
func readFile(path string) ([]byte, error) {
	f, err := os.OpenFile(path, os.O_RDONLY|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("%w (%s): ctguard reads policies from regular files only", ErrNotRegular, kindOf(fi.Mode()))
	}
	if fi.Size() > MaxFileSize {
		return nil, fmt.Errorf("%w (%d bytes)", ErrTooLarge, fi.Size())
	}
	b, err := io.ReadAll(io.LimitReader(f, MaxFileSize+1))
	if err != nil {
		return nil, err
	}
	if len(b) > MaxFileSize {
		return nil, fmt.Errorf("%w (it grew while read)", ErrTooLarge)
	}
	return b, nil
}

// kindOf names a file type for a message.
func kindOf(m fs.FileMode) string {
	switch {
	case m&fs.ModeNamedPipe != 0:
		return "a named pipe"
	case m&fs.ModeCharDevice != 0:
		return "a character device"
	case m&fs.ModeDevice != 0:
		return "a block device"
	case m&fs.ModeSocket != 0:
		return "a socket"
	case m.IsDir():
		return "a directory"
	case m&fs.ModeSymlink != 0:
		return "a symlink"
	}
	return "a special file"
}

// clip shortens a long s for a message, saying how long it was.
func clip(s string) string {
	if len(s) <= maxQuoted {
		return s
	}
	cut := clippedTo
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return fmt.Sprintf("%s...(%d bytes)", s[:cut], len(s))
}

// clipArgs clips the string arguments of a message.
func clipArgs(args []any) []any {
	for i, a := range args {
		if s, ok := a.(string); ok {
			args[i] = clip(s)
		}
	}
	return args
}

// yamlLine finds the line of a yaml.v3 error that carries none (an
// unknown alias, invalid UTF-8, a control character) in data; 1 when it
// cannot tell.
func yamlLine(data []byte, msg string) int {
	offset := -1
	switch {
	case strings.HasPrefix(msg, "unknown anchor '"):
		name, _, _ := strings.Cut(strings.TrimPrefix(msg, "unknown anchor '"), "'")
		offset = bytes.Index(data, []byte("*"+name))
	case strings.Contains(msg, "UTF-8"):
		for i := 0; i < len(data); {
			r, size := utf8.DecodeRune(data[i:])
			if r == utf8.RuneError && size <= 1 {
				offset = i
				break
			}
			i += size
		}
	case strings.Contains(msg, "control characters"):
		offset = bytes.IndexFunc(data, func(r rune) bool {
			return r < ' ' && r != '\t' && r != '\n' && r != '\r' || r == 0x7f || r >= 0x80 && r < 0xa0 && r != 0x85
		})
	}
	if offset < 0 {
		return 1
	}
	return bytes.Count(data[:offset], []byte("\n")) + 1
}
