package nft

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/ctguard/ctguard/controller/ruleset"
	"github.com/google/nftables"
)

// watchQuiet is the least time between two change notifications: a burst
// of events (one per object of a batch) becomes one notification, and a
// reconcile that rewrites the table cannot make the caller spin.
const watchQuiet = 500 * time.Millisecond

// Watch notifies the returned channel when nftables reports a change that
// may concern table inet ctguard (its creation or deletion, or a change to
// its chains, rules, sets, elements or objects), until ctx ends. When the
// monitor fails (for instance when its socket overflows under a large
// batch) changes may have been lost: Watch subscribes again and notifies.
// The channel is closed when ctx ends or subscribing again fails; the
// caller then falls back to periodic checks. ctguard's own writes are
// reported too: callers compare before writing.
func (c *Client) Watch(ctx context.Context) (<-chan struct{}, error) {
	events, stop, err := c.monitor()
	if err != nil {
		return nil, err
	}
	out := make(chan struct{}, 1)
	go watch(ctx, events, stop, c.monitor, out)
	return out, nil
}

// subscribeFunc subscribes to nftables change notifications; stop ends the
// subscription.
type subscribeFunc func() (events <-chan *nftables.MonitorEvents, stop func() error, err error)

// monitor subscribes to nftables change notifications.
func (c *Client) monitor() (<-chan *nftables.MonitorEvents, func() error, error) {
	conn, err := nftables.New(c.opts...)
	if err != nil {
		return nil, nil, fmt.Errorf("nftables netlink: %w", err)
	}
	mon := nftables.NewMonitor(nftables.WithMonitorEventBuffer(256))
	events, err := conn.AddGenerationalMonitor(mon)
	if err != nil {
		return nil, nil, fmt.Errorf("nftables monitor: %w", err)
	}
	return events, mon.Close, nil
}

// watch turns monitor events into notifications on out until ctx ends,
// subscribing again with resubscribe when the monitor ends.
func watch(ctx context.Context, events <-chan *nftables.MonitorEvents, stop func() error, resubscribe subscribeFunc, out chan<- struct{}) {
	defer close(out)
	defer func() { stop() }() // stop changes when the monitor is replaced
	var last time.Time
	for {
		select {
		case <-ctx.Done():
			return
		case batch, ok := <-events:
			if ok && !concernsTable(batch) {
				continue
			}
			if !ok {
				// The monitor ended on a receive error, e.g. ENOBUFS
				// after a burst (google/nftables closes its channel
				// then): events were lost, so subscribe again and report
				// a change. Without this, drift was left to the caller's
				// periodic check for good after one overflow.
				stop()
				var err error
				if events, stop, err = resubscribe(); err != nil {
					stop = func() error { return nil }
					return
				}
			}
			if wait := watchQuiet - time.Since(last); wait > 0 {
				select {
				case <-ctx.Done():
					return
				case <-time.After(wait):
				}
			}
			last = time.Now()
			select {
			case out <- struct{}{}:
			default:
			}
		}
	}
}

// concernsTable reports whether a batch of monitor events may touch table
// inet ctguard (or ip/ip6 ctguard, see gateFamilies). Events it cannot
// attribute count as touching it.
func concernsTable(batch *nftables.MonitorEvents) bool {
	for _, ev := range batch.Changes {
		if ev.Error != nil {
			return true
		}
		var t *nftables.Table
		switch d := ev.Data.(type) {
		case *nftables.Table:
			t = d
		case *nftables.Chain:
			t = d.Table
		case *nftables.Rule:
			t = d.Table
		case *nftables.Set:
			t = d.Table
		default:
			return true
		}
		if t == nil || t.Name == ruleset.TableName && slices.Contains([]nftables.TableFamily{nftables.TableFamilyINet, nftables.TableFamilyIPv4, nftables.TableFamilyIPv6}, t.Family) {
			return true
		}
	}
	return false
}
