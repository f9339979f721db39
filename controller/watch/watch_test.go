package watch

import (
	"os"
	"path/filepath"
	"testing"
	"time"
)

// Tests debounce longer than production and never hit the maximum delay,
// so a loaded machine stalling a burst does not split it in two. A signal
// is due testDebounce after the last change: eventTimeout is generous.
const (
	testDebounce = 500 * time.Millisecond
	testMaxDelay = time.Minute
	eventTimeout = 5 * time.Second
	quietPeriod  = 2 * testDebounce
)

func watchPath(t *testing.T, path string) *Watcher {
	t.Helper()
	return watchWith(t, path, testDebounce, testMaxDelay)
}

func watchWith(t *testing.T, path string, debounce, maxDelay time.Duration) *Watcher {
	t.Helper()
	w, err := newWatcher(path, nil, debounce, maxDelay)
	if err != nil {
		t.Fatalf("watch %s: %v", path, err)
	}
	t.Cleanup(func() { _ = w.Close() })
	return w
}

func expectEvent(t *testing.T, w *Watcher, what string) {
	t.Helper()
	select {
	case _, ok := <-w.Events():
		if !ok {
			t.Fatalf("%s: Events closed", what)
		}
	case <-time.After(eventTimeout):
		t.Fatalf("%s: no event within %v", what, eventTimeout)
	}
}

func expectQuiet(t *testing.T, w *Watcher, what string) {
	t.Helper()
	select {
	case <-w.Events():
		t.Fatalf("%s: unexpected event", what)
	case <-time.After(quietPeriod):
	}
}

func write(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// Both ways ctguard is pointed at policies: -f DIR and -f FILE.
var modes = []struct {
	name   string
	target func(dir string) string
}{
	{"directory", func(dir string) string { return dir }},
	{"file", func(dir string) string { return filepath.Join(dir, "policy.yaml") }},
}

func TestInPlaceWrite(t *testing.T) {
	for _, m := range modes {
		t.Run(m.name, func(t *testing.T) {
			dir := t.TempDir()
			file := filepath.Join(dir, "policy.yaml")
			write(t, file, "v1")
			w := watchPath(t, m.target(dir))

			write(t, file, "v2")
			expectEvent(t, w, "in-place write")
			expectQuiet(t, w, "after in-place write")
		})
	}
}

func TestAtomicRename(t *testing.T) {
	for _, m := range modes {
		t.Run(m.name, func(t *testing.T) {
			dir := t.TempDir()
			file := filepath.Join(dir, "policy.yaml")
			write(t, file, "v1")
			w := watchPath(t, m.target(dir))

			tmp := filepath.Join(dir, ".policy.yaml.tmp")
			write(t, tmp, "v2")
			must(t, os.Rename(tmp, file))
			expectEvent(t, w, "rename over the file")

			// The watch survives the inode change: a second edit is seen too.
			write(t, tmp, "v3")
			must(t, os.Rename(tmp, file))
			expectEvent(t, w, "second rename over the file")
		})
	}
}

// configMapVolume lays out dir as kubelet's atomic writer does and returns
// a function that publishes a new version the same way kubelet does.
func configMapVolume(t *testing.T, dir string) (update func(content string)) {
	t.Helper()
	version := 0
	current := ""
	publish := func(content string) {
		version++
		ts := filepath.Join(dir, "..2024_06_01_12_00_00."+string(rune('0'+version)))
		must(t, os.Mkdir(ts, 0o755))
		write(t, filepath.Join(ts, "policy.yaml"), content)
		must(t, os.Symlink(filepath.Base(ts), filepath.Join(dir, "..data_tmp")))
		must(t, os.Rename(filepath.Join(dir, "..data_tmp"), filepath.Join(dir, "..data")))
		if current != "" {
			must(t, os.RemoveAll(current))
		}
		current = ts
	}
	publish("v1")
	must(t, os.Symlink(filepath.Join("..data", "policy.yaml"), filepath.Join(dir, "policy.yaml")))
	return publish
}

func TestConfigMapSymlinkSwap(t *testing.T) {
	for _, m := range modes {
		t.Run(m.name, func(t *testing.T) {
			dir := t.TempDir()
			update := configMapVolume(t, dir)
			w := watchPath(t, m.target(dir))

			for _, v := range []string{"v2", "v3"} {
				update(v)
				expectEvent(t, w, "ConfigMap update to "+v)
				got, err := os.ReadFile(filepath.Join(dir, "policy.yaml"))
				must(t, err)
				if string(got) != v {
					t.Fatalf("policy.yaml = %q, want %q", got, v)
				}
			}
			expectQuiet(t, w, "after ConfigMap updates")
		})
	}
}

func TestBurstIsOneEvent(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "policy.yaml")
	w := watchPath(t, dir)

	for i := range 50 {
		write(t, file, string(rune('a'+i%26)))
	}
	expectEvent(t, w, "burst")
	expectQuiet(t, w, "after burst")
}

