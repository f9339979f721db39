package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os/exec"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ctguard/ctguard/controller/incident"
	"github.com/ctguard/ctguard/internal/netnstest"
	"github.com/ctguard/ctguard/internal/racetest"
	"github.com/ctguard/ctguard/lab/handshake"
)

// detectProc is a "ctguard detect -o json" running in a namespace.
type detectProc struct {
	t      testing.TB
	cmd    *exec.Cmd
	stdout *syncBuffer
	stderr *syncBuffer
	done   chan struct{}
}

// startDetect starts detect in ns and waits until it reads its group.
func startDetect(t testing.TB, ns *netnstest.NS, stateDir string, args ...string) *detectProc {
	t.Helper()
	full := append([]string{"netns", "exec", ns.Name, binary, "--state-dir", stateDir, "detect", "-o", "json"}, args...)
	p := &detectProc{t: t, cmd: exec.Command("ip", full...), stdout: &syncBuffer{}, stderr: &syncBuffer{}, done: make(chan struct{})}
	p.cmd.Stdout, p.cmd.Stderr = p.stdout, p.stderr
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.cmd.Wait(); close(p.done) }()
	t.Cleanup(func() {
		p.cmd.Process.Kill()
		<-p.done
	})
	for deadline := time.Now().Add(netnstest.Slow(5 * time.Second)); !strings.Contains(p.stderr.String(), "Ctrl-C to stop"); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("detect did not start: %s", p.stderr.String())
		}
	}
	return p
}

// stop interrupts detect and returns its incidents and its summary.
func (p *detectProc) stop() ([]incident.Incident, string) {
	p.t.Helper()
	p.cmd.Process.Signal(syscall.SIGINT)
	select {
	case <-p.done:
	case <-time.After(netnstest.Slow(5 * time.Second)):
		p.t.Fatalf("detect did not stop on SIGINT; stderr:\n%s", p.stderr.String())
	}
	var out []incident.Incident
	sc := bufio.NewScanner(strings.NewReader(p.stdout.String()))
	for sc.Scan() {
		var inc incident.Incident
		if err := json.Unmarshal(sc.Bytes(), &inc); err != nil {
			p.t.Fatalf("detect printed a line that is not an incident: %q: %v", sc.Text(), err)
		}
		out = append(out, inc)
	}
	return out, p.stderr.String()
}

// conntrackEntry finds, with conntrack -L, the entry of the client's
// connection and returns its original source and reply destination.
func conntrackEntry(t *testing.T, tp *racetest.Topo, client netip.AddrPort) (orig, replyDst netip.AddrPort) {
	t.Helper()
	fam := map[bool]string{false: "ipv4", true: "ipv6"}[tp.IPv6]
	out := string(tp.NAT.MustRun(t, "conntrack", "-L", "-p", "tcp", "-f", fam, "-s", client.Addr().String(), "--sport", fmt.Sprint(client.Port())))
	// tcp 6 ... src=C dst=T sport=P dport=Q ... src=S dst=B sport=Q2 dport=P2
	m := regexp.MustCompile(`src=(\S+) dst=\S+ sport=(\d+) dport=\d+ .*src=\S+ dst=(\S+) sport=\d+ dport=(\d+)`).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("conntrack -L has no entry for %s:\n%s", client, out)
	}
	return netip.AddrPortFrom(netip.MustParseAddr(m[1]), mustPort(m[2])),
		netip.AddrPortFrom(netip.MustParseAddr(m[3]), mustPort(m[4]))
}

func mustPort(s string) uint16 {
	var p uint16
	fmt.Sscan(s, &p)
	return p
}

