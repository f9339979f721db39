// Package topo builds the lab's client -- nat -- server network namespaces:
// two veth links, IPv4 and IPv6 addresses, the client's default route through
// the NAT, forwarding and a masquerade rule in the NAT namespace. It touches
// nothing outside its own namespaces and removes them on Close.
package topo

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"sync"
)

// Interface names. The client's and the server's only link is HostLink; the
// NAT namespace has InsideLink towards the client and NATOutsideLink (its
// public side, where masquerade applies) towards the server.
const (
	HostLink       = "eth0"
	InsideLink     = "lan0"
	NATOutsideLink = "wan0"
)

// NamePrefix starts the name of every namespace the lab creates.
const NamePrefix = "ctglab-"

// Topology is a client -- nat -- server lab. All fields are read-only.
type Topology struct {
	Client, NAT, Server Namespace
	Families            []Family // families configured, in the order given to New

	addrs     map[Family]Addresses
	closeOnce sync.Once
	closeErr  error
}

// New builds a topology with fresh, uniquely named namespaces for the given
// families (both when none are given). On any failure, or when ctx ends
// during the build, everything created so far is removed.
func New(ctx context.Context, families ...Family) (_ *Topology, err error) {
	if len(families) == 0 {
		families = []Family{IPv4, IPv6}
	}
	t := &Topology{addrs: map[Family]Addresses{}}
	for _, f := range families {
		if _, dup := t.addrs[f]; dup {
			continue
		}
		if t.addrs[f], err = AddressesFor(f); err != nil {
			return nil, err
		}
		t.Families = append(t.Families, f)
	}
	id := make([]byte, 4)
	if _, err := rand.Read(id); err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			err = errors.Join(err, t.Close())
		}
	}()
	steps := []func() error{
		func() error { return t.createNamespaces(NamePrefix + hex.EncodeToString(id)) },
		t.wire,
		t.enableForwarding,
		func() error { return installMasquerade(t.NAT) },
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
	if t.Client, err = newNamespace(base + "-client"); err != nil {
		return err
	}
	if t.NAT, err = newNamespace(base + "-nat"); err != nil {
		return err
	}
	t.Server, err = newNamespace(base + "-server")
	return err
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
				errs = append(errs, ns.remove())
			}
		}
		t.closeErr = errors.Join(errs...)
	})
	if t.closeErr != nil {
		return fmt.Errorf("close lab topology: %w", t.closeErr)
	}
	return nil
}
