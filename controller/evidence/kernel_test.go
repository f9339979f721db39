package evidence

import (
	"errors"
	"net"
	"net/netip"
	"regexp"
	"strconv"
	"testing"
	"time"

	"github.com/ctguard/ctguard/internal/netnstest"
)

// TestPrivilegedReceive logs a connection attempt to a closed loopback
// port and the kernel's RST answering it, and checks what the reader makes
// of them; a second reader of the same group is refused.
func TestPrivilegedReceive(t *testing.T) {
	ns := netnstest.NewNetNS(t, "d14ev")
	ns.MustRun(t, "nft", "add table inet d14; add chain inet d14 out { type filter hook output priority 0; }; add rule inet d14 out meta l4proto tcp log group 9 snaplen 128")
	r, err := Open(ns.Fd(), 9, 128, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if _, err := Open(ns.Fd(), 9, 128, 0); !errors.Is(err, ErrGroupBusy) {
		t.Errorf("second bind: %v, want ErrGroupBusy", err)
	}
	ns.Do(t, func() {
		c, err := net.DialTimeout("tcp", "127.0.0.1:9", time.Second)
		if err == nil {
			c.Close()
		}
	})
	var got []Packet
	deadline := time.Now().Add(3 * time.Second)
	for len(got) < 2 && time.Now().Before(deadline) {
		if got, err = r.Receive(got); err != nil {
			t.Fatal(err)
		}
	}
	if len(got) != 2 {
		t.Fatalf("got %d packets, want SYN and RST", len(got))
	}
	syn, rst := got[0], got[1]
	if !syn.OK || syn.Hook != HookOutput || syn.Segment.Flags&FlagSYN == 0 || syn.Segment.Dst != netip.MustParseAddrPort("127.0.0.1:9") {
		t.Errorf("SYN: %+v", syn)
	}
	if !rst.OK || !rst.Segment.RST() || rst.Segment.Src != syn.Segment.Dst || rst.Segment.Dst != syn.Segment.Src || rst.Segment.Ack != syn.Segment.Seq+1 {
		t.Errorf("RST: %+v", rst)
	}
	if rst.Seq != syn.Seq+1 {
		t.Errorf("sequence numbers %d, %d", syn.Seq, rst.Seq)
	}
	if st := r.Stats(); st.Received != 2 || st.Lost != 0 || st.Overruns != 0 {
		t.Errorf("stats %+v", st)
	}
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	// Unbound on close: the group is free again.
	r2, err := Open(ns.Fd(), 9, 128, 0)
	if err != nil {
		t.Fatal(err)
	}
	r2.Close()
}

// TestPrivilegedLossCounted logs, without a rate limit, more packets than
// a small receive buffer holds: the reader counts the overrun and, from the
// sequence numbers of the next message, the messages lost; what it
// received and lost add up to what the kernel logged.
func TestPrivilegedLossCounted(t *testing.T) {
	ns := netnstest.NewNetNS(t, "d14loss")
	ns.MustRun(t, "nft", "add table inet d14; add chain inet d14 out { type filter hook output priority 0; }; add counter inet d14 logged; add rule inet d14 out meta l4proto udp counter name logged log group 11 snaplen 128")
	r, err := Open(ns.Fd(), 11, 128, 4096)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	go func() {
		var buf []Packet
		for {
			if buf, err = r.Receive(buf[:0]); err != nil {
				return
			}
		}
	}()
	const n = 2000
	send := func(k int) {
		ns.Do(t, func() {
			c, err := net.Dial("udp", "127.0.0.1:9")
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			for range k {
				c.Write([]byte("x"))
			}
		})
	}
	send(n)
	time.Sleep(200 * time.Millisecond)
	send(1) // its sequence number shows the gap
	// Every packet the rule counted was logged (a write refused by an
	// earlier ICMP error sends nothing).
	m := regexp.MustCompile(`packets (\d+)`).FindStringSubmatch(string(ns.MustRun(t, "nft", "list", "counter", "inet", "d14", "logged")))
	logged, _ := strconv.ParseUint(m[1], 10, 64)
	deadline := time.Now().Add(3 * time.Second)
	for st := r.Stats(); st.Received+st.Lost < logged; st = r.Stats() {
		if time.Now().After(deadline) {
			t.Fatalf("stuck at %+v of %d", st, logged)
		}
		time.Sleep(10 * time.Millisecond)
	}
	st := r.Stats()
	if st.Lost == 0 || st.Overruns == 0 || st.Received+st.Lost != logged {
		t.Errorf("stats %+v, want lost and overruns counted and received+lost = %d", st, logged)
	}
	t.Logf("%d packets logged into a 4 KiB buffer: %+v", logged, st)
}