// TestPrivilegedDetect runs "ctguard detect -o json" on the NAT box of a
// client -- NAT -- server lab whose server sends a segment beyond the
// client's window on each connection: for one connection it prints exactly
// one incident naming the client's address and port (checked against
// conntrack -L), the server and the box's NAT port (SNAT) or the service
// (DNAT). With a dropInvalid mitigation applied, detect reads table inet
// ctguard's evidence rules and prints none, while it still sees the
// invalid segment. SNAT and DNAT, IPv4 and IPv6.
func TestPrivilegedDetect(t *testing.T) {
	t.Parallel()
	for _, kind := range []racetest.Kind{racetest.SNAT, racetest.DNAT} {
		for _, v6 := range []bool{false, true} {
			t.Run(string(kind)+map[bool]string{false: "-ipv4", true: "-ipv6"}[v6], func(t *testing.T) {
				tp := racetest.New(t, kind, v6)
				a := tp.StartAdversary(t)
				// One connection decides the test: give the box's RST time
				// to arrive even on a loaded machine.
				a.Settle = netnstest.Slow(300 * time.Millisecond)
				state := t.TempDir()
				d := startDetect(t, tp.NAT, state)
				if res := tp.Run(t, a, 1, 1); res.Reset != 1 {
					t.Fatalf("unmitigated: %d of 1 connections reset", res.Reset)
				}
				time.Sleep(netnstest.Slow(300 * time.Millisecond)) // let detect read the last messages
				incs, summary := d.stop()
				if len(incs) != 1 {
					t.Fatalf("detect printed %d incidents, want 1:\n%+v\n%s", len(incs), incs, summary)
				}
				inc := incs[0]
				b, _ := json.Marshal(inc)
				t.Logf("incident: %s", b)
				clientAddr := tp.Addrs.Client.Addr().String()
				if inc.Client.Addr().String() != clientAddr || inc.Client.Port() == 0 {
					t.Errorf("client %s, want %s:port", inc.Client, clientAddr)
				}
				orig, replyDst := conntrackEntry(t, tp, inc.Client)
				if orig != inc.Client {
					t.Errorf("conntrack -L: original source %s, detect %s", orig, inc.Client)
				}
				if inc.Server != tp.Backend || inc.Stray == nil || inc.Conntrack == nil {
					t.Errorf("server %s (want %s), stray %v, conntrack %v", inc.Server, tp.Backend, inc.Stray, inc.Conntrack)
				}
				if inc.Policies == nil || len(inc.Policies) != 0 {
					t.Errorf("policies %v, want none", inc.Policies)
				}
				switch kind {
				case racetest.SNAT:
					natOut := tp.Addrs.NATOutside.Addr().String()
					if inc.NAT != "snat" || inc.ResetBy != "box" || inc.Box != replyDst || inc.Box.Addr().String() != natOut || inc.Stray.Hook != "input" {
						t.Errorf("SNAT incident: nat %s reset by %s box %s (conntrack reply dst %s) stray hook %s", inc.NAT, inc.ResetBy, inc.Box, replyDst, inc.Stray.Hook)
					}
				case racetest.DNAT:
					if inc.NAT != "dnat" || inc.ResetBy != "client" || inc.Service != tp.Target || inc.Stray.Hook != "forward" {
						t.Errorf("DNAT incident: nat %s reset by %s service %s (want %s) stray hook %s", inc.NAT, inc.ResetBy, inc.Service, tp.Target, inc.Stray.Hook)
					}
				}
				if !strings.Contains(summary, "1 incidents") || !strings.Contains(summary, "0 log messages lost") {
					t.Errorf("summary: %s", summary)
				}
				if strings.Contains(tableText(tp.NAT), "ctguard_detect") {
					t.Errorf("detect left its table behind:\n%s", tableText(tp.NAT))
				}

				// Mitigated: dropInvalid on the hook the segment reaches.
				hook := map[racetest.Kind]string{racetest.SNAT: "input", racetest.DNAT: "forward"}[kind]
				pol := writePolicy(t, fmt.Sprintf("apiVersion: ctguard.io/v1alpha1\nkind: MitigationPolicy\nmetadata:\n  name: drop\nspec:\n  workaround: dropInvalid\n  dropInvalid:\n    hooks: [%s]\n", hook))
				c := &cli{t: t, ns: tp.NAT, stateDir: state}
				c.mustRun(0, "apply", "-f", pol)
				d = startDetect(t, tp.NAT, state)
				if !strings.Contains(d.stderr.String(), "table inet ctguard (group") {
					t.Errorf("detect did not use the evidence rules in force: %s", d.stderr.String())
				}
				if res := tp.Run(t, a, 1, 1); res.Reset != 0 {
					t.Errorf("mitigated: %d of 1 connections reset", res.Reset)
				}
				time.Sleep(netnstest.Slow(300 * time.Millisecond))
				incs, summary = d.stop()
				if len(incs) != 0 {
					t.Errorf("mitigated: detect printed %d incidents: %+v", len(incs), incs)
				}
				if !regexp.MustCompile(`invalid segments seen on (input [1-9]|input \d+, forward [1-9]).* 1 invalid segments without a reset`).MatchString(summary) {
					t.Errorf("mitigated: detect saw no invalid segment: %s", summary)
				}
				t.Logf("mitigated: %s", strings.TrimSpace(summary))
			})
		}
	}
}

