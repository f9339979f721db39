package topo

import (
	"fmt"
	"net"
	"net/netip"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// wire creates the two veth pairs from the NAT namespace (their peers are
// born in the client's and the server's namespaces), addresses them, brings
// every link up and gives the client its default routes through the NAT.
// The server has no route to the inside networks: only masquerade lets it
// answer.
func (t *Topology) wire() error {
	err := configure(t.NAT, func(h *netlink.Handle) error {
		for _, l := range []struct {
			name string
			peer Namespace
		}{{InsideLink, t.Client}, {NATOutsideLink, t.Server}} {
			veth := &netlink.Veth{
				LinkAttrs:     netlink.LinkAttrs{Name: l.name},
				PeerName:      HostLink,
				PeerNamespace: netlink.NsFd(l.peer.Fd()),
			}
			if err := h.LinkAdd(veth); err != nil {
				return fmt.Errorf("add veth %s (peer %s in %s): %w", l.name, HostLink, l.peer.Name, err)
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	plan := []struct {
		ns     Namespace
		link   string
		prefix func(Addresses) netip.Prefix
	}{
		{t.Client, HostLink, func(a Addresses) netip.Prefix { return a.Client }},
		{t.NAT, InsideLink, func(a Addresses) netip.Prefix { return a.NATInside }},
		{t.NAT, NATOutsideLink, func(a Addresses) netip.Prefix { return a.NATOutside }},
		{t.Server, HostLink, func(a Addresses) netip.Prefix { return a.Server }},
	}
	for _, p := range plan {
		err := configure(p.ns, func(h *netlink.Handle) error {
			link, err := h.LinkByName(p.link)
			if err != nil {
				return fmt.Errorf("find %s: %w", p.link, err)
			}
			if err := setUp(h, link.Attrs().Name, "lo"); err != nil {
				return err
			}
			for _, f := range t.Families {
				if err := addAddress(h, link, p.prefix(t.addrs[f])); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			return err
		}
	}
	if err := t.waitOperUp(); err != nil {
		return err
	}
	return t.defaultRoutes(t.Client, func(a Addresses) netip.Addr { return a.NATInside.Addr() })
}

// routeServerViaNAT gives the server default routes through the NAT's
// outside address (DNAT topology: the server answers the client's own
// address, which only the NAT can reach).
func (t *Topology) routeServerViaNAT() error {
	return t.defaultRoutes(t.Server, func(a Addresses) netip.Addr { return a.NATOutside.Addr() })
}

// defaultRoutes adds a default route per family on ns's HostLink through
// the gateway address gw picks.
func (t *Topology) defaultRoutes(ns Namespace, gw func(Addresses) netip.Addr) error {
	return configure(ns, func(h *netlink.Handle) error {
		link, err := h.LinkByName(HostLink)
		if err != nil {
			return fmt.Errorf("find %s: %w", HostLink, err)
		}
		for _, f := range t.Families {
			via := gw(t.addrs[f])
			route := &netlink.Route{LinkIndex: link.Attrs().Index, Gw: net.IP(via.AsSlice())}
			if err := h.RouteAdd(route); err != nil {
				return fmt.Errorf("add %s default route via %s: %w", f, via, err)
			}
		}
		return nil
	})
}

// configure runs fn with a netlink handle bound to the namespace.
func configure(ns Namespace, fn func(*netlink.Handle) error) error {
	h, err := netlink.NewHandleAt(ns.Handle)
	if err != nil {
		return fmt.Errorf("netlink handle in %s: %w", ns.Name, err)
	}
	defer h.Close()
	if err := fn(h); err != nil {
		return fmt.Errorf("configure %s: %w", ns.Name, err)
	}
	return nil
}

// addAddress assigns prefix to link; IPv6 addresses skip duplicate address
// detection so they are usable at once.
func addAddress(h *netlink.Handle, link netlink.Link, prefix netip.Prefix) error {
	addr := &netlink.Addr{IPNet: &net.IPNet{
		IP:   net.IP(prefix.Addr().AsSlice()),
		Mask: net.CIDRMask(prefix.Bits(), prefix.Addr().BitLen()),
	}}
	if prefix.Addr().Is6() {
		addr.Flags = unix.IFA_F_NODAD
	}
	if err := h.AddrAdd(link, addr); err != nil {
		return fmt.Errorf("add %s to %s: %w", prefix, link.Attrs().Name, err)
	}
	return nil
}

// setUp brings the named links up.
func setUp(h *netlink.Handle, names ...string) error {
	for _, name := range names {
		link, err := h.LinkByName(name)
		if err != nil {
			return fmt.Errorf("find %s: %w", name, err)
		}
		if err := h.LinkSetUp(link); err != nil {
			return fmt.Errorf("set %s up: %w", name, err)
		}
	}
	return nil
}

// operUpTimeout bounds the wait for the veths to come up.
const operUpTimeout = 5 * time.Second

// waitOperUp waits until every veth is operationally up. The kernel's link
// watcher attaches a link's queueing discipline only then (up to a second
// after carrier): until it does, the link silently drops what is sent, and
// the first SYN or neighbour solicitation would cost a one-second
// retransmission.
func (t *Topology) waitOperUp() error {
	links := []struct {
		ns   Namespace
		name string
	}{{t.Client, HostLink}, {t.NAT, InsideLink}, {t.NAT, NATOutsideLink}, {t.Server, HostLink}}
	deadline := time.Now().Add(operUpTimeout)
	for _, l := range links {
		err := configure(l.ns, func(h *netlink.Handle) error {
			for {
				link, err := h.LinkByName(l.name)
				if err != nil {
					return fmt.Errorf("find %s: %w", l.name, err)
				}
				if link.Attrs().OperState == netlink.OperUp {
					return nil
				}
				if time.Now().After(deadline) {
					return fmt.Errorf("%s still %s after %s", l.name, link.Attrs().OperState, operUpTimeout)
				}
				time.Sleep(10 * time.Millisecond)
			}
		})
		if err != nil {
			return err
		}
	}
	return nil
}
