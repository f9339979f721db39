package main

import (
	"bufio"
	"bytes"
	"context"
	byteorder "encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/ctguard/ctguard/controller/flows"
	"github.com/ctguard/ctguard/controller/nft"
	"github.com/ctguard/ctguard/controller/watch"
	"github.com/ctguard/ctguard/internal/netnstest"
	"github.com/ctguard/ctguard/lab"
	"github.com/ctguard/ctguard/lab/topo"
	"github.com/mdlayher/netlink"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/ti-mo/conntrack"
)

// metricsAddr is where every test's controller serves /metrics: each runs
// in a namespace of its own, with its own loopback.
const metricsAddr = "127.0.0.1:9468"

// runProc is a "ctguard run" process started in a test namespace.
type runProc struct {
	t    testing.TB
	ns   *netnstest.NS
	cmd  *exec.Cmd
	logs *syncBuffer
	http *http.Client
	done chan struct{} // closed when the process has exited
	exit int           // exit code, -1 when killed by a signal
}

// syncBuffer is a bytes.Buffer safe for the process's writes and the
// test's reads.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// startRun starts "ctguard --state-dir stateDir run --metrics-addr
// metricsAddr --resync 1s args..." in ns ("ip netns exec" execs ctguard,
// so the process is ctguard itself). It is killed when the test ends.
func startRun(t testing.TB, ns *netnstest.NS, stateDir string, args ...string) *runProc {
	t.Helper()
	return startRunEnv(t, ns, stateDir, nil, args...)
}

// startRunEnv is startRun with env added to the process's environment.
func startRunEnv(t testing.TB, ns *netnstest.NS, stateDir string, env []string, args ...string) *runProc {
	t.Helper()
	full := append([]string{"netns", "exec", ns.Name, binary, "--state-dir", stateDir,
		"run", "--metrics-addr", metricsAddr, "--resync", "1s"}, args...)
	p := &runProc{t: t, ns: ns, cmd: exec.Command("ip", full...), logs: &syncBuffer{}, done: make(chan struct{})}
	if env != nil {
		p.cmd.Env = append(os.Environ(), env...)
	}
	p.cmd.Stdout, p.cmd.Stderr = p.logs, p.logs
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	lns := topo.Namespace{Name: ns.Name, Handle: ns.Handle}
	p.http = &http.Client{Timeout: netnstest.Slow(2 * time.Second), Transport: &http.Transport{
		DisableKeepAlives: true,
		DialContext: func(ctx context.Context, network, addr string) (conn net.Conn, err error) {
			err = lns.Do(func() (err error) {
				conn, err = (&net.Dialer{}).DialContext(ctx, network, addr)
				return err
			})
			return conn, err
		},
	}}
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		err := p.cmd.Wait()
		var exit *exec.ExitError
		switch {
		case err == nil:
		case errors.As(err, &exit):
			p.exit = exit.ExitCode()
		default:
			p.exit = -1
		}
		close(p.done)
	}()
	t.Cleanup(func() {
		p.cmd.Process.Kill()
		<-p.done
		if t.Failed() {
			t.Logf("ctguard run in %s logged:\n%s", ns.Name, p.logs.String())
		}
	})
	return p
}

// get fetches path from the controller's metrics endpoint.
func (p *runProc) get(path string) (int, string, error) {
	resp, err := p.http.Get("http://" + metricsAddr + path)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), err
}

