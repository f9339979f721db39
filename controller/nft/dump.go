package nft

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// The kernel builds each part of a netlink dump in a buffer as large as
// the largest read the socket has seen (capped at 32 KiB), and dumps an
// rbtree (interval) set by walking it from its first element for every
// part. mdlayher/netlink reads with a page-sized buffer, so
// google/nftables' GetSetElements gets parts of about 150 elements and a
// 400,000-element set costs the kernel about 2,700 walks (14 s of system
// time measured). rawConn reads dumps itself with a buffer past the cap:
// parts of about 1,300 elements, as nft gets them.

// dumpBuffer is the read buffer for dumps: above the kernel's 32 KiB cap.
const dumpBuffer = 64 << 10

// nfnlSubsysNFTables is NFNL_SUBSYS_NFTABLES.
const nfnlSubsysNFTables = 10

// nftaSetElemListSet is NFTA_SET_ELEM_LIST_SET (missing from x/sys/unix).
const nftaSetElemListSet = 2

// rawConn is a netfilter netlink socket for the requests google/nftables
// v0.3.0 lacks or makes slow: the ruleset generation and set element
// dumps.
type rawConn struct {
	c       *netlink.Conn
	buf     []byte
	netnsFd int // the namespace (< 0: the caller's)
}

// dialRaw opens a netfilter netlink socket in the namespace netnsFd (< 0:
// the caller's).
func dialRaw(netnsFd int) (*rawConn, error) {
	cfg := &netlink.Config{}
	if netnsFd >= 0 {
		cfg.NetNS = netnsFd
	}
	c, err := netlink.Dial(unix.NETLINK_NETFILTER, cfg)
	if err != nil {
		return nil, fmt.Errorf("netfilter netlink: %w", err)
	}
	return &rawConn{c: c, buf: make([]byte, dumpBuffer), netnsFd: netnsFd}, nil
}

func (r *rawConn) close() error { return r.c.Close() }

// nftRequest builds an nf_tables request: nfgenmsg (family, version 0,
// resource id 0) and attrs.
func nftRequest(msgType uint16, flags netlink.HeaderFlags, family byte, attrs []netlink.Attribute) (netlink.Message, error) {
	data := []byte{family, unix.NFNETLINK_V0, 0, 0}
	if len(attrs) > 0 {
		b, err := netlink.MarshalAttributes(attrs)
		if err != nil {
			return netlink.Message{}, err
		}
		data = append(data, b...)
	}
	return netlink.Message{
		Header: netlink.Header{Type: netlink.HeaderType(nfnlSubsysNFTables<<8 | msgType), Flags: netlink.Request | flags},
		Data:   data,
	}, nil
}

// genID returns the ruleset generation of the namespace: the kernel adds
// one with every committed nftables transaction, of any table.
func (r *rawConn) genID() (uint32, error) {
	req, err := nftRequest(unix.NFT_MSG_GETGEN, 0, unix.AF_UNSPEC, nil)
	if err != nil {
		return 0, err
	}
	msgs, err := r.c.Execute(req)
	if err != nil {
		return 0, fmt.Errorf("get nftables generation: %w", err)
	}
	for _, m := range msgs {
		if len(m.Data) < 4 {
			continue
		}
		for a := range attrs(m.Data[4:]) {
			if a.typ == unix.NFTA_GEN_ID && len(a.data) == 4 {
				return binary.BigEndian.Uint32(a.data), nil
			}
		}
	}
	return 0, errors.New("get nftables generation: no generation in the answer")
}

// element is one set element as dumped: its key and whether it ends an
// interval.
type element struct {
	key []byte
	end bool
}

