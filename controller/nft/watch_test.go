package nft

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/google/nftables"
)

// TestWatchResubscribesWhenMonitorEnds: google/nftables closes the monitor's
// channel on any receive error (ENOBUFS after a burst, for one). Watch then
// subscribes again and reports a change, instead of giving up for good.
func TestWatchResubscribesWhenMonitorEnds(t *testing.T) {
	ended := make(chan *nftables.MonitorEvents)
	close(ended)
	live := make(chan *nftables.MonitorEvents)
	subscribed, stopped := 0, 0
	stop := func() error { stopped++; return nil }
	resubscribe := func() (<-chan *nftables.MonitorEvents, func() error, error) {
		subscribed++
		return live, stop, nil
	}
	ctx, cancel := context.WithCancel(context.Background())
	out := make(chan struct{}, 1)
	done := make(chan struct{})
	go func() {
		watch(ctx, ended, stop, resubscribe, out)
		close(done)
	}()
	select {
	case _, ok := <-out:
		if !ok {
			t.Fatal("Watch gave up when the monitor ended")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no change reported after the monitor ended")
	}
	live <- &nftables.MonitorEvents{Changes: []*nftables.MonitorEvent{{Data: &nftables.Table{Name: "ctguard", Family: nftables.TableFamilyINet}}}}
	select {
	case <-out:
	case <-time.After(5 * time.Second):
		t.Fatal("the new subscription's event was not reported")
	}
	cancel()
	<-done
	if subscribed != 1 || stopped != 2 {
		t.Fatalf("subscribed %d times, stopped %d, want 1 and 2", subscribed, stopped)
	}
}

// TestWatchGivesUpWhenResubscribeFails closes the channel: the caller then
// relies on its periodic check.
func TestWatchGivesUpWhenResubscribeFails(t *testing.T) {
	ended := make(chan *nftables.MonitorEvents)
	close(ended)
	out := make(chan struct{}, 1)
	watch(context.Background(), ended, func() error { return nil }, func() (<-chan *nftables.MonitorEvents, func() error, error) {
		return nil, nil, errors.New("no netlink")
	}, out)
	if _, ok := <-out; ok {
		t.Fatal("a notification after a failed resubscribe, want the channel closed")
	}
}