// TestPrivilegedRunIncidentRing runs "ctguard run" with a per-flow policy
// whose flag is set from conntrack events only (handshake none): the
// adversarial server's segment beats the flag on some connections, which
// the box resets. Each reset is an incident under that policy: counted in
// ctguard_incidents_total{policy,workaround} and kept in the live status.
func TestPrivilegedRunIncidentRing(t *testing.T) {
	t.Parallel()
	tp := racetest.New(t, racetest.SNAT, false)
	state := t.TempDir()
	pol := writePolicy(t, "apiVersion: ctguard.io/v1alpha1\nkind: MitigationPolicy\nmetadata:\n  name: events-only\nspec:\n  workaround: liberal\n  liberal:\n    handshake: none\n  match:\n    nat: [snat]\n")
	p := startRun(t, tp.NAT, state, "-f", pol)
	p.waitReady()
	a := tp.StartAdversary(t)
	const n = 20
	res := tp.Run(t, a, n, 4)
	if res.Reset == 0 {
		t.Skipf("no connection of %d lost the race to the event-driven flag on this machine", n)
	}
	var got float64
	poll(t, "the incidents to be counted", 5*time.Second, func() bool {
		got = p.metric("ctguard_incidents_total", "policy", "events-only", "workaround", "liberal")
		return got >= float64(res.Reset)
	})
	if got != float64(res.Reset) {
		t.Errorf("ctguard_incidents_total{policy=events-only} = %v, the server saw %d resets", got, res.Reset)
	}
	if v := p.metric("ctguard_evidence_lost_total", "reason", "sequence_gap"); v != 0 {
		t.Errorf("evidence messages lost: %v", v)
	}
	var st struct {
		Live struct {
			Incidents struct {
				Total uint64
				Last  []incident.Incident
			}
		}
	}
	poll(t, "the live status to show the incidents", 3*time.Second, func() bool {
		out, _, _ := (&cli{t: t, ns: tp.NAT, stateDir: state}).run("status", "-o", "json")
		return json.Unmarshal([]byte(out), &st) == nil && st.Live.Incidents.Total == uint64(res.Reset)
	})
	if len(st.Live.Incidents.Last) != res.Reset {
		t.Fatalf("status shows %d incidents, want %d", len(st.Live.Incidents.Last), res.Reset)
	}
	for _, inc := range st.Live.Incidents.Last {
		if inc.Client.Addr().String() != tp.Addrs.Client.Addr().String() || inc.Server != tp.Backend || len(inc.Policies) != 1 || inc.Policies[0].Name != "events-only" {
			t.Errorf("incident %+v", inc)
		}
	}
	text := (&cli{t: t, ns: tp.NAT, stateDir: state}).mustRun(0, "status")
	if !regexp.MustCompile(fmt.Sprintf(`Incidents \(connections reset\):\s+%d since`, res.Reset)).MatchString(text) || !strings.Contains(text, "policies events-only(liberal)") {
		t.Errorf("status text:\n%s", text)
	}
	t.Logf("%d of %d connections reset, all named as incidents under policy events-only", res.Reset, n)
}