// setElements dumps the elements of the named set of table inet ctguard.
func (r *rawConn) setElements(table, set string) ([]element, error) {
	req, err := nftRequest(unix.NFT_MSG_GETSETELEM, netlink.Dump, unix.NFPROTO_INET, []netlink.Attribute{
		{Type: unix.NFTA_SET_ELEM_LIST_TABLE, Data: append([]byte(table), 0)},
		{Type: nftaSetElemListSet, Data: append([]byte(set), 0)},
	})
	if err != nil {
		return nil, err
	}
	sent, err := r.c.Send(req)
	if err != nil {
		return nil, fmt.Errorf("dump set %s: %w", set, err)
	}
	var out []element
	var slab []byte // keys are copied out of the reused read buffer
	err = r.dump(sent.Header.Sequence, func(data []byte) error {
		if len(data) < 4 {
			return errors.New("short message")
		}
		for a := range attrs(data[4:]) {
			if a.typ != unix.NFTA_SET_ELEM_LIST_ELEMENTS {
				continue
			}
			for le := range attrs(a.data) {
				if le.typ != unix.NFTA_LIST_ELEM {
					continue
				}
				var e element
				for f := range attrs(le.data) {
					switch f.typ {
					case unix.NFTA_SET_ELEM_KEY:
						for v := range attrs(f.data) {
							if v.typ == unix.NFTA_DATA_VALUE {
								if cap(slab)-len(slab) < len(v.data) {
									slab = make([]byte, 0, max(64<<10, len(v.data)))
								}
								slab = append(slab, v.data...)
								e.key = slab[len(slab)-len(v.data) : len(slab) : len(slab)]
							}
						}
					case unix.NFTA_SET_ELEM_FLAGS:
						if len(f.data) == 4 {
							e.end = binary.BigEndian.Uint32(f.data)&unix.NFT_SET_ELEM_INTERVAL_END != 0
						}
					}
				}
				if e.key == nil {
					return errors.New("set element without key")
				}
				out = append(out, e)
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("dump set %s: %w", set, err)
	}
	return out, nil
}

// dump reads the parts of the dump with sequence seq, calling fn with the
// payload of every message (the data slices it keeps must be copied: the
// buffer is reused). It returns at the end of the dump.
func (r *rawConn) dump(seq uint32, fn func(data []byte) error) error {
	raw, err := r.c.SyscallConn()
	if err != nil {
		return err
	}
	for {
		var n int
		var rerr error
		if err := raw.Read(func(fd uintptr) bool {
			n, _, _, _, rerr = unix.Recvmsg(int(fd), r.buf, nil, 0)
			return rerr != unix.EAGAIN
		}); err != nil {
			return err
		}
		if rerr != nil {
			return rerr
		}
		msgs, err := parseMessages(r.buf[:n])
		if err != nil {
			return err
		}
		for _, m := range msgs {
			if m.seq != seq {
				continue // a late answer to an earlier request
			}
			switch m.typ {
			case unix.NLMSG_DONE:
				return nil
			case unix.NLMSG_ERROR:
				if len(m.data) < 4 {
					return errors.New("short netlink error")
				}
				if code := int32(binary.NativeEndian.Uint32(m.data)); code != 0 {
					return unix.Errno(-code)
				}
				return nil
			}
			if err := fn(m.data); err != nil {
				return err
			}
		}
	}
}

// rawMessage is one netlink message of a read.
type rawMessage struct {
	typ  uint16
	seq  uint32
	data []byte
}

// parseMessages splits a read into netlink messages.
func parseMessages(b []byte) ([]rawMessage, error) {
	var out []rawMessage
	for len(b) >= unix.NLMSG_HDRLEN {
		l := binary.NativeEndian.Uint32(b)
		if l < unix.NLMSG_HDRLEN || int(l) > len(b) {
			return nil, fmt.Errorf("netlink message of length %d in %d bytes", l, len(b))
		}
		out = append(out, rawMessage{
			typ:  binary.NativeEndian.Uint16(b[4:]),
			seq:  binary.NativeEndian.Uint32(b[8:]),
			data: b[unix.NLMSG_HDRLEN:l],
		})
		next := (int(l) + unix.NLMSG_ALIGNTO - 1) &^ (unix.NLMSG_ALIGNTO - 1)
		if next >= len(b) {
			break
		}
		b = b[next:]
	}
	return out, nil
}

// attr is one netlink attribute; typ has the nested and byte-order flags
// masked off.
type attr struct {
	typ  uint16
	data []byte
}

// attrs iterates the attributes in b, stopping at a malformed one.
func attrs(b []byte) func(yield func(attr) bool) {
	return func(yield func(attr) bool) {
		for len(b) >= unix.NLA_HDRLEN {
			l := int(binary.NativeEndian.Uint16(b))
			if l < unix.NLA_HDRLEN || l > len(b) {
				return
			}
			if !yield(attr{typ: binary.NativeEndian.Uint16(b[2:]) &^ (unix.NLA_F_NESTED | unix.NLA_F_NET_BYTEORDER), data: b[unix.NLA_HDRLEN:l]}) {
				return
			}
			next := (l + unix.NLA_ALIGNTO - 1) &^ (unix.NLA_ALIGNTO - 1)
			if next >= len(b) {
				return
			}
			b = b[next:]
		}
	}
}