func TestMaxDelayUnderContinuousChanges(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "policy.yaml")
	w := watchWith(t, dir, 300*time.Millisecond, time.Second)

	stop := time.After(eventTimeout)
	tick := time.NewTicker(50 * time.Millisecond) // never quiet for the debounce
	defer tick.Stop()
	for {
		select {
		case <-w.Events():
			return
		case <-tick.C:
			write(t, file, "x")
		case <-stop:
			t.Fatalf("no event within %v of continuous changes", eventTimeout)
		}
	}
}

func TestUnreadSignalsCoalesce(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "policy.yaml")
	w := watchPath(t, dir)

	write(t, file, "v1")
	time.Sleep(2 * testDebounce) // first signal sent, not read
	write(t, file, "v2")
	time.Sleep(2 * testDebounce) // second signal coalesced into the first
	expectEvent(t, w, "coalesced signal")
	expectQuiet(t, w, "after coalesced signal")
}

func TestIgnoresUnrelatedParentEntries(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "policy.yaml")
	write(t, file, "v1")
	w := watchPath(t, file)

	write(t, filepath.Join(dir, "other.yaml"), "x")
	must(t, os.Chmod(file, 0o600))
	expectQuiet(t, w, "sibling file write and chmod")
}

func TestDirectoryDeletedAndRecreated(t *testing.T) {
	parent := t.TempDir()
	dir := filepath.Join(parent, "ctguard")
	must(t, os.Mkdir(dir, 0o755))
	write(t, filepath.Join(dir, "policy.yaml"), "v1")
	w := watchPath(t, dir)

	must(t, os.RemoveAll(dir))
	expectEvent(t, w, "directory removed")

	must(t, os.Mkdir(dir, 0o755))
	expectEvent(t, w, "directory recreated")

	write(t, filepath.Join(dir, "policy.yaml"), "v2")
	expectEvent(t, w, "write into the recreated directory")
}

func TestFileDeletedAndRecreated(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "policy.yaml")
	write(t, file, "v1")
	w := watchPath(t, file)

	must(t, os.Remove(file))
	expectEvent(t, w, "file removed")
	write(t, file, "v2")
	expectEvent(t, w, "file recreated")
	write(t, file, "v3")
	expectEvent(t, w, "write to the recreated file")
}

func TestPathCreatedLater(t *testing.T) {
	parent := t.TempDir()
	dir := filepath.Join(parent, "ctguard")
	w := watchPath(t, dir)

	must(t, os.Mkdir(dir, 0o755))
	expectEvent(t, w, "directory created")
	write(t, filepath.Join(dir, "policy.yaml"), "v1")
	expectEvent(t, w, "write into the new directory")
}

func TestNewFailsWithoutParent(t *testing.T) {
	if _, err := New(filepath.Join(t.TempDir(), "missing", "policy.yaml"), nil); err == nil {
		t.Fatal("New under a missing directory returned nil error")
	}
}

func TestCloseStops(t *testing.T) {
	dir := t.TempDir()
	w, err := New(dir, nil) // the production settings
	must(t, err)
	write(t, filepath.Join(dir, "policy.yaml"), "v1") // pending burst at Close

	done := make(chan error, 1)
	go func() { done <- w.Close() }()
	select {
	case err := <-done:
		must(t, err)
	case <-time.After(eventTimeout):
		t.Fatal("Close did not return")
	}
	for range w.Events() { // drains at most one signal, then sees the close
	}
	must(t, w.Close())
}
