package incident

import (
	"fmt"
	"strings"
)

// Text renders an incident as one line, e.g.
//
//	2026-12-01T06:00:00.123Z reset client 198.18.1.2:40000 server 198.19.0.10:443 box 198.19.0.1:40000 (snat):
//	box sent RST seq 2000 after invalid segment on input seq 1000 ack 2000 len 1400 flags P.;
//	conntrack ESTABLISHED liberal none; policies none; conntrack invalid +2
func Text(inc Incident) string {
	var sb strings.Builder
	sb.WriteString(inc.Time.UTC().Format("2006-01-02T15:04:05.000Z07:00"))
	sb.WriteString(" reset")
	if inc.Client.IsValid() {
		fmt.Fprintf(&sb, " client %s", inc.Client)
	} else {
		sb.WriteString(" client unknown")
	}
	fmt.Fprintf(&sb, " server %s", inc.Server)
	if inc.Box.IsValid() {
		fmt.Fprintf(&sb, " box %s", inc.Box)
	}
	if inc.Service.IsValid() {
		fmt.Fprintf(&sb, " service %s", inc.Service)
	}
	nat := inc.NAT
	if nat == "" {
		nat = "no conntrack entry"
	}
	fmt.Fprintf(&sb, " (%s): %s sent RST seq %d", nat, inc.ResetBy, inc.RST.Seq)
	if inc.Stray != nil {
		fmt.Fprintf(&sb, " after invalid segment on %s seq %d ack %d len %d flags %s", inc.Stray.Hook, inc.Stray.Seq, inc.Stray.Ack, inc.Stray.Len, inc.Stray.Flags)
	} else {
		sb.WriteString(" (invalid segment not logged: rate limit)")
	}
	if c := inc.Conntrack; c != nil {
		fmt.Fprintf(&sb, "; conntrack %s liberal %s", c.State, c.Liberal)
	}
	sb.WriteString("; policies ")
	if len(inc.Policies) == 0 {
		sb.WriteString("none")
	}
	for i, p := range inc.Policies {
		if i > 0 {
			sb.WriteString(",")
		}
		fmt.Fprintf(&sb, "%s(%s)", p.Name, p.Workaround)
	}
	if inc.InvalidDelta >= 0 {
		fmt.Fprintf(&sb, "; conntrack invalid +%d", inc.InvalidDelta)
	}
	return sb.String()
}

// Ring keeps the last incidents, at most its capacity. Not safe for
// concurrent use.
type Ring struct {
	buf   []Incident
	next  int
	total uint64
}

// NewRing returns a ring of capacity n (at least 1).
func NewRing(n int) *Ring { return &Ring{buf: make([]Incident, 0, max(n, 1))} }

// Add keeps inc, dropping the oldest incident when full.
func (r *Ring) Add(inc Incident) {
	r.total++
	if len(r.buf) < cap(r.buf) {
		r.buf = append(r.buf, inc)
		return
	}
	r.buf[r.next] = inc
	r.next = (r.next + 1) % len(r.buf)
}

// Last returns the incidents kept, oldest first.
func (r *Ring) Last() []Incident {
	out := make([]Incident, 0, len(r.buf))
	out = append(out, r.buf[r.next:]...)
	return append(out, r.buf[:r.next]...)
}

// Total returns how many incidents were ever added.
func (r *Ring) Total() uint64 { return r.total }
