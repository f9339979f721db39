package topo

import (
	"fmt"
	"net/netip"
)

// Family is an IP address family the lab can run over.
type Family string

// The address families.
const (
	IPv4 Family = "ipv4"
	IPv6 Family = "ipv6"
)

// ErrUnknownFamily reports a family other than IPv4 and IPv6.
var ErrUnknownFamily = fmt.Errorf("unknown address family (want %s or %s)", IPv4, IPv6)

// Addresses are one family's addresses in the lab. The client's network is
// "inside" the NAT, the server's network "outside" (the NAT's public side).
type Addresses struct {
	Client     netip.Prefix // client's address on the inside network
	NATInside  netip.Prefix // NAT's address on the inside network, the client's gateway
	NATOutside netip.Prefix // NAT's public address, the masquerade source
	Server     netip.Prefix // server's address on the outside network
	// Service is the virtual address (a kube-proxy service VIP) the client
	// dials in a DNAT topology; the NAT box rewrites it to Server. No link
	// carries it.
	Service netip.Addr
}

// AddressesFor returns the fixed addresses of a family: 198.18.0.0/24 inside
// and 198.19.0.0/24 outside for IPv4 (RFC 2544 benchmarking space), the ULA
// networks fd00:c7:1::/64 and fd00:c7:2::/64 for IPv6. The DNAT topology's
// service address is 198.19.255.10 or fd00:c7:3::10, on no link. Every topology has
// its own namespaces, so topologies never collide.
func AddressesFor(f Family) (Addresses, error) {
	switch f {
	case IPv4:
		return Addresses{
			Client:     netip.MustParsePrefix("198.18.0.2/24"),
			NATInside:  netip.MustParsePrefix("198.18.0.1/24"),
			NATOutside: netip.MustParsePrefix("198.19.0.1/24"),
			Server:     netip.MustParsePrefix("198.19.0.2/24"),
			Service:    netip.MustParseAddr("198.19.255.10"),
		}, nil
	case IPv6:
		return Addresses{
			Client:     netip.MustParsePrefix("fd00:c7:1::2/64"),
			NATInside:  netip.MustParsePrefix("fd00:c7:1::1/64"),
			NATOutside: netip.MustParsePrefix("fd00:c7:2::1/64"),
			Server:     netip.MustParsePrefix("fd00:c7:2::2/64"),
			Service:    netip.MustParseAddr("fd00:c7:3::10"),
		}, nil
	}
	return Addresses{}, fmt.Errorf("%q: %w", f, ErrUnknownFamily)
}
