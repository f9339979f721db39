// Package watch reports, debounced, that a policy path (a file or a
// directory) may have changed. It copes with editors that write a temporary
// file and rename it over the original, with the Kubernetes ConfigMap volume
// layout (top-level symlinks into a "..data" symlink that kubelet swaps
// atomically), and with the path being deleted and recreated.
//
// It watches the parent directory (never the file's inode, which a rename
// replaces) and, when the path is a directory, the directory itself. Only
// the top level is watched; files reached through a symlink elsewhere are
// not (the controller's periodic resync covers them).
package watch

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/fsnotify/fsnotify"
)

// Debounce is how long the path must stay quiet after a change before the
// signal is sent; MaxDelay bounds the wait under a continuous stream of
// changes.
const (
	Debounce = 200 * time.Millisecond
	MaxDelay = 2 * time.Second
)

// Watcher delivers a debounced signal on Events after changes under a path.
type Watcher struct {
	path   string // cleaned absolute path
	parent string
	base   string
	log    *slog.Logger
	fs     *fsnotify.Watcher
	events chan struct{}

	debounce, maxDelay time.Duration

	closeOnce sync.Once
	stop      chan struct{}
	done      chan struct{}
}

// New watches path, a file or directory that need not exist yet; its parent
// directory must. A nil logger discards logs.
func New(path string, logger *slog.Logger) (*Watcher, error) {
	return newWatcher(path, logger, Debounce, MaxDelay)
}

func newWatcher(path string, logger *slog.Logger, debounce, maxDelay time.Duration) (*Watcher, error) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, fmt.Errorf("watch %s: %w", path, err)
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	fs, err := fsnotify.NewWatcher()
	if err != nil {
		return nil, fmt.Errorf("watch %s: %w", abs, err)
	}
	w := &Watcher{
		path:   abs,
		parent: filepath.Dir(abs),
		base:   filepath.Base(abs),
		log:    logger.With("path", abs),
		fs:     fs,
		events: make(chan struct{}, 1),

		debounce: debounce,
		maxDelay: maxDelay,

		stop: make(chan struct{}),
		done: make(chan struct{}),
	}
	if err := fs.Add(w.parent); err != nil {
		return nil, errors.Join(fmt.Errorf("watch %s: parent directory: %w", abs, err), fs.Close())
	}
	if err := w.watchDir(); err != nil {
		return nil, errors.Join(fmt.Errorf("watch %s: %w", abs, err), fs.Close())
	}
	go w.run()
	return w, nil
}

// Events receives one value after each quiet burst of changes. Signals are
// coalesced while unread. The channel is closed by Close.
func (w *Watcher) Events() <-chan struct{} { return w.events }

// Close stops watching and closes Events. It is safe to call more than once.
func (w *Watcher) Close() error {
	var err error
	w.closeOnce.Do(func() {
		close(w.stop)
		<-w.done
		err = w.fs.Close()
	})
	return err
}

// watchDir adds a watch on the path itself when it is a directory (through
// symlinks). fsnotify drops the watch by itself when the directory goes.
func (w *Watcher) watchDir() error {
	fi, err := os.Stat(w.path)
	if err != nil || !fi.IsDir() {
		return nil // a file, or absent for now: the parent watch covers it
	}
	return w.fs.Add(w.path)
}

// relevant reports whether a filesystem event may change what is read from
// the path.
func (w *Watcher) relevant(ev fsnotify.Event) bool {
	if ev.Op == fsnotify.Chmod {
		return false
	}
	dir, name := filepath.Split(ev.Name)
	if filepath.Clean(dir) != w.parent {
		return true // inside the watched directory
	}
	// In the parent: the path itself, or kubelet's "..data"/"..data_tmp"/
	// "..<timestamp>" entries that a file path's symlink resolves through.
	return name == w.base || strings.HasPrefix(name, "..")
}

func (w *Watcher) run() {
	defer close(w.done)
	defer close(w.events)

	timer := time.NewTimer(w.debounce)
	timer.Stop() // armed by the first event; Go 1.23+ timers keep no stale tick
	defer timer.Stop()
	var first time.Time // start of the pending burst; zero when none

	arm := func() {
		now := time.Now()
		if first.IsZero() {
			first = now
		}
		timer.Reset(min(w.debounce, first.Add(w.maxDelay).Sub(now)))
	}

	for {
		select {
		case <-w.stop:
			return
		case ev, ok := <-w.fs.Events:
			if !ok {
				return
			}
			if !w.relevant(ev) {
				continue
			}
			w.log.Debug("policy path event", "event", ev.String())
			if filepath.Clean(ev.Name) == w.path && ev.Has(fsnotify.Create) {
				if err := w.watchDir(); err != nil {
					w.log.Warn("cannot watch recreated policy directory", "err", err)
				}
			}
			arm()
		case err, ok := <-w.fs.Errors:
			if !ok {
				return
			}
			w.log.Warn("policy watch error", "err", err)
			if errors.Is(err, fsnotify.ErrEventOverflow) {
				arm() // events were lost: assume a change
			}
		case <-timer.C:
			first = time.Time{}
			select {
			case w.events <- struct{}{}:
			default: // a signal is already pending
			}
		}
	}
}