// waitReady polls /readyz until it answers 200; it fails when the process
// exits first or within 20s.
func (p *runProc) waitReady() {
	p.t.Helper()
	limit := netnstest.Slow(20 * time.Second)
	deadline := time.Now().Add(limit)
	for {
		if code, _, err := p.get("/readyz"); err == nil && code == http.StatusOK {
			return
		}
		select {
		case <-p.done:
			p.t.Fatalf("ctguard run exited with %d before /readyz:\n%s", p.exit, p.logs.String())
		case <-time.After(10 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			p.t.Fatalf("ctguard run not ready after %v:\n%s", limit, p.logs.String())
		}
	}
}

// stop sends sig and returns the exit code (-1 when the signal killed it).
func (p *runProc) stop(sig syscall.Signal) int {
	p.t.Helper()
	if err := p.cmd.Process.Signal(sig); err != nil {
		p.t.Fatal(err)
	}
	select {
	case <-p.done:
	case <-time.After(30 * time.Second):
		p.t.Fatalf("ctguard run still running 30s after %v", sig)
	}
	return p.exit
}

// running reports whether the process has not exited.
func (p *runProc) running() bool {
	select {
	case <-p.done:
		return false
	default:
		return true
	}
}

// scrape parses /metrics with the Prometheus text parser.
func (p *runProc) scrape() map[string]*dto.MetricFamily {
	p.t.Helper()
	code, body, err := p.get("/metrics")
	if err != nil || code != http.StatusOK {
		p.t.Fatalf("GET /metrics: %d, %v", code, err)
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(strings.NewReader(body))
	if err != nil {
		p.t.Fatalf("parse /metrics: %v", err)
	}
	return families
}

// value is the value of the series of name whose labels include want: a
// counter's or gauge's value, a histogram's sample count; -1 when absent.
func value(families map[string]*dto.MetricFamily, name string, want ...string) float64 {
	f := families[name]
	if f == nil {
		return -1
	}
	for _, m := range f.GetMetric() {
		labels := map[string]string{}
		for _, l := range m.GetLabel() {
			labels[l.GetName()] = l.GetValue()
		}
		match := true
		for i := 0; i+1 < len(want); i += 2 {
			match = match && labels[want[i]] == want[i+1]
		}
		if !match {
			continue
		}
		switch {
		case m.Counter != nil:
			return m.Counter.GetValue()
		case m.Gauge != nil:
			return m.Gauge.GetValue()
		case m.Histogram != nil:
			return float64(m.Histogram.GetSampleCount())
		}
	}
	return -1
}

// metric scrapes and returns one value (see value).
func (p *runProc) metric(name string, labels ...string) float64 {
	p.t.Helper()
	return value(p.scrape(), name, labels...)
}

// logged returns the JSON log records whose msg is msg.
func (p *runProc) logged(msg string) []map[string]any {
	var out []map[string]any
	sc := bufio.NewScanner(strings.NewReader(p.logs.String()))
	for sc.Scan() {
		var rec map[string]any
		if json.Unmarshal(sc.Bytes(), &rec) == nil && rec["msg"] == msg {
			out = append(out, rec)
		}
	}
	return out
}

// rssKiB reads the process's resident set size (VmRSS) from /proc.
func (p *runProc) rssKiB() (int, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", p.cmd.Process.Pid))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			return strconv.Atoi(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")))
		}
	}
	return 0, errors.New("no VmRSS in /proc status")
}

// poll calls cond every few milliseconds until it holds, and returns how
// long that took; it fails the test after timeout.
func poll(t *testing.T, what string, timeout time.Duration, cond func() bool) time.Duration {
	t.Helper()
	timeout = netnstest.Slow(timeout)
	start := time.Now()
	for !cond() {
		if time.Since(start) > timeout {
			t.Fatalf("%s: not within %s", what, timeout)
		}
		time.Sleep(2 * time.Millisecond)
	}
	return time.Since(start)
}

// tableText is "nft list table inet ctguard" (no handles), "" when absent.
func tableText(ns *netnstest.NS) string {
	out, err := ns.Run("nft", "list", "table", "inet", "ctguard")
	if err != nil {
		return ""
	}
	return string(out)
}

// counterValues matches the values nft lists for counters.
var counterValues = regexp.MustCompile(`packets \d+ bytes \d+`)

// tableShape is tableText without counter values: a repair restores the
// table's rules, sets and counters, but a packet counted between ctguard's
// last read and the drift (the evidence rules count every invalid packet in
// the namespace) is not carried over into the re-created table.
func tableShape(ns *netnstest.NS) string {
	return counterValues.ReplaceAllString(tableText(ns), "packets N bytes N")
}

// countRules counts the rules (but ctguard's ownership mark) and tables
// named ctguard in "nft -j list ruleset".
func countRules(t *testing.T, ns *netnstest.NS) (rules, tables int) {
	t.Helper()
	for _, item := range ns.NftJSON(t, "list", "ruleset")["nftables"].([]any) {
		obj := item.(map[string]any)
		if r, ok := obj["rule"].(map[string]any); ok && r["table"] == "ctguard" && r["chain"] != nft.OwnerChainName {
			rules++
		}
		if tb, ok := obj["table"].(map[string]any); ok && tb["name"] == "ctguard" {
			tables++
		}
	}
	return rules, tables
}

