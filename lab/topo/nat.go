package topo

import (
	"encoding/binary"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// LabTable is the nftables table (family inet) holding the lab's own
// masquerade rule in the NAT namespace. ctguard's table is "ctguard": the
// two never meet.
const LabTable = "ctguardlab"

// installMasquerade adds "table inet ctguardlab { chain postrouting { type
// nat hook postrouting priority srcnat; oifname "wan0" masquerade } }" in the
// NAT namespace.
func installMasquerade(nat Namespace) error {
	c, err := nftables.New(nftables.WithNetNSFd(nat.Fd()))
	if err != nil {
		return fmt.Errorf("nftables in %s: %w", nat.Name, err)
	}
	table := c.AddTable(&nftables.Table{Family: nftables.TableFamilyINet, Name: LabTable})
	chain := c.AddChain(&nftables.Chain{
		Name:     "postrouting",
		Table:    table,
		Type:     nftables.ChainTypeNAT,
		Hooknum:  nftables.ChainHookPostrouting,
		Priority: nftables.ChainPriorityNATSource,
	})
	c.AddRule(&nftables.Rule{
		Table: table,
		Chain: chain,
		Exprs: []expr.Any{
			&expr.Meta{Key: expr.MetaKeyOIFNAME, Register: 1},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: ifname(NATOutsideLink)},
			&expr.Masq{},
		},
	})
	if err := c.Flush(); err != nil {
		return fmt.Errorf("install masquerade in %s: %w", nat.Name, err)
	}
	return nil
}

// installServiceDNAT adds, in the NAT namespace, "table inet ctguardlab {
// chain prerouting { type nat hook prerouting priority dstnat; ip daddr
// SERVICE tcp dport 80 dnat ip to SERVER:8080; ip6 daddr SERVICE6 tcp dport
// 80 dnat ip6 to [SERVER6]:8080 } }" for the given families: kube-proxy's
// service rule, so the flow is forwarded and its replies are un-DNATed on
// the way back.
func installServiceDNAT(nat Namespace, families []Family, addrs map[Family]Addresses) error {
	c, err := nftables.New(nftables.WithNetNSFd(nat.Fd()))
	if err != nil {
		return fmt.Errorf("nftables in %s: %w", nat.Name, err)
	}
	table := c.AddTable(&nftables.Table{Family: nftables.TableFamilyINet, Name: LabTable})
	chain := c.AddChain(&nftables.Chain{
		Name:     "prerouting",
		Table:    table,
		Type:     nftables.ChainTypeNAT,
		Hooknum:  nftables.ChainHookPrerouting,
		Priority: nftables.ChainPriorityNATDest,
	})
	port := func(p uint16) []byte { return binary.BigEndian.AppendUint16(nil, p) }
	for _, f := range families {
		a := addrs[f]
		nfproto, daddrOffset, daddrLen := uint32(unix.NFPROTO_IPV4), uint32(16), uint32(4)
		if f == IPv6 {
			nfproto, daddrOffset, daddrLen = unix.NFPROTO_IPV6, 24, 16
		}
		c.AddRule(&nftables.Rule{
			Table: table,
			Chain: chain,
			Exprs: []expr.Any{
				&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: 1},
				&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{byte(nfproto)}},
				&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: daddrOffset, Len: daddrLen},
				&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: a.Service.AsSlice()},
				&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
				&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{unix.IPPROTO_TCP}},
				&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
				&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: port(ServicePort)},
				&expr.Immediate{Register: 1, Data: a.Server.Addr().AsSlice()},
				&expr.Immediate{Register: 2, Data: port(BackendPort)},
				&expr.NAT{Type: expr.NATTypeDestNAT, Family: nfproto, RegAddrMin: 1, RegProtoMin: 2, Specified: true},
			},
		})
	}
	if err := c.Flush(); err != nil {
		return fmt.Errorf("install service DNAT in %s: %w", nat.Name, err)
	}
	return nil
}

// ifname pads an interface name to the kernel's IFNAMSIZ for an exact
// oifname match.
func ifname(name string) []byte {
	b := make([]byte, 16)
	copy(b, name)
	return b
}

// forwardingSysctls turn the NAT namespace into a router.
var forwardingSysctls = map[Family]string{
	IPv4: "net.ipv4.ip_forward",
	IPv6: "net.ipv6.conf.all.forwarding",
}

// WriteSysctl sets a sysctl (dotted name) inside the namespace only: /proc/sys/net
// resolves to the network namespace of the thread that opens it, so the
// write happens on a thread switched into ns.
func WriteSysctl(ns Namespace, name, value string) error {
	path := filepath.Join("/proc/sys", strings.ReplaceAll(name, ".", "/"))
	err := ns.Do(func() error { return os.WriteFile(path, []byte(value), 0) })
	if err != nil {
		return fmt.Errorf("sysctl %s=%s in %s: %w", name, value, ns.Name, err)
	}
	return nil
}

// ReadSysctl reads a sysctl (dotted name) inside the namespace.
func ReadSysctl(ns Namespace, name string) (string, error) {
	path := filepath.Join("/proc/sys", strings.ReplaceAll(name, ".", "/"))
	var b []byte
	err := ns.Do(func() (err error) {
		b, err = os.ReadFile(path)
		return err
	})
	if err != nil {
		return "", fmt.Errorf("sysctl %s in %s: %w", name, ns.Name, err)
	}
	return strings.TrimSpace(string(b)), nil
}
