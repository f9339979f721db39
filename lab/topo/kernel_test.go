package topo

import (
	"context"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/ctguard/ctguard/internal/netnstest"
)

// TestPrivilegedTopology builds a topology, downloads through the NAT with
// wget and with Go's client on both families, cross-checks the masquerade
// with conntrack -L in the NAT namespace, and checks nothing is left after
// Close.
func TestPrivilegedTopology(t *testing.T) {
	netnstest.RequirePrivileged(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	topo, err := New(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer topo.Close()
	body := NewBody(256 << 10)
	wget, _ := exec.LookPath("wget")
	for _, f := range topo.Families {
		srv, err := topo.StartServer(f, body, 0)
		if err != nil {
			t.Fatal(err)
		}
		for _, tool := range []string{"", wget} {
			d := topo.Fetch(ctx, srv.URL, tool)
			if !d.OK(body) {
				t.Errorf("%s %s download: %d bytes, err %v", f, d.Tool, d.Bytes, d.Err)
			}
		}
		if err := srv.Close(); err != nil {
			t.Error(err)
		}
		out := mustRun(t, "ip", "netns", "exec", topo.NAT.Name, "conntrack", "-L", "-p", "tcp", "-f", string(f))
		a := topo.Addrs(f)
		if !strings.Contains(out, "dst="+a.NATOutside.Addr().String()) || !strings.Contains(out, "src="+a.Client.Addr().String()) {
			t.Errorf("%s: no masqueraded flow in conntrack -L:\n%s", f, out)
		}
	}
	if v, err := ReadSysctl(topo.NAT, "net.ipv4.ip_forward"); err != nil || v != "1" {
		t.Errorf("nat ip_forward = %q, %v", v, err)
	}
	if err := topo.Close(); err != nil {
		t.Fatal(err)
	}
	list := mustRun(t, "ip", "netns", "list")
	for _, ns := range topo.Namespaces() {
		if strings.Contains(list, ns.Name) {
			t.Errorf("namespace %s still listed after Close:\n%s", ns.Name, list)
		}
	}
}

// TestPrivilegedDNATTopology downloads from the service address through a
// DNAT topology on both families and cross-checks with conntrack -L that
// the NAT namespace rewrote the service address to the backend's.
func TestPrivilegedDNATTopology(t *testing.T) {
	netnstest.RequirePrivileged(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	topo, err := Build(ctx, DNAT)
	if err != nil {
		t.Fatal(err)
	}
	defer topo.Close()
	body := NewBody(64 << 10)
	for _, f := range topo.Families {
		srv, err := topo.StartServer(f, body, 0)
		if err != nil {
			t.Fatal(err)
		}
		if d := topo.Fetch(ctx, srv.URL, ""); !d.OK(body) {
			t.Errorf("%s download from %s: %d bytes, err %v", f, srv.URL, d.Bytes, d.Err)
		}
		if err := srv.Close(); err != nil {
			t.Error(err)
		}
		a := topo.Addrs(f)
		out := mustRun(t, "ip", "netns", "exec", topo.NAT.Name, "conntrack", "-L", "-p", "tcp", "-f", string(f), "--dst-nat")
		for _, want := range []string{"dst=" + a.Service.String(), "dport=80 ", "src=" + a.Server.Addr().String(), "sport=8080 "} {
			if !strings.Contains(out, want) {
				t.Errorf("%s: no %q in the DNATed flow of conntrack -L:\n%s", f, want, out)
			}
		}
	}
}

// TestPrivilegedNewCancelled checks a cancelled build leaves nothing behind.
func TestPrivilegedNewCancelled(t *testing.T) {
	netnstest.RequirePrivileged(t)
	before := mustRun(t, "ip", "netns", "list")
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := New(ctx, IPv4); err == nil {
		t.Fatal("New with a cancelled context succeeded")
	}
	if after := mustRun(t, "ip", "netns", "list"); strings.Count(after, NamePrefix) > strings.Count(before, NamePrefix) {
		t.Errorf("cancelled New left namespaces:\n%s", after)
	}
}

func mustRun(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %v: %v\n%s", name, args, err, out)
	}
	return string(out)
}
