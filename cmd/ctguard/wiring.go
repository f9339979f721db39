package main

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"math/bits"
	"os"
	"strings"

	"github.com/ctguard/ctguard/controller"
	"github.com/ctguard/ctguard/controller/flows"
	"github.com/ctguard/ctguard/controller/journal"
	"github.com/ctguard/ctguard/controller/nslock"
	"github.com/ctguard/ctguard/policy"
	"golang.org/x/sys/unix"
)

// loadPolicies reads -f PATH, or the embedded default policy without it.
func loadPolicies(path string) (controller.PolicySet, error) {
	if path == "" {
		return controller.PolicySet{Source: "<default>", Policies: policy.Default()}, nil
	}
	ps, err := policy.Load(path)
	if err != nil {
		return controller.PolicySet{}, err
	}
	return controller.PolicySet{Source: path, Policies: ps}, nil
}

// newLogger returns a logger writing to w, text on a terminal and JSON
// otherwise, at level, or at fallback when level is empty.
func newLogger(w io.Writer, level, fallback string) (*slog.Logger, error) {
	if level == "" {
		level = fallback
	}
	var l slog.Level
	if err := l.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("--log-level: %q is not one of debug, info, warn, error", level)
	}
	opts := &slog.HandlerOptions{Level: l}
	if isTerminal(w) {
		return slog.New(slog.NewTextHandler(w, opts)), nil
	}
	return slog.New(slog.NewJSONHandler(w, opts)), nil
}

// isTerminal tells whether w is a terminal (a buffer is not).
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	return err == nil
}

// session is a Controller bound to the current network namespace.
type session struct {
	*controller.Kernel
	log *slog.Logger
}

// openSession wires the kernel edges of the current namespace.
// Its logs default to warnings: one-shot commands print their own result.
func openSession(g *globals, defaultLevel string) (*session, error) {
	log, err := newLogger(g.err, g.logLevel, defaultLevel)
	if err != nil {
		return nil, err
	}
	if bits.OnesCount32(g.markBit) != 1 {
		return nil, fmt.Errorf("--mark-bit: %#x must have exactly one bit set", g.markBit)
	}
	k, err := controller.Open(-1, g.stateDir, flows.MarkBit(g.markBit), log)
	if err != nil {
		return nil, err
	}
	// One-shot commands build the table as "ctguard run" does, gate rules
	// included (with nobody listening, the kernel bypasses the queue).
	k.SetGate(g.queue, true, nil)
	k.SetEvidenceGroup(g.evidence)
	return &session{Kernel: k, log: log}, nil
}

// openWithPolicies validates -f PATH first (a bad policy touches nothing),
// then opens a session for one-shot commands.
func openWithPolicies(g *globals, file string) (controller.PolicySet, *session, error) {
	set, err := loadPolicies(file)
	if err != nil {
		return set, nil, err
	}
	s, err := openSession(g, "warn")
	return set, s, err
}

func (s *session) close() { s.Kernel.Close() }

// publishLive saves the running controller's status for "ctguard status".
func (s *session) publishLive(st controller.LiveStatus) {
	if err := s.Store.SaveLive(st); err != nil {
		s.log.Warn("cannot save live status", "err", err)
	}
}

// userMessage turns an error into one line an operator can act on.
func userMessage(err error) string {
	msg := err.Error()
	switch {
	case errors.Is(err, unix.EPERM), errors.Is(err, fs.ErrPermission):
		return msg + " (ctguard needs root or CAP_NET_ADMIN in this network namespace, and write access to --state-dir)"
	case errors.Is(err, journal.ErrOtherNetNS):
		return msg + " (use a --state-dir per network namespace; if this namespace was re-created, e.g. by a reboot, its old journal describes nothing in the kernel any more: move it aside)"
	case errors.Is(err, journal.ErrControllerRunning), errors.Is(err, nslock.ErrControllerRunning):
		return msg + ": it would undo any other change; edit the policy it watches (it reloads), or stop it first"
	case errors.Is(err, journal.ErrDamaged):
		return msg + ": " + controller.DamagedJournalHint
	case errors.Is(err, unix.EROFS):
		return msg + " (the state directory is read-only: plan and status work; apply, rollback and run write their journal there)"
	}
	return strings.TrimSpace(msg)
}
