package incident

import (
	"encoding/json"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/ctguard/ctguard/controller/evidence"
	"github.com/ctguard/ctguard/controller/flows"
	"github.com/ctguard/ctguard/internal/policytest"
	"github.com/ctguard/ctguard/policy"
)

var t0 = time.Date(2026, 12, 1, 6, 0, 0, 123e6, time.UTC)

// fakeSource holds one conntrack entry and an invalid statistic.
type fakeSource struct {
	entries map[flows.Tuple]flows.Flow
	invalid uint64
}

func (f *fakeSource) LookupReply(t flows.Tuple) (flows.Flow, error) {
	if e, ok := f.entries[t]; ok {
		return e, nil
	}
	return flows.Flow{}, flows.ErrFlowGone
}
func (f *fakeSource) Invalid() (uint64, error) { return f.invalid, nil }
func (f *fakeSource) IfName(i uint32) string   { return map[uint32]string{2: "wan0"}[i] }

func ap(s string) netip.AddrPort { return netip.MustParseAddrPort(s) }

func pkt(at time.Duration, hook evidence.Hook, src, dst string, seq, ack uint32, flags uint8, n int) evidence.Packet {
	return evidence.Packet{Time: t0.Add(at), Hook: hook, InIf: 2, OK: true,
		Segment: evidence.Segment{Src: ap(src), Dst: ap(dst), Seq: seq, Ack: ack, Flags: flags, PayloadLen: n}}
}

func snatEntry() flows.Flow {
	return flows.Flow{
		Orig:  flows.Tuple{Src: ap("198.18.1.2:40000").Addr(), Dst: ap("198.19.0.10:443").Addr(), SrcPort: 40000, DstPort: 443},
		Reply: flows.Tuple{Src: ap("198.19.0.10:443").Addr(), Dst: ap("198.19.0.1:61000").Addr(), SrcPort: 443, DstPort: 61000},
		Proto: flows.ProtoTCP, Status: flows.StatusSrcNAT, HasProtoInfo: true, HasFlags: true, State: flows.TCPEstablished,
	}
}

func dnatEntry() flows.Flow {
	return flows.Flow{
		Orig:  flows.Tuple{Src: ap("198.18.1.2:40000").Addr(), Dst: ap("198.19.0.1:80").Addr(), SrcPort: 40000, DstPort: 80},
		Reply: flows.Tuple{Src: ap("198.18.2.5:8080").Addr(), Dst: ap("198.18.1.2:40000").Addr(), SrcPort: 8080, DstPort: 40000},
		Proto: flows.ProtoTCP, Status: flows.StatusDstNAT, HasProtoInfo: true, HasFlags: true, State: flows.TCPEstablished, ReplyFlags: flows.BeLiberal,
	}
}

func pol(name string, w policy.Workaround, m policy.Match) policy.Policy {
	s := policy.Spec{Workaround: w, Match: m}
	switch w {
	case policy.WorkaroundLiberal:
		s.Liberal = &policy.Liberal{Scope: policy.ScopePerFlow}
	case policy.WorkaroundDropInvalid:
		s.DropInvalid = &policy.DropInvalid{Hooks: []policy.Hook{policy.HookInput}}
	}
	return policytest.Named(name, s)
}

