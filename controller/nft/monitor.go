package nft

import (
	"encoding/binary"
	"fmt"
	"sync"

	"github.com/ctguard/ctguard/controller/ruleset"
	"github.com/google/nftables"
	"golang.org/x/sys/unix"
)

// ctguard decodes nftables notifications itself: google/nftables v0.3.0
// drops the table name of set element notifications, so a busy box whose
// other tables' sets change every few seconds (kube-proxy's) would look
// like it changed ctguard's table each time. Every nf_tables notification
// names its table in attribute 1 (NFTA_TABLE_NAME, NFTA_CHAIN_TABLE,
// NFTA_RULE_TABLE, NFTA_SET_TABLE, NFTA_SET_ELEM_LIST_TABLE,
// NFTA_OBJ_TABLE, NFTA_FLOWTABLE_TABLE), and every committed transaction
// ends with NFT_MSG_NEWGEN naming the generation it made.

// changeLog remembers, from notifications, which generations touched
// a table named ctguard (inet, or the gate's ip and ip6 tables), so Read
// knows a moved generation left them alone.
type changeLog struct {
	mu sync.Mutex
	// since is the generation when the subscription started: every
	// later transaction is notified, unless notifications were lost.
	since uint32
	// seen is the newest generation whose notifications arrived whole.
	seen uint32
	// touched is the newest generation that touched inet ctguard.
	touched uint32
	// valid is false before a subscription and after a loss.
	valid bool
}

// start begins a log at generation gen (read after subscribing).
func (l *changeLog) start(gen uint32) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.since, l.seen, l.touched, l.valid = gen, gen, gen, true
}

// lost ends the log: changes may have gone unseen.
func (l *changeLog) lost() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.valid = false
}

// add records the generation gen, which touched inet ctguard or not.
func (l *changeLog) add(gen uint32, touched bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.valid || gen <= l.seen {
		return
	}
	if gen != l.seen+1 {
		l.valid = false // a generation without its notification
		return
	}
	l.seen = gen
	if touched {
		l.touched = gen
	}
}

// untouched reports whether every transaction after generation from up
// to generation to was seen and none touched inet ctguard.
func (l *changeLog) untouched(from, to uint32) bool {
	if l == nil {
		return false
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.valid && l.since <= from && from <= to && to <= l.seen && l.touched <= from
}

// monitor subscribes to nftables notifications on a socket of its own and
// turns them into google/nftables batches (one per transaction, each
// change naming only its table; the generation in GeneratedBy), recording
// them in the client's change log. stop ends the subscription; the
// channel closes after a receive error, whose batch carries it.
func (c *Client) monitor() (<-chan *nftables.MonitorEvents, func() error, error) {
	r, err := dialRaw(c.raw.netnsFd)
	if err != nil {
		return nil, nil, err
	}
	// A batch replacing a large table notifies every element: take the
	// batch buffer (best effort; a loss is detected and resubscribed).
	_ = forceBuffers(r.c)
	if err := r.c.JoinGroup(unix.NFNLGRP_NFTABLES); err != nil {
		r.close()
		return nil, nil, fmt.Errorf("nftables notifications: %w", err)
	}
	// Subscribed first: every transaction after this generation is
	// notified.
	c.mu.Lock()
	gen, err := c.raw.genID()
	if err == nil {
		c.changes = &changeLog{}
		c.changes.start(gen)
	}
	log := c.changes
	c.mu.Unlock()
	if err != nil {
		r.close()
		return nil, nil, err
	}
	out := make(chan *nftables.MonitorEvents, 256)
	stopped, done := make(chan struct{}), make(chan struct{})
	send := func(b *nftables.MonitorEvents) bool {
		select {
		case out <- b:
			return true
		case <-stopped:
			return false
		}
	}
	go func() {
		defer close(done)
		defer close(out)
		var batch []*nftables.MonitorEvent
		touched := false
		for {
			msgs, err := r.receive()
			if err != nil {
				log.lost()
				ev := &nftables.MonitorEvent{Type: nftables.MonitorEventTypeOOB, Error: err}
				send(&nftables.MonitorEvents{GeneratedBy: ev, Changes: append(batch, ev)})
				return
			}
			for _, m := range msgs {
				if m.typ>>8 != nfnlSubsysNFTables || len(m.data) < 4 {
					continue
				}
				typ := m.typ & 0xff
				if typ == unix.NFT_MSG_NEWGEN {
					var g uint32
					for a := range attrs(m.data[4:]) {
						if a.typ == unix.NFTA_GEN_ID && len(a.data) == 4 {
							g = binary.BigEndian.Uint32(a.data)
						}
					}
					log.add(g, touched)
					ev := &nftables.MonitorEvent{Type: nftables.MonitorEventType(unix.NFT_MSG_NEWGEN), Data: &nftables.GenMsg{ID: g}}
					if !send(&nftables.MonitorEvents{GeneratedBy: ev, Changes: batch}) {
						return
					}
					batch, touched = nil, false
					continue
				}
				ev := &nftables.MonitorEvent{Type: nftables.MonitorEventType(typ)}
				t := &nftables.Table{Family: nftables.TableFamily(m.data[0])}
				for a := range attrs(m.data[4:]) {
					if a.typ == 1 { // the table's name, for every object type
						t.Name = string(trimNul(a.data))
						break
					}
				}
				if t.Name != "" {
					ev.Data = t // else nil: a change watch cannot attribute
				}
				if t.Name == "" || t.Name == ruleset.TableName { // inet, or the gate's ip and ip6 tables
					touched = true
				}
				batch = append(batch, ev)
			}
		}
	}()
	stop := func() error {
		close(stopped)
		err := r.close()
		<-done
		return err
	}
	return out, stop, nil
}

// receive reads one batch of notifications (copied out of the buffer).
func (r *rawConn) receive() ([]rawMessage, error) {
	raw, err := r.c.SyscallConn()
	if err != nil {
		return nil, err
	}
	var n int
	var rerr error
	if err := raw.Read(func(fd uintptr) bool {
		n, _, _, _, rerr = unix.Recvmsg(int(fd), r.buf, nil, 0)
		return rerr != unix.EAGAIN
	}); err != nil {
		return nil, err
	}
	if rerr != nil {
		return nil, rerr
	}
	b := make([]byte, n)
	copy(b, r.buf[:n])
	return parseMessages(b)
}

// trimNul cuts a netlink string at its terminating NUL.
func trimNul(b []byte) []byte {
	for i, c := range b {
		if c == 0 {
			return b[:i]
		}
	}
	return b
}
