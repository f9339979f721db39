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
	"sync"
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
	// UpdateElements changes set elements in place, in one batch, keeping
	// every counter.
	UpdateElements(deltas []ruleset.SetDelta) error
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
	boot    journal.Identity // BootID and BootTime of Config
	log     *slog.Logger
	// rules are the ruleset options; rules.NoQueue turns on for good once
	// the kernel refused the gate's queue.
	rules     ruleset.Options
	onNoQueue func(error)
	// built caches the desired table of the last policies built, sets
	// the interval sets of the last build (an edit rebuilds only what it
	// changed).
	builtMu sync.Mutex
	built   *builtTable
	sets    ruleset.SetCache
}

// Config wires a Controller. Every field is required but Logger.
type Config struct {
	Tables  Tables
	Sysctls Sysctls
	Flows   FlowTable
	Store   *journal.Store
	// Lock is the namespace's lock; nil takes none (unit tests).
	Lock NamespaceLock
	// NetNS identifies the namespace (netns.Current) so a journal of
	// another namespace is never used.
	NetNS string
	// BootID and BootTime identify the current boot (journal.CurrentIdentity)
	// so a journal of an earlier boot is archived, not used. Empty: no
	// boot check.
	BootID   string
	BootTime time.Time
	Logger   *slog.Logger
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
		boot:    journal.Identity{BootID: cfg.BootID, BootTime: cfg.BootTime},
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

// identity is what this controller's journal must belong to.
func (c *Controller) identity() journal.Identity {
	id := c.boot
	id.NetNS = c.netns
	return id
}

// loadJournal takes the state lock and loads the journal of this
// namespace and boot. A journal of an earlier boot describes nothing in
// the kernel any more: when write is set it is archived (kept, renamed,
// for the operator) and a fresh journal returned; otherwise the fresh
// journal is returned and the file left alone. A journal of another
// namespace of this boot is refused. When write is set, a journal that
// lacks the boot id (written by an older ctguard) gets it.
func (c *Controller) loadJournal(write bool) (*journal.Journal, func(), error) {
	unlock, err := c.store.Lock()
	if err != nil {
		return nil, nil, err
	}
	j, err := c.readJournal(write)
	if err != nil {
		unlock()
		return nil, nil, err
	}
	return j, unlock, nil
}

// readJournal is loadJournal for a caller holding the state lock, or
// (write unset) for one that only reads.
func (c *Controller) readJournal(write bool) (*journal.Journal, error) {
	id := c.identity()
	j, err := c.store.LoadFor(id)
	switch {
	case errors.Is(err, journal.ErrEarlierBoot) && !write:
		return &journal.Journal{Version: journal.CurrentVersion}, nil
	case errors.Is(err, journal.ErrEarlierBoot):
		path, aerr := c.store.Archive(time.Now())
		if aerr != nil && path == "" {
			return nil, fmt.Errorf("%w; %w", err, aerr)
		}
		c.log.Warn("journal of an earlier boot archived; starting fresh", "reason", err, "archive", path, "pruneErr", aerr)
		return &journal.Journal{Version: journal.CurrentVersion}, nil
	case err != nil:
		return nil, err
	}
	if write && j.BootID == "" && j.NetNS != "" && id.BootID != "" {
		j.BootID = id.BootID
		if err := c.store.Save(j); err != nil {
			return nil, wrap("record the boot id in the journal", err)
		}
	}
	return j, nil
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