// TestPrivilegedDetectMidDownload injects the beyond-window segment in the
// middle of a download (after 1 MiB) rather than at the handshake: detect
// prints exactly one incident naming the client and the server. SNAT and
// DNAT, IPv4 and IPv6.
func TestPrivilegedDetectMidDownload(t *testing.T) {
	t.Parallel()
	for _, kind := range []racetest.Kind{racetest.SNAT, racetest.DNAT} {
		for _, v6 := range []bool{false, true} {
			t.Run(string(kind)+map[bool]string{false: "-ipv4", true: "-ipv6"}[v6], func(t *testing.T) {
				tp := racetest.New(t, kind, v6)
				injected := serveAndInject(t, tp, 1<<20)
				d := startDetect(t, tp.NAT, t.TempDir())
				var got int64
				var err error
				tp.Client.Do(t, func() {
					var c net.Conn
					if c, err = net.DialTimeout("tcp", tp.Target.String(), netnstest.Slow(3*time.Second)); err != nil {
						return
					}
					defer c.Close()
					c.SetReadDeadline(time.Now().Add(netnstest.Slow(3 * time.Second)))
					got, err = io.Copy(io.Discard, c)
				})
				if ierr := <-injected; ierr != nil {
					t.Fatal(ierr)
				}
				// The server injects after writing 1 MiB; some of it is still
				// in flight when the connection dies.
				if got == 0 || err == nil {
					t.Errorf("download: %d bytes, %v; want a stall or reset mid-download", got, err)
				}
				time.Sleep(netnstest.Slow(300 * time.Millisecond))
				incs, summary := d.stop()
				if len(incs) != 1 {
					t.Fatalf("detect printed %d incidents, want 1: %+v\n%s", len(incs), incs, summary)
				}
				inc := incs[0]
				clientAddr := tp.Addrs.Client.Addr().String()
				if inc.Client.Addr().String() != clientAddr || inc.Server != tp.Backend || inc.Stray == nil || inc.Stray.Len != 100 {
					t.Errorf("incident %+v", inc)
				}
				if kind == racetest.DNAT && inc.Service != tp.Target || kind == racetest.SNAT && !inc.Box.IsValid() {
					t.Errorf("incident %+v: service or box missing", inc)
				}
				t.Logf("%s after %d bytes", incident.Text(inc), got)
			})
		}
	}
}

// serveAndInject serves one download on the backend address and, once
// after bytes have been written, sends from the connection's own tuple the
// lab's crafted segment beyond any window (handshake.Injector). The channel gets the
// injection's outcome.
func serveAndInject(t *testing.T, tp *racetest.Topo, after int) <-chan error {
	t.Helper()
	var ln net.Listener
	var inj *handshake.Injector
	var err error
	tp.Server.Do(t, func() {
		if ln, err = net.Listen("tcp", tp.Backend.String()); err != nil {
			return
		}
		if inj, err = handshake.NewInjector(tp.IPv6); err != nil {
			ln.Close()
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close(); inj.Close() })
	done := make(chan error, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			done <- err
			return
		}
		defer c.Close()
		buf := make([]byte, 64<<10)
		for sent := 0; sent < after; sent += len(buf) {
			if _, err := c.Write(buf); err != nil {
				done <- fmt.Errorf("write before the injection: %w", err)
				return
			}
		}
		done <- inj.Inject(c.(*net.TCPConn))
		c.SetWriteDeadline(time.Now().Add(netnstest.Slow(3 * time.Second)))
		for {
			if _, err := c.Write(buf); err != nil {
				return
			}
		}
	}()
	return done
}
