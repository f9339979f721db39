package nft

import (
	"context"
	"fmt"
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
// its chains, rules, sets, elements or objects), until ctx ends or the
// monitor fails (for instance when its socket overflows); the channel is
// closed then, and the caller falls back to periodic checks. ctguard's
// own writes are reported too: callers compare before writing.
func (c *Client) Watch(ctx context.Context) (<-chan struct{}, error) {
	conn, err := nftables.New(c.opts...)
	if err != nil {
		return nil, fmt.Errorf("nftables netlink: %w", err)
	}
	mon := nftables.NewMonitor(nftables.WithMonitorEventBuffer(256))
	events, err := conn.AddGenerationalMonitor(mon)
	if err != nil {
		return nil, fmt.Errorf("nftables monitor: %w", err)
	}
	out := make(chan struct{}, 1)
	go func() {
		defer close(out)
		defer mon.Close()
		var last time.Time
		for {
			select {
			case <-ctx.Done():
				return
			case batch, ok := <-events:
				if !ok {
					return
				}
				if !concernsTable(batch) {
					continue
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
	}()
	return out, nil
}

// concernsTable reports whether a batch of monitor events may touch table
// inet ctguard. Events it cannot attribute count as touching it.
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
		if t == nil || t.Name == ruleset.TableName && t.Family == nftables.TableFamilyINet {
			return true
		}
	}
	return false
}
