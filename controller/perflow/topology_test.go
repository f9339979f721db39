package perflow

import (
	"net"
	"sync"
	"testing"

	"github.com/ctguard/ctguard/internal/netnstest"
)

// topology is client -- nat -- server: the client (198.18.1.2) reaches the
// server (198.19.0.10) through nat, which masquerades to 198.19.0.1.
type topology struct {
	client, nat, server *netnstest.NS
}

const (
	clientAddr = "198.18.1.2"
	natOutAddr = "198.19.0.1"
	serverAddr = "198.19.0.10"
)

func newTopology(t *testing.T) *topology {
	t.Helper()
	tp := &topology{
		client: netnstest.NewNetNS(t, "cli"),
		nat:    netnstest.NewNetNS(t, "nat"),
		server: netnstest.NewNetNS(t, "srv"),
	}
	// The veths are created inside nat with their peers moved straight into
	// the other namespaces: the host namespace is never touched.
	tp.nat.MustRun(t, "ip", "link", "add", "to-cli", "type", "veth", "peer", "name", "eth0", "netns", tp.client.Name)
	tp.nat.MustRun(t, "ip", "link", "add", "to-srv", "type", "veth", "peer", "name", "eth0", "netns", tp.server.Name)
	tp.nat.MustRun(t, "ip", "addr", "add", "198.18.1.1/24", "dev", "to-cli")
	tp.nat.MustRun(t, "ip", "addr", "add", natOutAddr+"/24", "dev", "to-srv")
	tp.nat.MustRun(t, "ip", "link", "set", "to-cli", "up")
	tp.nat.MustRun(t, "ip", "link", "set", "to-srv", "up")
	tp.nat.MustRun(t, "sysctl", "-qw", "net.ipv4.ip_forward=1")
	tp.nat.MustRun(t, "nft", "add table ip labnat; add chain ip labnat post { type nat hook postrouting priority srcnat; }; add rule ip labnat post oifname to-srv masquerade")
	tp.client.MustRun(t, "ip", "addr", "add", clientAddr+"/24", "dev", "eth0")
	tp.client.MustRun(t, "ip", "link", "set", "eth0", "up")
	tp.client.MustRun(t, "ip", "route", "add", "default", "via", "198.18.1.1")
	tp.server.MustRun(t, "ip", "addr", "add", serverAddr+"/24", "dev", "eth0")
	tp.server.MustRun(t, "ip", "link", "set", "eth0", "up")
	return tp
}

// listen starts a server in the server namespace that keeps every accepted
// connection open until the test ends.
func (tp *topology) listen(t *testing.T, port string) {
	t.Helper()
	var ln net.Listener
	var err error
	tp.server.Do(t, func() { ln, err = net.Listen("tcp4", net.JoinHostPort(serverAddr, port)) })
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var conns []net.Conn
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			c.Close()
		}
	})
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}
	}()
}

// dial opens a TCP connection from the client namespace to the server.
func (tp *topology) dial(t *testing.T, port string) *net.TCPConn {
	t.Helper()
	var c net.Conn
	var err error
	tp.client.Do(t, func() { c, err = net.Dial("tcp4", net.JoinHostPort(serverAddr, port)) })
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c.(*net.TCPConn)
}
