package ruleset

import (
	"net/netip"
	"slices"
	"testing"

	"github.com/ctguard/ctguard/internal/intervals"
	"github.com/ctguard/ctguard/policy"
)

// merged is what Build makes of the prefixes: the elements of the IPv4
// set, then of the IPv6 set.
func merged(ps []netip.Prefix) []string {
	v4, v6 := intervals.Spans(ps)
	return append(elements(nil, ipv4Sets, "", v4), elements(nil, ipv6Sets, "", v6)...)
}

func TestMergePrefixes(t *testing.T) {
	tests := []struct {
		name string
		in   []string
		want []string
	}{
		{"single host", []string{"203.0.113.5/32"}, []string{"203.0.113.5"}},
		{"unmasked prefix", []string{"198.18.3.7/15"}, []string{"198.18.0.0/15"}},
		{"contained", []string{"198.18.0.0/15", "198.18.7.0/24"}, []string{"198.18.0.0/15"}},
		{"adjacent halves become a prefix", []string{"198.18.1.0/24", "198.18.0.0/24"}, []string{"198.18.0.0/23"}},
		{"adjacent unaligned become a range", []string{"198.18.1.0/24", "198.18.2.0/24"}, []string{"198.18.1.0-198.18.2.255"}},
		{"disjoint sorted", []string{"203.0.113.0/24", "198.18.0.0/24"}, []string{"198.18.0.0/24", "203.0.113.0/24"}},
		{"overlap partial", []string{"198.18.0.0/23", "198.18.1.0/24", "198.18.2.0/25"}, []string{"198.18.0.0-198.18.2.127"}},
		{"top of space", []string{"255.255.255.255/32", "255.255.255.0/24"}, []string{"255.255.255.0/24"}},
		{"everything", []string{"0.0.0.0/0", "198.18.0.0/15"}, []string{"0.0.0.0/0"}},
		{"ipv6", []string{"2001:db8::/33", "2001:db8:8000::/33", "fd00:c79::1/128"}, []string{"2001:db8::/32", "fd00:c79::1"}},
		{"ipv6 range", []string{"2001:db8::1/128", "2001:db8::2/127"}, []string{"2001:db8::1-2001:db8::3"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := merged(prefixes(tt.in...))
			if !slices.Equal(got, tt.want) {
				t.Fatalf("MergePrefixes(%v) = %v, want %v", tt.in, got, tt.want)
			}
			for _, s := range got {
				r, err := ParseAddrRange(s)
				if err != nil {
					t.Fatal(err)
				}
				if r.String() != s {
					t.Errorf("ParseAddrRange(%q).String() = %q", s, r.String())
				}
			}
		})
	}
}

func TestMergePorts(t *testing.T) {
	tests := []struct {
		name string
		in   []policy.PortRange
		want []string
	}{
		{"single", []policy.PortRange{{From: 443, To: 443}}, []string{"443"}},
		{"adjacent", []policy.PortRange{{From: 444, To: 500}, {From: 443, To: 443}}, []string{"443-500"}},
		{"overlap and disjoint", []policy.PortRange{{From: 8000, To: 8100}, {From: 8050, To: 8200}, {From: 80, To: 80}}, []string{"80", "8000-8200"}},
		{"top", []policy.PortRange{{From: 65535, To: 65535}, {From: 1, To: 65534}}, []string{"1-65535"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := elements(nil, portSets, "", portSpans(tt.in))
			if !slices.Equal(got, tt.want) {
				t.Fatalf("MergePorts = %v, want %v", got, tt.want)
			}
			for _, s := range got {
				p, err := ParsePortSpan(s)
				if err != nil || p.String() != s {
					t.Errorf("ParsePortSpan(%q) = %v, %v", s, p, err)
				}
			}
		})
	}
}

func TestParseErrors(t *testing.T) {
	for _, s := range []string{"", "198.18.0.1-2001:db8::1", "198.18.0.9-198.18.0.1", "198.18.0.0/33", "x"} {
		if _, err := ParseAddrRange(s); err == nil {
			t.Errorf("ParseAddrRange(%q) succeeded", s)
		}
	}
	for _, s := range []string{"", "70000", "9-1", "1-x"} {
		if _, err := ParsePortSpan(s); err == nil {
			t.Errorf("ParsePortSpan(%q) succeeded", s)
		}
	}
}

// TestAddrRangeStringMatchesPrefixSearch checks the bit arithmetic of
// AddrRange.String against a plain search for the prefix, on every prefix
// length of both families and on ranges one address short or long.
func TestAddrRangeStringMatchesPrefixSearch(t *testing.T) {
	search := func(r AddrRange) string {
		if r.First == r.Last {
			return r.First.String()
		}
		for n := 0; n <= r.First.BitLen(); n++ {
			p := netip.PrefixFrom(r.First, n)
			if first, last := intervals.PrefixBounds(p); first == r.First && last == r.Last {
				return p.String()
			}
		}
		return r.First.String() + "-" + r.Last.String()
	}
	for _, base := range []string{"0.0.0.0", "198.18.0.0", "255.255.255.255", "::", "fd00:c7::", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"} {
		a := netip.MustParseAddr(base)
		for n := 0; n <= a.BitLen(); n++ {
			first, last := intervals.PrefixBounds(netip.PrefixFrom(a, n))
			cases := []AddrRange{{first, last}}
			if next := first.Next(); next.IsValid() && next.Compare(last) <= 0 {
				cases = append(cases, AddrRange{next, last})
			}
			if prev := last.Prev(); prev.IsValid() && prev.Compare(first) >= 0 {
				cases = append(cases, AddrRange{first, prev})
			}
			if next := last.Next(); next.IsValid() {
				cases = append(cases, AddrRange{first, next})
			}
			for _, r := range cases {
				if got, want := r.String(), search(r); got != want {
					t.Errorf("%v-%v: String() = %s, want %s", r.First, r.Last, got, want)
				}
			}
		}
	}
}