// journalRevisions reads the revision numbers and whether an apply is
// pending from the state directory's journal.
func journalRevisions(t *testing.T, stateDir string) (numbers []int, pending bool) {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(stateDir, "journal.json"))
	if err != nil {
		t.Fatal(err)
	}
	var j struct {
		Revisions []struct{ Number int }
		Pending   *struct{ Number int }
	}
	if err := json.Unmarshal(b, &j); err != nil {
		t.Fatal(err)
	}
	for _, r := range j.Revisions {
		numbers = append(numbers, r.Number)
	}
	return numbers, j.Pending != nil
}

// dropPolicy is a dropInvalid policy for servers in destinations, port 443.
func dropPolicy(name string, destinations ...string) string {
	return fmt.Sprintf(`apiVersion: ctguard.io/v1alpha1
kind: MitigationPolicy
metadata:
  name: %s
spec:
  workaround: dropInvalid
  match:
    destinations: [%s]
    destinationPorts: [443]
`, name, strings.Join(destinations, ", "))
}

// perFlowPolicy flags the REPLY direction of TCP flows from 198.18.0.0/15,
// with the handshake protection given ("" for the default, gate).
func perFlowPolicy(name string, natOnly bool, handshake string) string {
	hs := ""
	if handshake != "" {
		hs = "\n    handshake: " + handshake
	}
	return fmt.Sprintf(`apiVersion: ctguard.io/v1alpha1
kind: MitigationPolicy
metadata:
  name: %s
spec:
  workaround: liberal
  liberal:
    scope: perFlow
    directions: [reply]%s
  match:
    family: ipv4
    sources: [198.18.0.0/15]
    natOnly: %t
`, name, hs, natOnly)
}

const globalPolicy = `apiVersion: ctguard.io/v1alpha1
kind: MitigationPolicy
metadata:
  name: emergency
spec:
  workaround: liberal
  liberal:
    scope: global
`

