// Package controller plans, applies, reports and rolls back ctguard's
// mitigations in one network namespace. It owns the order of operations
// (journal first, then the kernel) and talks to the kernel only through the
// small interfaces declared here.
package controller

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/ctguard/ctguard/controller/flows"
	"github.com/ctguard/ctguard/controller/journal"
	"github.com/ctguard/ctguard/controller/perflow"
	"github.com/ctguard/ctguard/controller/ruleset"
	"github.com/ctguard/ctguard/controller/selector"
	"github.com/ctguard/ctguard/policy"
)

// Tables reads and writes table inet ctguard, and nothing else.
type Tables interface {
	Read() (*ruleset.Table, error)
	Replace(t ruleset.Table) error
	Delete() error
}

// Sysctls reads and writes the namespace's sysctls.
type Sysctls interface {
	Get(name string) (string, error)
	Set(name, value string) error
}

// FlowTable is what the one-shot commands need of conntrack: count the
// flows perFlow policies would flag, flag the existing ones, find and clear
// the flags ctguard set (in owned directions) that the policies no longer
// want, clear the flags ctguard set (in dirs), and read the invalid
// statistic.
type FlowTable interface {
	Plan(ctx context.Context, policies []policy.Policy) (map[string]perflow.PlanEntry, error)
	FlagExisting(ctx context.Context, policies []policy.Policy) (flagged int, err error)
	FindUnwanted(ctx context.Context, policies []policy.Policy, owned flows.Directions) (perflow.Unwanted, error)
	ClearUnwanted(ctx context.Context, policies []policy.Policy, owned flows.Directions) (perflow.Unwanted, error)
	ClearOwned(ctx context.Context, dirs flows.Directions) (cleared int, err error)
	Invalid(ctx context.Context) (uint64, error)
}

// NamespaceLock keeps one ctguard at a time in the network namespace,
// whatever its state directory (see package nslock).
type NamespaceLock interface {
	Acquire(role string, wait time.Duration) (release func(), err error)
}

// Controller applies policies to one network namespace.
type Controller struct {
	tables  Tables
	sysctls Sysctls
	flows   FlowTable
	store   *journal.Store
	nsLock  NamespaceLock
	netns   string
	log     *slog.Logger
	// rules are the ruleset options; rules.NoQueue turns on for good once
	// the kernel refused the gate's queue.
	rules     ruleset.Options
	onNoQueue func(error)
}

// Config wires a Controller. Every field is required but Logger.
type Config struct {
	Tables  Tables
	Sysctls Sysctls
	Flows   FlowTable
	Store   *journal.Store
	// Lock is the namespace's lock; nil takes none (unit tests).
	Lock NamespaceLock
	// NetNS identifies the namespace (journal.CurrentNetNS) so a journal of
	// another namespace is never used.
	NetNS  string
	Logger *slog.Logger
	// Rules are the options the table is built with (mark bit, the gate's
	// queue, whether the gate can run; see also SetGate); a zero mark bit
	// or queue means the default.
	Rules ruleset.Options
}

// New returns a Controller.
func New(cfg Config) *Controller {
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if cfg.Rules.MarkBit == 0 {
		cfg.Rules.MarkBit = uint32(flows.DefaultMarkBit)
	}
	if cfg.Rules.Queue == 0 {
		cfg.Rules.Queue = ruleset.DefaultQueue
	}
	return &Controller{
		tables:  cfg.Tables,
		sysctls: cfg.Sysctls,
		flows:   cfg.Flows,
		store:   cfg.Store,
		nsLock:  cfg.Lock,
		netns:   cfg.NetNS,
		log:     log,
		rules:   cfg.Rules,
	}
}

// PolicySet is a validated set of policies and where it came from.
type PolicySet struct {
	Source   string
	Policies []policy.Policy
}

// ErrNothingToRollBack is returned by Rollback when ctguard never applied
// anything in this namespace (or everything was already rolled back).
var ErrNothingToRollBack = errors.New("nothing to roll back: no apply is journaled in this state directory")

// oneShotWait is how long a one-shot command (or a starting controller)
// waits for a one-shot command that holds the namespace lock.
var oneShotWait = 5 * time.Second

// hold takes the namespace lock for role, then the state directory's
// controller lock: while a "ctguard run" manages the namespace (or the
// state directory), nothing else changes the kernel, since it would undo
// the change at its next reconcile.
func (c *Controller) hold(role string) (release func(), err error) {
	releaseNS := func() {}
	if c.nsLock != nil {
		if releaseNS, err = c.nsLock.Acquire(role, oneShotWait); err != nil {
			return nil, err
		}
	}
	releaseDir, err := c.store.HoldController(role)
	if err != nil {
		releaseNS()
		return nil, err
	}
	return func() { releaseDir(); releaseNS() }, nil
}

// loadJournal takes the state lock and loads the journal of this namespace.
func (c *Controller) loadJournal() (*journal.Journal, func(), error) {
	unlock, err := c.store.Lock()
	if err != nil {
		return nil, nil, err
	}
	j, err := c.store.Load()
	if err == nil {
		err = j.CheckNetNS(c.netns)
	}
	if err != nil {
		unlock()
		return nil, nil, err
	}
	return j, unlock, nil
}

func wrap(what string, err error) error {
	if err == nil {
		return nil
	}
	return fmt.Errorf("%s: %w", what, err)
}

// FlaggedDirections returns the directions ctguard may have flagged on
// flows in this namespace, from the journal: what a new per-flow engine
// may clear on marked flows no policy selects any more.
func (c *Controller) FlaggedDirections() (flows.Directions, error) {
	j, err := c.store.Load()
	if err != nil {
		return 0, err
	}
	return flaggedDirections(j), nil
}

// flaggedDirections reads the journal's cumulative flagged directions.
func flaggedDirections(j *journal.Journal) flows.Directions {
	if len(j.FlaggedDirections) == 0 {
		return 0
	}
	return selector.FlowDirections(j.FlaggedDirections)
}

// recordFlagged adds the directions of the policies' perFlow ones to the
// journal's cumulative flagged directions.
func recordFlagged(j *journal.Journal, policies []policy.Policy) {
	d := flaggedDirections(j) | selector.Directions(policies)
	j.FlaggedDirections = nil
	if d.Has(flows.Original) {
		j.FlaggedDirections = append(j.FlaggedDirections, policy.DirectionOriginal)
	}
	if d.Has(flows.Reply) {
		j.FlaggedDirections = append(j.FlaggedDirections, policy.DirectionReply)
	}
}
