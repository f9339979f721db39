package intervals

import (
	"math/rand/v2"
	"net/netip"
	"slices"
	"testing"
)

func prefixes(ss ...string) []netip.Prefix {
	out := make([]netip.Prefix, len(ss))
	for i, s := range ss {
		out[i] = netip.MustParsePrefix(s)
	}
	return out
}

// bounds renders a set's spans as "first-last" addresses.
func bounds(s Addrs) []string {
	var out []string
	for _, r := range s.V4 {
		out = append(out, Addr4(r.First).String()+"-"+Addr4(r.Last).String())
	}
	for _, r := range s.V6 {
		out = append(out, Addr6(r.First).String()+"-"+Addr6(r.Last).String())
	}
	return out
}

func TestFromPrefixes(t *testing.T) {
	tests := []struct {
		name string
		in   []string
		want []string
	}{
		{"none", nil, nil},
		{"contained and overlapping, unsorted", []string{"198.18.2.0/25", "198.18.0.0/23", "198.18.1.7/32"}, []string{"198.18.0.0-198.18.2.127"}},
		{"families apart", []string{"2001:db8::/33", "198.18.1.0/25", "2001:db8:8000::/33", "198.18.1.128/25", "fd00:c79::1/128"},
			[]string{"198.18.1.0-198.18.1.255", "2001:db8::-2001:db8:ffff:ffff:ffff:ffff:ffff:ffff", "fd00:c79::1-fd00:c79::1"}},
		{"ipv4 top", []string{"255.255.255.255/32", "0.0.0.0/0"}, []string{"0.0.0.0-255.255.255.255"}},
		{"ipv6 top", []string{"::/0", "ffff::/16"}, []string{"::-ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := bounds(FromPrefixes(prefixes(tt.in...))); !slices.Equal(got, tt.want) {
				t.Fatalf("FromPrefixes(%v) = %v, want %v", tt.in, got, tt.want)
			}
		})
	}
}

// TestPrefixBounds checks the bit arithmetic against setting the host bits
// one by one, on every prefix length of both families.
func TestPrefixBounds(t *testing.T) {
	for _, base := range []string{"0.0.0.0", "198.18.77.1", "255.255.255.255", "::", "2001:db8:1:2:3:4:5:6", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"} {
		a := netip.MustParseAddr(base)
		for n := 0; n <= a.BitLen(); n++ {
			p := netip.PrefixFrom(a, n)
			b := p.Masked().Addr().AsSlice()
			for i := n; i < len(b)*8; i++ {
				b[i/8] |= 0x80 >> (i % 8)
			}
			wantLast, _ := netip.AddrFromSlice(b)
			if first, last := PrefixBounds(p); first != p.Masked().Addr() || last != wantLast {
				t.Errorf("PrefixBounds(%v) = %v, %v, want %v, %v", p, first, last, p.Masked().Addr(), wantLast)
			}
		}
	}
}

func TestMergePorts(t *testing.T) {
	got := Ports.Merge([]Span[uint16]{{10, 20}, {21, 30}, {15, 16}, {65535, 65535}, {40, 50}, {1, 65534}})
	if want := []Span[uint16]{{1, 65535}}; !slices.Equal(got, want) {
		t.Fatalf("Merge = %v, want %v", got, want)
	}
	got = Ports.Merge([]Span[uint16]{{8000, 8100}, {8050, 8200}, {80, 80}, {443, 443}, {444, 500}})
	if want := []Span[uint16]{{80, 80}, {443, 500}, {8000, 8200}}; !slices.Equal(got, want) {
		t.Fatalf("Merge = %v, want %v", got, want)
	}
	for p, want := range map[uint16]bool{0: false, 80: true, 81: false, 443: true, 500: true, 501: false, 8200: true, 65535: false} {
		if Ports.Contains(got, p) != want {
			t.Errorf("Contains(%d) = %v", p, !want)
		}
	}
}

// TestContainsAgreesWithPrefixes checks Contains against the prefixes
// themselves on random sets and addresses near their edges.
func TestContainsAgreesWithPrefixes(t *testing.T) {
	rng := rand.New(rand.NewPCG(9, 12))
	for round := 0; round < 200; round++ {
		var ps []netip.Prefix
		for range rng.IntN(12) {
			var b [16]byte
			b[0], b[1], b[15] = 0xfd, byte(rng.IntN(2)), byte(rng.IntN(256))
			a := netip.AddrFrom16(b)
			if rng.IntN(2) == 0 {
				a = netip.AddrFrom4([4]byte{198, 18, byte(rng.IntN(2)), byte(rng.IntN(256))})
			}
			ps = append(ps, netip.PrefixFrom(a, a.BitLen()-rng.IntN(10)).Masked())
		}
		s := FromPrefixes(ps)
		for _, p := range ps {
			first, last := PrefixBounds(p)
			for _, a := range []netip.Addr{first, last, first.Prev(), last.Next()} {
				if !a.IsValid() {
					continue
				}
				want := slices.ContainsFunc(ps, func(q netip.Prefix) bool { return q.Contains(a) })
				if s.Contains(a) != want {
					t.Fatalf("%v: Contains(%v) = %v, want %v", ps, a, !want, want)
				}
			}
		}
		for i, r := range s.V4 { // sorted, neither overlapping nor touching
			if r.First > r.Last || i > 0 && r.First <= s.V4[i-1].Last+1 {
				t.Fatalf("%v: spans %v", ps, s.V4)
			}
		}
	}
}

// TestEditAgreesWithSort edits sorted lists with repeats and checks the
// result against sorting the edited list again.
func TestEditAgreesWithSort(t *testing.T) {
	rng := rand.New(rand.NewPCG(9, 9))
	span := func() Span[uint16] {
		a := uint16(rng.IntN(50))
		return Span[uint16]{a, a + uint16(rng.IntN(3))}
	}
	for range 500 {
		var in []Span[uint16]
		for range rng.IntN(30) {
			in = append(in, span())
		}
		sorted := slices.Clone(in)
		Ports.Sort(sorted)
		var removed, added []Span[uint16]
		kept := slices.Clone(in) // removed spans come from the list edited
		for range rng.IntN(4) {
			if len(kept) > 0 && rng.IntN(2) == 0 {
				i := rng.IntN(len(kept))
				removed = append(removed, kept[i])
				kept = slices.Delete(kept, i, i+1)
			} else {
				added = append(added, span())
			}
		}
		want := append(kept, added...)
		Ports.Sort(want)
		got, ok := Ports.Edit(sorted, slices.Clone(removed), slices.Clone(added))
		if !ok || !slices.Equal(got, want) {
			t.Fatalf("Edit(%v, -%v, +%v) = %v, %v; want %v", sorted, removed, added, got, ok, want)
		}
	}
	if _, ok := Ports.Edit([]Span[uint16]{{1, 2}}, []Span[uint16]{{1, 3}}, nil); ok {
		t.Error("Edit removed a span that is not there")
	}
}
