package handshake_test

import (
	"context"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/ctguard/ctguard/internal/netnstest"
	"github.com/ctguard/ctguard/lab/handshake"
	"github.com/ctguard/ctguard/lab/topo"
)

// TestPrivilegedClientCounts checks how the client classifies what a
// server does, on the loopback of a namespace of its own: the whole
// response is OK (with or without a timely FIN), a short one, a RST and
// silence are resets of their kind, and a closed port never connects.
func TestPrivilegedClientCounts(t *testing.T) {
	ns := netnstest.NewNetNS(t, "l8client")
	lns := topo.Namespace{Name: ns.Name, Handle: ns.Handle}
	for _, tc := range []struct {
		name  string
		serve func(c *net.TCPConn)
		check func(o handshake.Outcome) bool
	}{
		{"whole response", func(c *net.TCPConn) { c.Write(handshake.Response); c.Close() },
			func(o handshake.Outcome) bool { return o.OK == 2 && o.Reset == 0 }},
		{"whole response, late FIN", func(c *net.TCPConn) { c.Write(handshake.Response); time.Sleep(700 * time.Millisecond); c.Close() },
			func(o handshake.Outcome) bool { return o.OK == 2 && o.Reset == 0 }},
		{"short response", func(c *net.TCPConn) { c.Write(handshake.Response[:10]); c.Close() },
			func(o handshake.Outcome) bool { return o.ResetShort == 2 && o.Reset == 2 }},
		{"RST", func(c *net.TCPConn) { time.Sleep(50 * time.Millisecond); c.SetLinger(0); c.Close() },
			func(o handshake.Outcome) bool { return o.ResetByRST == 2 && o.Reset == 2 }},
		{"silence", func(c *net.TCPConn) { time.Sleep(700 * time.Millisecond); c.Close() },
			func(o handshake.Outcome) bool { return o.ResetTimeout+o.ResetShort == 2 && o.Reset == 2 }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var ln net.Listener
			err := lns.Do(func() (err error) {
				ln, err = net.Listen("tcp", "127.0.0.1:0")
				return err
			})
			if err != nil {
				t.Fatal(err)
			}
			defer ln.Close()
			go func() {
				for {
					c, err := ln.Accept()
					if err != nil {
						return
					}
					go tc.serve(c.(*net.TCPConn))
				}
			}()
			addr := ln.Addr().(*net.TCPAddr).AddrPort()
			o, err := handshake.Run(context.Background(), lns, addr, handshake.Load{Conns: 2, Rate: 100, Timeout: 500 * time.Millisecond})
			if err != nil {
				t.Fatal(err)
			}
			if !tc.check(o) || o.Conns != 2 || o.ConnectFailed != 0 {
				t.Errorf("%+v", o)
			}
		})
	}
	o, err := handshake.Run(context.Background(), lns, netip.MustParseAddrPort("127.0.0.1:9"), handshake.Load{Conns: 2, Rate: 100})
	if err != nil || o.ConnectFailed != 2 || o.Reset != 0 {
		t.Errorf("closed port: %+v, %v", o, err)
	}
}