func TestSNATIncident(t *testing.T) {
	e := snatEntry()
	src := &fakeSource{entries: map[flows.Tuple]flows.Flow{e.Reply: e}, invalid: 10}
	d, err := NewDetector(src, []policy.Policy{
		pol("egress", policy.WorkaroundLiberal, policy.Match{Family: policy.FamilyAny, NAT: []policy.NATKind{policy.NATSource}}),
		pol("other-servers", policy.WorkaroundObserve, policy.Match{Family: policy.FamilyAny, Destinations: []netip.Prefix{netip.MustParsePrefix("203.0.113.0/24")}}),
		pol("watch", policy.WorkaroundObserve, policy.Match{Family: policy.FamilyIPv4, DestinationPorts: []policy.PortRange{{From: 443, To: 443}}}),
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := d.Handle(pkt(0, evidence.HookInput, "198.19.0.10:443", "198.19.0.1:61000", 5_000_000, 7000, evidence.FlagACK|0x08, 1000)); ok {
		t.Fatal("an invalid segment alone is no incident")
	}
	src.invalid = 12
	inc, ok := d.Handle(pkt(time.Millisecond, evidence.HookOutput, "198.19.0.1:61000", "198.19.0.10:443", 7000, 0, evidence.FlagRST, 0))
	if !ok {
		t.Fatal("no incident")
	}
	want := "2026-12-01T06:00:00.124Z reset client 198.18.1.2:40000 server 198.19.0.10:443 box 198.19.0.1:61000 (snat): " +
		"box sent RST seq 7000 after invalid segment on input seq 5000000 ack 7000 len 1000 flags P.; " +
		"conntrack ESTABLISHED liberal none; policies egress(liberal),watch(observe); conntrack invalid +2"
	if got := Text(inc); got != want {
		t.Errorf("text:\n got %s\nwant %s", got, want)
	}
	b, _ := json.Marshal(inc)
	for _, s := range []string{`"client":"198.18.1.2:40000"`, `"server":"198.19.0.10:443"`, `"box":"198.19.0.1:61000"`, `"nat":"snat"`, `"resetBy":"box"`, `"invalidDelta":2`} {
		if !strings.Contains(string(b), s) {
			t.Errorf("json lacks %s: %s", s, b)
		}
	}
	if strings.Contains(string(b), `"service"`) {
		t.Errorf("json has a service for SNAT: %s", b)
	}
	if d.Correlator().Pending() != 0 {
		t.Error("the paired segment is still pending")
	}
}

func TestDNATIncident(t *testing.T) {
	e := dnatEntry()
	src := &fakeSource{entries: map[flows.Tuple]flows.Flow{e.Reply: e}}
	drop := pol("backends", policy.WorkaroundDropInvalid, policy.Match{Family: policy.FamilyAny, Destinations: []netip.Prefix{netip.MustParsePrefix("198.18.2.0/24")}})
	fwd := drop.Document()
	fwd.Metadata.Name = "backends-fwd"
	fwd.Spec.DropInvalid = &policy.DropInvalid{Hooks: []policy.Hook{policy.HookForward}, Interfaces: []string{"wan0"}}
	dropFwd := policytest.New(fwd)
	d, _ := NewDetector(src, []policy.Policy{drop, dropFwd, pol("svc", policy.WorkaroundLiberal, policy.Match{Family: policy.FamilyAny, NAT: []policy.NATKind{policy.NATDest}})})
	d.Handle(pkt(0, evidence.HookForward, "198.18.2.5:8080", "198.18.1.2:40000", 99, 5, evidence.FlagACK, 100))
	// An unrelated forwarded RST is no incident.
	if _, ok := d.Handle(pkt(time.Millisecond, evidence.HookForward, "198.18.1.9:1", "198.18.2.5:8080", 1, 0, evidence.FlagRST, 0)); ok {
		t.Fatal("unrelated RST paired")
	}
	inc, ok := d.Handle(pkt(2*time.Millisecond, evidence.HookForward, "198.18.1.2:40000", "198.18.2.5:8080", 5, 0, evidence.FlagRST, 0))
	if !ok {
		t.Fatal("no incident")
	}
	if inc.NAT != "dnat" || inc.ResetBy != "client" || inc.Client != ap("198.18.1.2:40000") || inc.Service != ap("198.19.0.1:80") ||
		inc.Box.IsValid() || inc.Stray == nil || inc.Stray.Hook != "forward" || inc.Conntrack.Liberal != "reply" {
		t.Errorf("incident %+v", inc)
	}
	if got := Text(inc); !strings.Contains(got, "client sent RST seq 5") || !strings.Contains(got, "policies backends-fwd(dropInvalid),svc(liberal)") {
		t.Errorf("text %s", got)
	}
}

func TestUnloggedStrayAndNoEntry(t *testing.T) {
	d, _ := NewDetector(&fakeSource{}, nil)
	inc, ok := d.Handle(pkt(0, evidence.HookOutput, "198.19.0.1:61000", "198.19.0.10:443", 7, 0, evidence.FlagRST, 0))
	if !ok || inc.Stray != nil || inc.Conntrack != nil || inc.NAT != "" || inc.Client.IsValid() {
		t.Fatalf("incident %+v %v", inc, ok)
	}
	want := "2026-12-01T06:00:00.123Z reset client unknown server 198.19.0.10:443 box 198.19.0.1:61000 (no conntrack entry): " +
		"box sent RST seq 7 (invalid segment not logged: rate limit); policies none; conntrack invalid +0"
	if got := Text(inc); got != want {
		t.Errorf("text:\n got %s\nwant %s", got, want)
	}
	// Output packets other than RSTs and undecodable packets are ignored.
	if _, ok := d.Handle(pkt(0, evidence.HookOutput, "198.19.0.1:1", "198.19.0.10:443", 7, 0, evidence.FlagACK, 0)); ok {
		t.Error("non-RST output paired")
	}
	if _, ok := d.Handle(evidence.Packet{Hook: evidence.HookOutput}); ok {
		t.Error("undecoded packet paired")
	}
}

func TestCorrelatorBounds(t *testing.T) {
	c := Correlator{Window: time.Second, Max: 3}
	for i := range 5 {
		c.Add(pkt(time.Duration(i)*time.Millisecond, evidence.HookInput, "198.19.0.10:443", netip.AddrPortFrom(ap("198.19.0.1:1").Addr(), uint16(1000+i)).String(), 1, 1, evidence.FlagACK, 1))
	}
	if c.Pending() != 3 || c.Evicted != 2 {
		t.Errorf("pending %d evicted %d", c.Pending(), c.Evicted)
	}
	// The oldest were evicted: a RST for port 1000 finds no segment, for 1004 it does.
	if r, _ := c.Add(pkt(10*time.Millisecond, evidence.HookOutput, "198.19.0.1:1000", "198.19.0.10:443", 1, 0, evidence.FlagRST, 0)); r.Stray != nil {
		t.Error("evicted segment paired")
	}
	if r, _ := c.Add(pkt(11*time.Millisecond, evidence.HookOutput, "198.19.0.1:1004", "198.19.0.10:443", 1, 0, evidence.FlagRST, 0)); r.Stray == nil {
		t.Error("held segment not paired")
	}
	c.Add(pkt(3*time.Second, evidence.HookInput, "198.19.0.10:443", "198.19.0.1:9", 1, 1, evidence.FlagACK, 1))
	if c.Pending() != 1 || c.Unpaired != 2 {
		t.Errorf("after the window: pending %d unpaired %d", c.Pending(), c.Unpaired)
	}
}

func TestRing(t *testing.T) {
	r := NewRing(3)
	for i := range 5 {
		r.Add(Incident{InvalidDelta: int64(i)})
	}
	var got []int64
	for _, inc := range r.Last() {
		got = append(got, inc.InvalidDelta)
	}
	if len(got) != 3 || got[0] != 2 || got[2] != 4 || r.Total() != 5 {
		t.Errorf("ring %v total %d", got, r.Total())
	}
}

func TestFlagNames(t *testing.T) {
	for f, want := range map[uint8]string{0: "none", evidence.FlagRST: "R", evidence.FlagRST | evidence.FlagACK: "R.", evidence.FlagSYN | evidence.FlagACK: "S.", 0x18: "P."} {
		if got := FlagNames(f); got != want {
			t.Errorf("FlagNames(%#x) = %s, want %s", f, got, want)
		}
	}
}

func TestRepeatedResetsReportedOnce(t *testing.T) {
	c := Correlator{Window: time.Second}
	stray := pkt(0, evidence.HookInput, "198.19.0.10:443", "198.19.0.1:61000", 1, 7, evidence.FlagACK, 10)
	rst := pkt(time.Millisecond, evidence.HookOutput, "198.19.0.1:61000", "198.19.0.10:443", 7, 0, evidence.FlagRST, 0)
	var n int
	for range 2 { // the same packets logged twice (two tables, one group)
		c.Add(stray)
		if _, ok := c.Add(rst); ok {
			n++
		}
	}
	if n != 1 || c.Repeats != 1 || c.Pending() != 0 {
		t.Errorf("%d incidents, %d repeats, %d pending", n, c.Repeats, c.Pending())
	}
	// After the window the connection is reported again.
	later := rst
	later.Time = rst.Time.Add(2 * time.Second)
	if _, ok := c.Add(later); !ok {
		t.Error("a reset after the window is not reported")
	}
}

// BenchmarkHandleInvalidSegment is the detector's cost per logged invalid
// segment that no reset follows (a flood's packets, all of one flow).
func BenchmarkHandleInvalidSegment(b *testing.B) {
	d, _ := NewDetector(&fakeSource{}, nil)
	p := pkt(0, evidence.HookInput, "198.19.0.10:443", "198.19.0.1:61000", 1, 7, evidence.FlagACK, 100)
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		p.Time = t0.Add(time.Duration(i) * time.Microsecond)
		d.Handle(p)
	}
}
