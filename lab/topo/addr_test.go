package topo

import (
	"errors"
	"net/netip"
	"testing"
)

func TestAddressesFor(t *testing.T) {
	for _, tc := range []struct {
		family   Family
		inside   netip.Prefix
		outside  netip.Prefix
		wantFail bool
	}{
		{IPv4, netip.MustParsePrefix("198.18.0.0/15"), netip.MustParsePrefix("198.18.0.0/15"), false},
		{IPv6, netip.MustParsePrefix("fd00:c7:1::/64"), netip.MustParsePrefix("fd00:c7:2::/64"), false},
		{"ipx", netip.Prefix{}, netip.Prefix{}, true},
	} {
		a, err := AddressesFor(tc.family)
		if tc.wantFail {
			if !errors.Is(err, ErrUnknownFamily) {
				t.Errorf("%s: err %v, want ErrUnknownFamily", tc.family, err)
			}
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range []struct {
			name   string
			prefix netip.Prefix
			within netip.Prefix
		}{
			{"client", a.Client, tc.inside}, {"nat inside", a.NATInside, tc.inside},
			{"nat outside", a.NATOutside, tc.outside}, {"server", a.Server, tc.outside},
		} {
			if !p.within.Contains(p.prefix.Addr()) {
				t.Errorf("%s %s address %s outside %s", tc.family, p.name, p.prefix, p.within)
			}
		}
		for _, p := range []netip.Prefix{a.Client, a.NATInside, a.NATOutside, a.Server} {
			if p.Contains(a.Service) {
				t.Errorf("%s: service address %s is on the link %s: it must be on no link", tc.family, a.Service, p)
			}
		}
		if !a.Service.IsValid() || a.Service.Is4() != a.Client.Addr().Is4() {
			t.Errorf("%s: service address %s", tc.family, a.Service)
		}
		if a.Client.Masked() != a.NATInside.Masked() || a.Server.Masked() != a.NATOutside.Masked() || a.Client.Masked() == a.Server.Masked() {
			t.Errorf("%s: inside %s/%s and outside %s/%s must be two distinct links", tc.family, a.Client, a.NATInside, a.Server, a.NATOutside)
		}
	}
}
