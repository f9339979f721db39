package lab

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/ctguard/ctguard/controller/detect"
	"github.com/ctguard/ctguard/controller/flows"
	"github.com/ctguard/ctguard/controller/incident"
	nftables "github.com/ctguard/ctguard/controller/nft"
)

// evidenceGroup is the nfnetlink_log group of the lab's detector: not
// ctguard's default, so a "ctguard run" a mitigation starts in the NAT
// namespace keeps its own incident ring.
const evidenceGroup = 7303

// detectSettle is how long the detector reads on after a run, for the last
// log messages.
const detectSettle = 200 * time.Millisecond

// detector is what "ctguard detect" does, run in a lab's NAT namespace: it
// writes the evidence rules to their own table and collects the incidents.
type detector struct {
	tables *nftables.Client
	conn   *flows.Conn
	w      *detect.Watcher
	cancel context.CancelFunc
	done   chan error

	mu        sync.Mutex
	incidents []incident.Incident
}

// startDetector starts detecting in nat; stop ends it.
func startDetector(nat Namespace) (_ *detector, err error) {
	d := &detector{done: make(chan error, 1), incidents: []incident.Incident{}}
	defer func() {
		if err != nil {
			d.close()
		}
	}()
	if d.tables, err = nftables.New(nat.Fd()); err != nil {
		return nil, err
	}
	if d.conn, err = flows.Open(nat.Fd()); err != nil {
		return nil, err
	}
	d.w, err = detect.Open(detect.Config{NetNSFd: nat.Fd(), Group: evidenceGroup, Conn: d.conn, OnIncident: func(inc incident.Incident) {
		d.mu.Lock()
		d.incidents = append(d.incidents, inc)
		d.mu.Unlock()
	}})
	if err != nil {
		return nil, err
	}
	if err := d.tables.ReplaceEvidenceTable(evidenceGroup); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	d.cancel = cancel
	go func() { d.done <- d.w.Run(ctx) }()
	return d, nil
}

// stop reads for detectSettle more, removes the evidence rules and returns
// the incidents.
func (d *detector) stop() ([]incident.Incident, error) {
	time.Sleep(detectSettle)
	d.cancel()
	err := errors.Join(<-d.done, d.tables.DeleteEvidenceTable())
	d.close()
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.incidents, err
}

func (d *detector) close() {
	if d.conn != nil {
		d.conn.Close()
	}
	if d.tables != nil {
		d.tables.Close()
	}
}