// replaceFile writes data to a temporary file beside path and renames it
// over path, as editors and config management tools do.
func replaceFile(t *testing.T, path, data string) {
	t.Helper()
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(data), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

// TestPrivilegedRunRepairsDrift deletes, flushes and alters ctguard's
// table behind the running controller's back: each is repaired, counted by
// kind and triggered by the nftables monitor (the resync is a minute here,
// so that nothing else can repair them in time). A large
// batch in another table (tens of thousands of notifications, the kind of
// burst that can end the monitor) leaves the loop quiet and drift still
// repaired from the monitor.
func TestPrivilegedRunRepairsDrift(t *testing.T) {
	t.Parallel()
	c := newCLI(t)
	path := writePolicy(t, dropPolicy("wan", "198.19.0.0/24", "198.19.9.9"))
	p := startRun(t, c.ns, c.stateDir, "-f", path, "--resync", "1m")
	p.waitReady()
	want := tableShape(c.ns)
	if want == "" {
		t.Fatal("no table inet ctguard once ready")
	}

	for _, tc := range []struct {
		name, kind string
		drift      []string
	}{
		{"delete table", "table_missing", []string{"nft", "delete", "table", "inet", "ctguard"}},
		{"flush ruleset", "table_missing", []string{"nft", "flush", "ruleset"}},
		{"foreign rule", "table_changed", []string{"nft", "add", "rule", "inet", "ctguard", "input", "tcp", "dport", "22", "accept"}},
	} {
		before := p.metric("ctguard_drift_repairs_total", "kind", tc.kind)
		// The monitor notifies at most every 500ms, and the previous
		// repair's own write was reported: wait past both.
		time.Sleep(1100 * time.Millisecond)
		start := time.Now()
		c.ns.MustRun(t, tc.drift[0], tc.drift[1:]...)
		poll(t, tc.name+" repaired", 5*time.Second, func() bool { return tableShape(c.ns) == want })
		t.Logf("%s: repaired %v after the change began (nft polled every few ms)", tc.name, time.Since(start))
		poll(t, tc.name+" counted", 2*time.Second, func() bool {
			return p.metric("ctguard_drift_repairs_total", "kind", tc.kind) == before+1
		})
	}
	for _, rec := range p.logged("repaired drift") {
		if rec["trigger"] != "table-event" {
			t.Errorf("a repair was triggered by %v, want the nftables monitor (table-event): %v", rec["trigger"], rec)
		}
	}

	// 30,000 set elements in a table of another program: one batch, tens of
	// thousands of notifications.
	var bulk strings.Builder
	bulk.WriteString("table inet bulk { set s { type ipv4_addr; elements = { ")
	for i := range 30000 {
		fmt.Fprintf(&bulk, "198.18.%d.%d, ", i/256, i%256)
	}
	bulk.WriteString("}; }; }\n")
	nftFile := filepath.Join(t.TempDir(), "bulk.nft")
	if err := os.WriteFile(nftFile, []byte(bulk.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	runs := p.metric("ctguard_reconcile_runs_total")
	c.ns.MustRun(t, "nft", "-f", nftFile)
	time.Sleep(1100 * time.Millisecond)
	if d := p.metric("ctguard_reconcile_runs_total") - runs; d > 2 {
		t.Fatalf("%v reconcile passes in 1.1s after a large foreign batch, want one or two", d)
	}
	start := time.Now()
	c.ns.MustRun(t, "nft", "delete", "table", "inet", "ctguard")
	poll(t, "repair after the large batch", 5*time.Second, func() bool { return tableShape(c.ns) == want })
	t.Logf("delete table after a 30,000-element foreign batch: repaired after %v", time.Since(start))
	last := p.logged("repaired drift")
	if n := len(last); n == 0 || last[n-1]["trigger"] != "table-event" {
		t.Fatalf("the repair after the large batch was not triggered by the monitor: %v", last)
	}
	if !p.running() {
		t.Fatal("ctguard run exited")
	}
}

// TestPrivilegedRunReloadsEdits edits the policy file the way editors do
// (write a temporary file, rename it over the original): the new policy is
// applied and "plan" of it has nothing to do. An invalid edit keeps the
// last good policy in force, is counted and logged. "status" shows the
// running controller.
func TestPrivilegedRunReloadsEdits(t *testing.T) {
	t.Parallel()
	c := newCLI(t)
	path := writePolicy(t, dropPolicy("wan", "198.19.0.0/24"))
	p := startRun(t, c.ns, c.stateDir, "-f", path)
	p.waitReady()

	edited := dropPolicy("wan", "198.19.0.0/24", "198.19.7.0/24")
	replaceFile(t, path, edited)
	took := poll(t, "the edit applied", 10*time.Second, func() bool { return strings.Contains(tableText(c.ns), "198.19.7.0/24") })
	t.Logf("edit (rename over the file) -> applied: %v (the watcher's debounce is %v)", took, watch.Debounce)
	c.mustRun(0, "plan", "-f", path)
	if g := p.metric("ctguard_policy_generation"); g != 2 {
		t.Fatalf("ctguard_policy_generation = %v after one edit, want 2", g)
	}

	good := tableText(c.ns)
	errorsBefore := p.metric("ctguard_policy_load_errors_total")
	replaceFile(t, path, strings.Replace(edited, "198.19.7.0/24", "198.19.7.300/24", 1))
	poll(t, "the invalid edit counted", 10*time.Second, func() bool {
		return p.metric("ctguard_policy_load_errors_total") == errorsBefore+1
	})
	if got := tableText(c.ns); got != good {
		t.Fatalf("an invalid edit changed the table:\n%s\nwant\n%s", got, good)
	}
	if !p.running() {
		t.Fatal("ctguard run exited on an invalid edit")
	}
	rejected := p.logged("policy rejected; the last good policy stays in force")
	if len(rejected) != 1 || !strings.Contains(fmt.Sprint(rejected[0]["err"]), `invalid CIDR "198.19.7.300/24"`) {
		t.Fatalf("rejection log: %v", rejected)
	}

	var st struct {
		Live *struct {
			PID        int
			Revision   int
			Generation int
			LastError  string
		}
		ControllerRunning bool
		Drift             bool
		State             string
	}
	// A rejected policy makes the state failing: exit 4.
	if err := json.Unmarshal([]byte(c.mustRun(4, "status", "-o", "json")), &st); err != nil {
		t.Fatal(err)
	}
	if st.Live == nil || !st.ControllerRunning || st.State != "failing" || st.Live.PID != p.cmd.Process.Pid || st.Live.Generation != 2 ||
		st.Live.Revision != 2 || !strings.Contains(st.Live.LastError, "198.19.7.300") || st.Drift {
		t.Fatalf("status while running: %+v live %+v", st, st.Live)
	}
	if code := p.stop(syscall.SIGTERM); code != 0 {
		t.Fatalf("SIGTERM: exit %d", code)
	}
	if err := json.Unmarshal([]byte(c.mustRun(0, "status", "-o", "json")), &st); err != nil {
		t.Fatal(err)
	}
	if st.ControllerRunning {
		t.Fatal("status says the stopped controller still runs")
	}
}

// TestPrivilegedRunReloadsConfigMapSwap mounts the policy the way kubelet
// does a ConfigMap and swaps it as kubelet does: a new timestamped
// directory, a "..data_tmp" symlink to it renamed over "..data", the old
// directory removed.
func TestPrivilegedRunReloadsConfigMapSwap(t *testing.T) {
	t.Parallel()
	c := newCLI(t)
	mount := t.TempDir()
	version := func(ts, doc string) {
		dir := filepath.Join(mount, ts)
		if err := os.Mkdir(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, "policy.yaml"), []byte(doc), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	version("..2026_11_25_10_00_00.1", dropPolicy("wan", "198.19.0.0/24"))
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.Symlink("..2026_11_25_10_00_00.1", filepath.Join(mount, "..data")))
	must(os.Symlink("..data/policy.yaml", filepath.Join(mount, "policy.yaml")))
	p := startRun(t, c.ns, c.stateDir, "-f", mount)
	p.waitReady()

	version("..2026_11_25_10_05_00.2", dropPolicy("wan", "198.19.0.0/24", "198.19.8.0/24"))
	start := time.Now()
	must(os.Symlink("..2026_11_25_10_05_00.2", filepath.Join(mount, "..data_tmp")))
	must(os.Rename(filepath.Join(mount, "..data_tmp"), filepath.Join(mount, "..data")))
	must(os.RemoveAll(filepath.Join(mount, "..2026_11_25_10_00_00.1")))
	poll(t, "the ConfigMap swap applied", 10*time.Second, func() bool { return strings.Contains(tableText(c.ns), "198.19.8.0/24") })
	t.Logf("ConfigMap ..data swap -> applied: %v", time.Since(start))
	c.mustRun(0, "plan", "-f", mount)
}

// TestPrivilegedRunStopAndRestart: SIGTERM leaves the table and the sysctl
// in force; a restart converges without duplicate rules and without a new
// journal revision; with --cleanup-on-exit, SIGTERM removes everything.
func TestPrivilegedRunStopAndRestart(t *testing.T) {
	t.Parallel()
	c := newCLI(t)
	before := c.ruleset()
	liberalBefore := c.ns.Sysctl(t, "net.netfilter.nf_conntrack_tcp_be_liberal")
	path := writePolicy(t, dropPolicy("wan", "198.19.0.0/24")+"---\n"+globalPolicy)

	p := startRun(t, c.ns, c.stateDir, "-f", path)
	p.waitReady()
	rules, _ := countRules(t, c.ns)
	table := tableText(c.ns)
	revs, _ := journalRevisions(t, c.stateDir)
	if code := p.stop(syscall.SIGTERM); code != 0 {
		t.Fatalf("SIGTERM: exit %d, want 0", code)
	}
	if tableText(c.ns) != table || c.ns.Sysctl(t, "net.netfilter.nf_conntrack_tcp_be_liberal") != "1" {
		t.Fatal("SIGTERM did not leave the mitigation in force")
	}

	p = startRun(t, c.ns, c.stateDir, "-f", path)
	p.waitReady()
	if r, n := countRules(t, c.ns); r != rules || n != 1 {
		t.Fatalf("after a restart: %d rules in %d tables, want %d in 1", r, n, rules)
	}
	if got, pending := journalRevisions(t, c.stateDir); fmt.Sprint(got) != fmt.Sprint(revs) || pending {
		t.Fatalf("journal revisions %v (pending %t) after a restart with the same policy, want %v", got, pending, revs)
	}
	if code := p.stop(syscall.SIGTERM); code != 0 {
		t.Fatalf("SIGTERM: exit %d, want 0", code)
	}

	p = startRun(t, c.ns, c.stateDir, "-f", path, "--cleanup-on-exit")
	p.waitReady()
	if code := p.stop(syscall.SIGTERM); code != 0 {
		t.Fatalf("SIGTERM with --cleanup-on-exit: exit %d, want 0", code)
	}
	if after := c.ruleset(); after != before {
		t.Fatalf("ruleset after --cleanup-on-exit:\n%s\nwant\n%s", after, before)
	}
	if got := c.ns.Sysctl(t, "net.netfilter.nf_conntrack_tcp_be_liberal"); got != liberalBefore {
		t.Fatalf("be_liberal = %s after --cleanup-on-exit, want %s", got, liberalBefore)
	}
}

// TestPrivilegedRunKilledDuringApply kills the controller at several
// moments of the first apply of a 10,000-CIDR policy: the next start
// converges to exactly one table, status shows no drift and no interrupted
// apply, and rollback --all leaves the ruleset as it was.
func TestPrivilegedRunKilledDuringApply(t *testing.T) {
	t.Parallel()
	c := newCLI(t)
	before := c.ruleset()
	dsts := make([]string, 10000)
	for i := range dsts {
		// Every fourth address: /32s that no merge can join.
		a := netip.AddrFrom4([4]byte{198, 18, byte(i * 4 >> 8), byte(i * 4)})
		dsts[i] = a.String()
	}
	path := writePolicy(t, dropPolicy("big", dsts...))

	start := time.Now()
	p := startRun(t, c.ns, c.stateDir, "-f", path)
	p.waitReady()
	ready := time.Since(start)
	rules, _ := countRules(t, c.ns)
	h := p.scrape()["ctguard_reconcile_duration_seconds"].GetMetric()[0].GetHistogram()
	t.Logf("10,000-CIDR policy: start to /readyz %v, of which the first apply %v; %d rules", ready,
		time.Duration(h.GetSampleSum()/float64(h.GetSampleCount())*float64(time.Second)), rules)
	p.stop(syscall.SIGKILL)
	c.mustRun(0, "rollback", "--all")

	for _, frac := range []float64{0.1, 0.3, 0.5, 0.7, 0.9} {
		delay := time.Duration(frac * float64(ready))
		p := startRun(t, c.ns, c.stateDir, "-f", path)
		time.Sleep(delay)
		p.stop(syscall.SIGKILL)
		_, tables := countRules(t, c.ns)
		var st struct{ Interrupted bool }
		out, _, code := c.run("status", "-o", "json")
		if err := json.Unmarshal([]byte(out), &st); err != nil {
			t.Fatal(err)
		}
		// An interrupted apply is failing (4); a finished one in force
		// (0); a table the kill left without its journal entry drifted (3).
		if want := map[bool][]int{true: {4}, false: {0, 3}}[st.Interrupted]; !slices.Contains(want, code) {
			t.Fatalf("status exit %d with interrupted %t, want one of %v", code, st.Interrupted, want)
		}
		t.Logf("SIGKILL %v after start: %d table(s), interrupted apply %t", delay, tables, st.Interrupted)
	}

	p = startRun(t, c.ns, c.stateDir, "-f", path)
	p.waitReady()
	if r, n := countRules(t, c.ns); r != rules || n != 1 {
		t.Fatalf("after the kills and a restart: %d rules in %d tables, want %d in 1", r, n, rules)
	}
	var st struct {
		Drift, Interrupted, TablePresent bool
	}
	if err := json.Unmarshal([]byte(c.mustRun(0, "status", "-o", "json")), &st); err != nil {
		t.Fatal(err)
	}
	if st.Drift || st.Interrupted || !st.TablePresent {
		t.Fatalf("status after convergence: %+v", st)
	}
	if code := p.stop(syscall.SIGTERM); code != 0 {
		t.Fatalf("SIGTERM: exit %d", code)
	}
	c.mustRun(0, "rollback", "--all")
	if after := c.ruleset(); after != before {
		t.Fatalf("ruleset after rollback --all:\n%s\nwant\n%s", after, before)
	}
}

// TestPrivilegedRunFlagsNATedFlows runs ctguard in a lab topology's NAT
// namespace with a perFlow policy: real downloads through the masquerade
// move the flow metrics and the flag latency histogram.
func TestPrivilegedRunFlagsNATedFlows(t *testing.T) {
	t.Parallel()
	netnstest.RequirePrivileged(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	tp, err := topo.New(ctx, topo.IPv4)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tp.Close() })
	c := &cli{t: t, ns: &netnstest.NS{Name: tp.NAT.Name, Handle: tp.NAT.Handle}, stateDir: t.TempDir()}
	// The event engine's own measurements: without the gate.
	path := writePolicy(t, perFlowPolicy("egress", true, "none"))
	p := startRun(t, c.ns, c.stateDir, "-f", path)
	p.waitReady()
	if v := p.metric("ctguard_flows_flagged_total", "policy", "egress"); v != 0 {
		t.Fatalf("flagged before any flow: %v", v)
	}

	body := topo.NewBody(64 << 10)
	srv, err := tp.StartServer(topo.IPv4, body, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	const downloads = 5
	for i := 1; i <= downloads; i++ {
		if d := tp.Fetch(ctx, srv.URL, ""); !d.OK(body) {
			t.Fatalf("download %d: %v", i, d.Err)
		}
		poll(t, "the flow matched", 5*time.Second, func() bool {
			time.Sleep(10 * time.Millisecond) // each scrape is a flow too
			return p.metric("ctguard_flows_matched_total", "policy", "egress") == float64(i)
		})
	}
	// Each matching flow is flagged at least once; an UPDATE event read
	// after the flag's confirmation but built before it can make the
	// engine flag a flow again (counted in ctguard_flows_reflagged_total).
	m := p.scrape()
	if v := value(m, "ctguard_flows_flagged_total", "policy", "egress"); v < downloads {
		t.Errorf("ctguard_flows_flagged_total = %v, want at least %d", v, downloads)
	}
	t.Logf("%d flows: flagged %v, reflagged %v, confirmed %v", downloads, value(m, "ctguard_flows_flagged_total", "policy", "egress"),
		value(m, "ctguard_flows_reflagged_total", "policy", "egress"), value(m, "ctguard_flows_confirmed_total", "policy", "egress"))
	// A flow a resync flags before its NEW event is read has no latency
	// sample, so only some observations are certain.
	if v := value(m, "ctguard_flag_latency_seconds"); v < 1 {
		t.Errorf("ctguard_flag_latency_seconds has %v observations, want some", v)
	}
	h := m["ctguard_flag_latency_seconds"].GetMetric()[0].GetHistogram()
	t.Logf("flag latency over %d real flows: mean %v", downloads, time.Duration(h.GetSampleSum()/float64(h.GetSampleCount())*float64(time.Second)))
	mark := fmt.Sprint(flows.DefaultMarkBit)
	if out := string(c.ns.MustRun(t, "conntrack", "-L", "-p", "tcp", "--mark", mark+"/"+mark)); strings.Count(out, "dport=80 ") != downloads {
		t.Errorf("conntrack -L --mark: want %d flagged flows to port 80:\n%s", downloads, out)
	}
	var st struct {
		Live *struct {
			Engine struct {
				Policies map[string]struct{ Matched uint64 }
			}
		}
		ControllerRunning bool
	}
	// The live status is published every 2s and after every reconcile.
	poll(t, "live status with the flows", 3*time.Second, func() bool {
		if err := json.Unmarshal([]byte(c.mustRun(0, "status", "-o", "json")), &st); err != nil {
			t.Fatal(err)
		}
		return st.ControllerRunning && st.Live != nil && st.Live.Engine.Policies["egress"].Matched == downloads
	})
}

// binaryRun is a lab.Mitigation that runs the ctguard binary ("ctguard
// run") with a policy in the lab's NAT namespace, stops it with SIGTERM
// and removes everything with "ctguard rollback --all".
type binaryRun struct {
	t       *testing.T
	policy  string
	flagged float64 // flows the engine and the gate flagged, when stopped
}

func (*binaryRun) Name() string { return "ctguard-run" }

func (m *binaryRun) Apply(_ context.Context, nat lab.Namespace) (func() error, error) {
	c := &cli{t: m.t, ns: &netnstest.NS{Name: nat.Name, Handle: nat.Handle}, stateDir: m.t.TempDir()}
	p := startRun(m.t, c.ns, c.stateDir, "-f", m.policy)
	p.waitReady()
	return func() error {
		fams := p.scrape()
		m.flagged = value(fams, "ctguard_flows_flagged_total", "policy", "egress") + value(fams, "ctguard_gate_packets_total", "result", "flagged")
		if code := p.stop(syscall.SIGTERM); code != 0 {
			return fmt.Errorf("SIGTERM: exit %d", code)
		}
		if _, errOut, code := c.run("rollback", "--all"); code != 0 {
			return fmt.Errorf("rollback --all: exit %d: %s", code, errOut)
		}
		return nil
	}, nil
}

// TestPrivilegedRunProtectsIncident is the incident end to end with the
// controller binary running: the beyond-window segment resets the download
// without ctguard and does not with "ctguard run" and a perFlow policy.
func TestPrivilegedRunProtectsIncident(t *testing.T) {
	t.Parallel()
	netnstest.RequirePrivileged(t)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	m := &binaryRun{t: t, policy: writePolicy(t, perFlowPolicy("egress", true, ""))}
	opts := lab.Options{
		Families:    []lab.Family{lab.IPv4},
		Cases:       []lab.Case{lab.BeyondWindow},
		Mitigations: []lab.Mitigation{m},
		BodySize:    2 << 20,
	}
	if path, err := exec.LookPath("wget"); err == nil {
		opts.WgetPath = path
	}
	rep, err := lab.Run(ctx, opts)
	if err != nil {
		t.Fatal(err)
	}
	var text strings.Builder
	rep.WriteText(&text)
	t.Log("\n" + text.String())
	if len(rep.Results) != 2 {
		t.Fatalf("%d results, want the baseline and ctguard-run", len(rep.Results))
	}
	base, run := rep.Results[0], rep.Results[1]
	if !base.Reproducible || !base.RSTFromNAT || base.DownloadOK {
		t.Fatalf("baseline did not reproduce the NAT's RST: %+v", base)
	}
	if run.Error != "" || !run.Protected || run.RSTFromNAT || !run.DownloadOK {
		t.Fatalf("ctguard run did not protect the download: %+v", run)
	}
	if m.flagged < 1 {
		t.Fatalf("engine and gate flagged %v flows during the protected download", m.flagged)
	}
}

// TestPrivilegedRunMemory measures the controller's resident memory and Go
// heap idle and while conntrack creates about 10,000 matching flows a
// second (through ctnetlink, as the per-flow benchmark does). It logs the
// numbers; it asserts only that every flow was flagged.
func TestPrivilegedRunMemory(t *testing.T) {
	t.Parallel()
	c := newCLI(t)
	path := writePolicy(t, perFlowPolicy("load", false, "none")) // flows made through ctnetlink have no SYN-ACK to gate
	p := startRun(t, c.ns, c.stateDir, "-f", path)
	p.waitReady()
	time.Sleep(time.Second)
	idle := p.scrape()
	idleRSS, err := p.rssKiB()
	if err != nil {
		t.Fatal(err)
	}

	ct, err := conntrack.Dial(&netlink.Config{NetNS: c.ns.Fd()})
	if err != nil {
		t.Fatal(err)
	}
	defer ct.Close()
	const n, rate = 20000, 10000
	peak := 0
	sampled := make(chan struct{})
	stopSampling := make(chan struct{})
	go func() {
		defer close(sampled)
		for {
			if v, err := p.rssKiB(); err == nil {
				peak = max(peak, v)
			}
			select {
			case <-stopSampling:
				return
			case <-time.After(50 * time.Millisecond):
			}
		}
	}()
	base := byteorder.BigEndian.Uint32(netip.MustParseAddr("198.18.0.0").AsSlice())
	start := time.Now()
	for i := range n {
		if d := time.Until(start.Add(time.Duration(i) * time.Second / rate)); d > 0 {
			time.Sleep(d)
		}
		var a [4]byte
		byteorder.BigEndian.PutUint32(a[:], base+uint32(i))
		f := conntrack.NewFlow(flows.ProtoTCP, conntrack.StatusConfirmed|conntrack.StatusSeenReply|conntrack.StatusAssured,
			netip.AddrFrom4(a), netip.MustParseAddr("198.19.0.10"), 40000, 443, 300, 0)
		f.ProtoInfo.TCP = &conntrack.ProtoInfoTCP{State: uint8(flows.TCPEstablished), OriginalWindowScale: 7, ReplyWindowScale: 7,
			OriginalFlags: 0x0101, ReplyFlags: 0x0101}
		if err := ct.Create(f); err != nil {
			t.Fatalf("create flow %d: %v", i, err)
		}
	}
	created := time.Since(start)
	poll(t, "every flow flagged", 30*time.Second, func() bool {
		time.Sleep(50 * time.Millisecond)
		return p.metric("ctguard_flows_flagged_total", "policy", "load") == n
	})
	flagged := time.Since(start)
	loaded := p.scrape()
	close(stopSampling)
	<-sampled
	heap := func(m map[string]*dto.MetricFamily) string {
		return fmt.Sprintf("%.1f MiB", value(m, "go_memstats_heap_inuse_bytes")/(1<<20))
	}
	t.Logf("idle: RSS %.1f MiB, heap in use %s", float64(idleRSS)/1024, heap(idle))
	t.Logf("%d flows created in %v (%.0f/s), all flagged after %v: peak RSS %.1f MiB, heap in use after %s, events lost %v, resyncs %v",
		n, created.Round(time.Millisecond), float64(n)/created.Seconds(), flagged.Round(time.Millisecond), float64(peak)/1024, heap(loaded),
		value(loaded, "ctguard_events_lost_total"), value(loaded, "ctguard_resyncs_total"))
}
