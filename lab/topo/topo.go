// Package topo builds the lab's client -- nat -- server network namespaces:
// two veth links, IPv4 and IPv6 addresses, the client's default route through
// the NAT, forwarding and, in the NAT namespace, either a masquerade rule
// (SNAT: the incident's egress gateway) or a service DNAT rule (DNAT: a
// kube-proxy style node forwarding a service address to a backend). It
// touches nothing outside its own namespaces and removes them on Close.
package topo

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"sync"
	"syscall"
	"time"

	"github.com/ctguard/ctguard/internal/netns"
)

// Interface names. The client's and the server's only link is HostLink; the
// NAT namespace has InsideLink towards the client and NATOutsideLink (its
// public side, where masquerade applies) towards the server.
const (
	HostLink       = "eth0"
	InsideLink     = "lan0"
	NATOutsideLink = "wan0"
)

// NAT is the kind of address translation the NAT namespace does.
type NAT string

// The topologies.
const (
	// SNAT masquerades the client's connections on the NAT's public side:
	// the client dials the server's own address.
	SNAT NAT = "snat"
	// DNAT rewrites the service address the client dials (Addresses.Service,
	// ServicePort) to the server (BackendPort) on the forward path, as
	// kube-proxy does; the server routes its replies back through the NAT.
	DNAT NAT = "dnat"
)

// ErrUnknownNAT reports a topology other than SNAT and DNAT.
var ErrUnknownNAT = fmt.Errorf("unknown NAT topology (want %s or %s)", SNAT, DNAT)

// NamePrefix starts the name of every namespace the lab creates.
const NamePrefix = "ctglab-"

// Topology is a client -- nat -- server lab. All fields are read-only.
type Topology struct {
	Client, NAT, Server Namespace
	Families            []Family // families configured, in the order given to New
	Kind                NAT      // the translation the NAT namespace does

	addrs     map[Family]Addresses
	closeOnce sync.Once
	closeErr  error
}

// New builds an SNAT topology with fresh, uniquely named namespaces for the
// given families (both when none are given). On any failure, or when ctx
// ends during the build, everything created so far is removed.
func New(ctx context.Context, families ...Family) (*Topology, error) {
	return Build(ctx, SNAT, families...)
}

// Build is New for a topology of either kind.
func Build(ctx context.Context, kind NAT, families ...Family) (_ *Topology, err error) {
	if kind != SNAT && kind != DNAT {
		return nil, fmt.Errorf("%q: %w", kind, ErrUnknownNAT)
	}
	if len(families) == 0 {
		families = []Family{IPv4, IPv6}
	}
	t := &Topology{Kind: kind, addrs: map[Family]Addresses{}}
	for _, f := range families {
		if _, dup := t.addrs[f]; dup {
			continue
		}
		if t.addrs[f], err = AddressesFor(f); err != nil {
			return nil, err
		}
		t.Families = append(t.Families, f)
	}
	base, err := netns.UniqueName(NamePrefix)
	if err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			err = errors.Join(err, t.Close())
		}
	}()
	steps := []func() error{
		func() error { return t.createNamespaces(base) },
		t.skipDAD,
		t.wire,
		t.enableForwarding,
		t.installNAT,
		t.waitReachable,
	}
	for _, step := range steps {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		if err := step(); err != nil {
			return nil, err
		}
	}
	return t, nil
}

// createNamespaces creates the client, NAT and server namespaces.
func (t *Topology) createNamespaces(base string) (err error) {
	if t.Client, err = netns.NewNamed(base + "-client"); err != nil {
		return err
	}
	if t.NAT, err = netns.NewNamed(base + "-nat"); err != nil {
		return err
	}
	t.Server, err = netns.NewNamed(base + "-server")
	return err
}

// skipDAD turns off IPv6 duplicate address detection for every link created
// later in the topology's namespaces, link-local addresses included: while
// a link-local address is tentative (a second or two), the first
// connections through the DNAT topology lose their SYN or SYN-ACK and wait
// for a retransmission.
func (t *Topology) skipDAD() error {
	if !slices.Contains(t.Families, IPv6) {
		return nil
	}
	for _, ns := range t.Namespaces() {
		if err := WriteSysctl(ns, "net.ipv6.conf.default.accept_dad", "0"); err != nil {
			return err
		}
	}
	return nil
}

// enableForwarding turns the NAT namespace into a router for every family.
func (t *Topology) enableForwarding() error {
	for _, f := range t.Families {
		if err := WriteSysctl(t.NAT, forwardingSysctls[f], "1"); err != nil {
			return err
		}
	}
	return nil
}

// installNAT installs the topology's translation rule and, for DNAT, the
// server's route back to the client through the NAT.
func (t *Topology) installNAT() error {
	if t.Kind == SNAT {
		return installMasquerade(t.NAT)
	}
	if err := t.routeServerViaNAT(); err != nil {
		return err
	}
	return installServiceDNAT(t.NAT, t.Families, t.addrs)
}

// reachTimeout bounds the wait for the client to reach the server.
const reachTimeout = 5 * time.Second

// waitReachable returns once a connection attempt from the client to the
// service address of every family is answered through the NAT (refused:
// nothing listens yet, so the answer is the server's RST). Right after an
// IPv6 topology is built, the first SYNs through the DNAT box can go
// unanswered for about a second; a test's first connections must not pay
// for that with a retransmitted SYN.
func (t *Topology) waitReachable() error {
	deadline := time.Now().Add(reachTimeout)
	for _, f := range t.Families {
		addr := t.ServiceAddr(f).String()
		for {
			err := t.Client.Do(func() error {
				c, err := net.DialTimeout("tcp", addr, 100*time.Millisecond)
				if err == nil {
					c.Close()
				}
				return err
			})
			if err == nil || errors.Is(err, syscall.ECONNREFUSED) {
				break
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("%s: the client cannot reach %s through the NAT after %s: %w", f, addr, reachTimeout, err)
			}
		}
	}
	return nil
}

// ServiceAddr returns the address the client dials to reach the server:
// the server itself (SNAT) or the service address (DNAT).
func (t *Topology) ServiceAddr(f Family) netip.AddrPort {
	a := t.addrs[f]
	if t.Kind == DNAT {
		return netip.AddrPortFrom(a.Service, ServicePort)
	}
	return netip.AddrPortFrom(a.Server.Addr(), ServerPort)
}

// ListenAddr returns the address the server listens on.
func (t *Topology) ListenAddr(f Family) netip.AddrPort {
	if t.Kind == DNAT {
		return netip.AddrPortFrom(t.addrs[f].Server.Addr(), BackendPort)
	}
	return netip.AddrPortFrom(t.addrs[f].Server.Addr(), ServerPort)
}

// Addrs returns the addresses of one of the topology's families (zero
// prefixes for a family it was not built with).
func (t *Topology) Addrs(f Family) Addresses { return t.addrs[f] }

// Namespaces returns the client, NAT and server namespaces.
func (t *Topology) Namespaces() []Namespace { return []Namespace{t.Client, t.NAT, t.Server} }

// Close removes the names of the topology's namespaces and closes its
// handles; the kernel then frees each namespace, with its links, rules and
// conntrack table, once no socket or process still holds it. It is safe to
// call more than once.
func (t *Topology) Close() error {
	t.closeOnce.Do(func() {
		var errs []error
		for _, ns := range t.Namespaces() {
			if ns.Name != "" {
				errs = append(errs, ns.Delete())
			}
		}
		t.closeErr = errors.Join(errs...)
	})
	if t.closeErr != nil {
		return fmt.Errorf("close lab topology: %w", t.closeErr)
	}
	return nil
}
