package controller

import (
	"errors"
	"log/slog"

	"github.com/ctguard/ctguard/controller/flows"
	"github.com/ctguard/ctguard/controller/journal"
	"github.com/ctguard/ctguard/controller/nft"
	"github.com/ctguard/ctguard/controller/nslock"
	"github.com/ctguard/ctguard/controller/ruleset"
	"github.com/ctguard/ctguard/controller/sysctl"
	"github.com/ctguard/ctguard/internal/netns"
)

// Kernel is a Controller wired to the real kernel of one network
// namespace, with the connections it holds.
type Kernel struct {
	*Controller
	// Tables is the nftables client of the namespace.
	Tables *nft.Client
	// Conntrack is the conntrack connection of the namespace.
	Conntrack *flows.Conn
	// Store is the journal's state directory.
	Store *journal.Store
}

// Open wires a Controller to the namespace netnsFd (< 0: the current one),
// with its journal in stateDir and mark as ctguard's ownership mark bit.
func Open(netnsFd int, stateDir string, mark flows.MarkBit, log *slog.Logger) (*Kernel, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	ns, err := netns.IdentityOf(netnsFd)
	if err != nil {
		return nil, err
	}
	id, err := journal.CurrentIdentity(ns)
	if err != nil {
		return nil, err
	}
	store, err := journal.Open(stateDir)
	if err != nil {
		return nil, err
	}
	tables, err := nft.New(netnsFd)
	if err != nil {
		return nil, err
	}
	conn, err := flows.Open(netnsFd)
	if err != nil {
		tables.Close()
		return nil, err
	}
	c := New(Config{
		Tables:   tables,
		Sysctls:  sysctl.Open(netnsFd),
		Flows:    conntrackTable{conn: conn, mark: mark, log: log},
		Store:    store,
		Lock:     nslock.New(netnsFd, stateDir),
		NetNS:    ns,
		BootID:   id.BootID,
		BootTime: id.BootTime,
		Logger:   log,
		Rules:    ruleset.Options{MarkBit: uint32(mark), Queue: ruleset.DefaultQueue},
	})
	return &Kernel{Controller: c, Tables: tables, Conntrack: conn, Store: store}, nil
}

// Close releases the kernel connections.
func (k *Kernel) Close() error {
	return errors.Join(k.Conntrack.Close(), k.Tables.Close())
}

// SetGate sets the gate's queue number and whether the gate can run
// (false: gate policies get guard rules), and a function called if the
// kernel later refuses the queue. Call it before the first apply.
func (c *Controller) SetGate(queue uint16, available bool, onNoQueue func(error)) {
	c.rules.Queue = queue
	c.rules.NoQueue = !available
	c.onNoQueue = onNoQueue
}

// SetEvidenceGroup sets the nfnetlink_log group of the evidence rules every
// table gets (0: none). Call it before the first apply.
func (c *Controller) SetEvidenceGroup(group uint16) { c.rules.EvidenceGroup = group }
