package policy

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// loadWithin runs Load(path) and fails the test if it blocks.
func loadWithin(t *testing.T, path string) error {
	t.Helper()
	done := make(chan error, 1)
	go func() {
		_, err := Load(path)
		done <- err
	}()
	select {
	case err := <-done:
		return err
	case <-time.After(5 * time.Second):
		t.Fatalf("Load(%s) blocked", path)
		return nil
	}
}

// TestLoadNeverBlocksOnSpecialFiles is finding 5 of issue 13: -f naming a
// FIFO hung plan and apply for good, and run then ignored SIGTERM.
func TestLoadNeverBlocksOnSpecialFiles(t *testing.T) {
	dir := t.TempDir()
	fifo := filepath.Join(dir, "policy.yaml")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, path := range []string{fifo, "/dev/null"} {
		err := loadWithin(t, path)
		if !errors.Is(err, ErrNotRegular) || !strings.HasPrefix(err.Error(), path+": ") {
			t.Errorf("Load(%s) = %v, want ErrNotRegular naming the path", path, err)
		}
	}
	// In a directory, a FIFO named *.yaml is named, not skipped silently.
	writeFiles(t, dir, map[string]string{"good.yaml": named("good", "liberal")})
	err := loadWithin(t, dir)
	if !errors.Is(err, ErrNotRegular) || !strings.Contains(err.Error(), fifo+": not a regular file (a named pipe)") {
		t.Errorf("Load(dir with a FIFO) = %v", err)
	}
	// A symlink to a FIFO is the same.
	link := filepath.Join(t.TempDir(), "p.yaml")
	symlink(t, fifo, link)
	if err := loadWithin(t, link); !errors.Is(err, ErrNotRegular) {
		t.Errorf("Load(symlink to FIFO) = %v", err)
	}
}

// TestLoadBoundsSize is finding 6: -f /dev/zero or a huge file was read
// without limit until Go ran out of memory.
func TestLoadBoundsSize(t *testing.T) {
	if err := loadWithin(t, "/dev/zero"); !errors.Is(err, ErrNotRegular) {
		t.Errorf("Load(/dev/zero) = %v, want ErrNotRegular", err)
	}
	big := filepath.Join(t.TempDir(), "big.yaml")
	f, err := os.Create(big)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(MaxFileSize + 1); err != nil { // sparse: no disk used
		t.Fatal(err)
	}
	f.Close()
	if err := loadWithin(t, big); !errors.Is(err, ErrTooLarge) || !strings.HasPrefix(err.Error(), big+": ") {
		t.Errorf("Load(16 MiB + 1) = %v, want ErrTooLarge naming the file", err)
	}
}

// TestErrorOutputBounded is finding 9: a 20 MB value became one 20 MB
// message, and 100,000 bad documents gave 31 MB of errors.
func TestErrorOutputBounded(t *testing.T) {
	huge := strings.Repeat("x", 1<<20)
	_, err := Parse("p.yaml", []byte(withSpec("workaround: "+huge)))
	if err == nil || len(err.Error()) > 1000 || !strings.Contains(err.Error(), " bytes)") {
		t.Errorf("error for a 1 MiB value is %d bytes: %.300s", len(err.Error()), err)
	}
	_, err = Parse("p.yaml", []byte(strings.Repeat(huge[:300]+": 1\n", 3)))
	if err == nil || len(err.Error()) > 3000 {
		t.Errorf("errors for long unknown keys are %d bytes", len(err.Error()))
	}
	many := strings.Repeat("kind: Nope\n---\n", 100000)
	_, err = Parse("p.yaml", []byte(many))
	var list ErrorList
	if !errors.As(err, &list) || len(list) != MaxErrors+1 || !strings.Contains(list[MaxErrors].Error(), "stopped after") {
		t.Fatalf("100,000 bad documents gave %d errors", len(list))
	}
	if n := len(err.Error()); n > 20000 {
		t.Errorf("100,000 bad documents gave %d bytes of errors", n)
	}
}

// TestEveryYAMLErrorHasALine is finding 9: an unknown alias, invalid UTF-8
// and control characters gave errors without a line.
func TestEveryYAMLErrorHasALine(t *testing.T) {
	for name, tc := range map[string]struct {
		data string
		line int
	}{
		"unknown alias":     {"apiVersion: a\nkind: b\nmetadata: *nope\n", 3},
		"invalid UTF-8":     {"apiVersion: a\nkind: b\nmetadata:\n  name: \xff\xfe\n", 4},
		"control character": {"apiVersion: a\nkind: \x01b\n", 2},
	} {
		_, err := Parse("p.yaml", []byte(tc.data))
		var list ErrorList
		if !errors.As(err, &list) || len(list) != 1 || list[0].Line != tc.line {
			t.Errorf("%s: %v, want one error at line %d", name, err, tc.line)
		}
	}
}
