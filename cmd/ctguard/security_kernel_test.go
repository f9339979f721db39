package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// runFor runs ctguard in the test's namespace like cli.run, but kills it
// after timeout: a command that should refuse at once must never hang a
// test.
func (c *cli) runFor(timeout time.Duration, args ...string) (string, string, int) {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	full := append([]string{"netns", "exec", c.ns.Name, binary, "--state-dir", c.stateDir}, args...)
	cmd := exec.CommandContext(ctx, "ip", full...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	if ctx.Err() != nil {
		c.t.Fatalf("ctguard %v still running after %v\nstderr:\n%s", args, timeout, stderr.String())
	}
	var exit *exec.ExitError
	switch {
	case err == nil:
		return stdout.String(), stderr.String(), 0
	case errors.As(err, &exit):
		return stdout.String(), stderr.String(), exit.ExitCode()
	}
	c.t.Fatalf("ctguard %v: %v", args, err)
	return "", "", -1
}

// TestPrivilegedJournalCannotWriteOtherSysctls is finding 1 of issue 13: a
// state directory owned by nobody was accepted, and a journal naming
// net.ipv4.ip_forward made root's rollback --all write it.
func TestPrivilegedJournalCannotWriteOtherSysctls(t *testing.T) {
	t.Parallel()
	c := newCLI(t)
	if err := os.Chown(c.stateDir, 65534, 65534); err != nil {
		t.Fatal(err)
	}
	_, errOut, code := c.run("apply")
	if code != 1 || !strings.Contains(errOut, "owned by uid 65534") || !strings.Contains(errOut, "chown 0 "+c.stateDir) {
		t.Fatalf("apply with a state dir of nobody: exit %d\n%s", code, errOut)
	}
	if _, err := c.ns.Run("nft", "list", "table", "inet", "ctguard"); err == nil {
		t.Fatal("apply changed the kernel although the state dir is untrusted")
	}
	if err := os.Chown(c.stateDir, 0, 0); err != nil {
		t.Fatal(err)
	}

	c.mustRun(0, "apply")
	path := filepath.Join(c.stateDir, "journal.json")
	var j map[string]any
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &j); err != nil {
		t.Fatal(err)
	}
	j["baseline"].(map[string]any)["sysctls"] = map[string]string{"net.ipv4.ip_forward": "1"}
	if b, err = json.Marshal(j); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	before := c.ns.Sysctl(t, "net.ipv4.ip_forward")
	_, errOut, code = c.run("rollback", "--all")
	if code != 1 || !strings.Contains(errOut, "ctguard only ever writes net.netfilter.nf_conntrack_tcp_be_liberal") {
		t.Fatalf("rollback --all of a forged journal: exit %d\n%s", code, errOut)
	}
	if got := c.ns.Sysctl(t, "net.ipv4.ip_forward"); got != before {
		t.Fatalf("net.ipv4.ip_forward %s -> %s", before, got)
	}
	// status still works, says the way out, and exits 4 (failing).
	out := c.mustRun(4, "status")
	if !strings.Contains(out, "damaged journal") || !strings.Contains(out, "mv journal.json") {
		t.Fatalf("status with a forged journal:\n%s", out)
	}
}

// TestPrivilegedForeignTableKept is finding 2: an operator's table inet
// ctguard was destroyed by apply and at run start, and plan misdescribed
// it. Now plan, apply and run refuse, naming what it holds and the way out,
// and the table is untouched.
func TestPrivilegedForeignTableKept(t *testing.T) {
	t.Parallel()
	c := newCLI(t)
	c.ns.MustRun(t, "sh", "-c", `printf '%s' 'table inet ctguard {
	counter c42 { packets 42 bytes 4200 }
	set s { type ipv4_addr; elements = { 198.18.0.1 } }
	chain raw { type filter hook prerouting priority raw; policy drop; }
	chain other { }
}
' | nft -f -`)
	before := c.ruleset()
	for _, args := range [][]string{{"plan"}, {"apply"}, {"run", "--metrics-addr", ""}} {
		_, errOut, code := c.runFor(20*time.Second, args...)
		if code != 1 {
			t.Fatalf("%v over a foreign table: exit %d\n%s", args, code, errOut)
		}
		for _, want := range []string{"not created by ctguard", "chain raw (type filter, hook prerouting, priority -300, policy drop, 0 rules)", "set s (type ipv4_addr", "counter c42", "nft delete table inet ctguard"} {
			if !strings.Contains(errOut, want) {
				t.Errorf("%v: stderr lacks %q:\n%s", args, want, errOut)
			}
		}
	}
	if after := c.ruleset(); after != before {
		t.Fatalf("the foreign table changed:\n%s\nwant\n%s", after, before)
	}
	if out := c.mustRun(4, "status"); !strings.Contains(out, "not created by ctguard") { // failing: ctguard cannot apply
		t.Fatalf("status does not show the foreign table:\n%s", out)
	}
	// Once the operator deletes it, ctguard's own table carries the mark.
	c.ns.MustRun(t, "nft", "delete", "table", "inet", "ctguard")
	c.mustRun(0, "apply")
	if out := string(c.ns.MustRun(t, "nft", "list", "chain", "inet", "ctguard", "ctguard_owner")); !strings.Contains(out, "table created and managed by ctguard") {
		t.Fatalf("ctguard's table lacks its mark:\n%s", out)
	}
}

// TestPrivilegedOneControllerPerNamespace is finding 3: two controllers
// with different state directories fought over one namespace, and a
// one-shot apply with a third state directory exited 0 and was reverted.
func TestPrivilegedOneControllerPerNamespace(t *testing.T) {
	t.Parallel()
	c := newCLI(t)
	p := startRun(t, c.ns, c.stateDir, "-f", writePolicy(t, dropPolicy("one", "198.19.0.0/24")))
	p.waitReady()
	table := tableText(c.ns)
	pid := fmt.Sprintf("pid %d", p.cmd.Process.Pid)

	other := &cli{t: t, ns: c.ns, stateDir: t.TempDir()}
	two := writePolicy(t, dropPolicy("two", "198.19.1.0/24"))
	for _, args := range [][]string{
		{"run", "--metrics-addr", "", "-f", two},
		{"apply", "-f", two},
		{"rollback", "--all"},
	} {
		start := time.Now()
		_, errOut, code := other.runFor(20*time.Second, args...)
		if code != 1 || !strings.Contains(errOut, `"ctguard run" (`+pid+", state dir "+c.stateDir+") manages this network namespace") {
			t.Fatalf("%v beside a controller: exit %d\n%s", args, code, errOut)
		}
		t.Logf("%v refused after %v: %s", args, time.Since(start).Round(time.Millisecond), strings.TrimSpace(errOut))
	}
	if tableText(c.ns) != table || !p.running() {
		t.Fatal("the running controller's table changed or it stopped")
	}
	p.stop(syscall.SIGTERM)
	// Once it is gone, another state directory may take over.
	other.mustRun(2, "plan", "-f", two)
}

// TestPrivilegedReadOnlyStateDir is part of finding 8: on a read-only
// state directory plan failed (the README says plan and status always
// work) and run blamed "another controller".
func TestPrivilegedReadOnlyStateDir(t *testing.T) {
	t.Parallel()
	c := newCLI(t)
	policy := writePolicy(t, dropPolicy("wan", "198.19.0.0/24"))
	c.mustRun(0, "apply", "-f", policy)
	// ip netns exec gives the command a mount namespace of its own: the
	// read-only bind mount lives and dies with it.
	readOnly := func(args ...string) (string, int) {
		script := fmt.Sprintf("mount --bind %[1]s %[1]s && mount -o remount,bind,ro %[1]s && exec %[2]s --state-dir %[1]s \"$@\"", c.stateDir, binary)
		cmd := exec.Command("ip", append([]string{"netns", "exec", c.ns.Name, "sh", "-c", script, "sh"}, args...)...)
		out, err := cmd.CombinedOutput()
		var exit *exec.ExitError
		if err != nil && !errors.As(err, &exit) {
			t.Fatal(err)
		}
		return string(out), cmd.ProcessState.ExitCode()
	}
	if out, code := readOnly("plan", "-f", policy); code != 0 || !strings.Contains(out, "No changes") {
		t.Fatalf("plan on a read-only state dir: exit %d\n%s", code, out)
	}
	if out, code := readOnly("status"); code != 0 || !strings.Contains(out, "Revision:") {
		t.Fatalf("status on a read-only state dir: exit %d\n%s", code, out)
	}
	for _, args := range [][]string{{"apply", "-f", policy}, {"run", "--metrics-addr", "", "-f", policy}} {
		out, code := readOnly(args...)
		if code != 1 || !strings.Contains(out, "read-only") || strings.Contains(out, "another controller") || strings.Contains(out, "manages") {
			t.Fatalf("%v on a read-only state dir: exit %d\n%s", args, code, out)
		}
	}
}

// TestPrivilegedPolicyFIFONeverBlocks is finding 5: -f naming a FIFO hung
// plan and apply, and run then ignored SIGTERM.
func TestPrivilegedPolicyFIFONeverBlocks(t *testing.T) {
	t.Parallel()
	c := newCLI(t)
	fifo := filepath.Join(t.TempDir(), "policy.yaml")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{{"plan", "-f", fifo}, {"apply", "-f", fifo}, {"run", "--metrics-addr", "", "-f", fifo}, {"plan", "-f", "/dev/zero"}} {
		_, errOut, code := c.runFor(10*time.Second, args...)
		if code != 1 || !strings.Contains(errOut, "not a regular file") {
			t.Fatalf("%v: exit %d\n%s", args, code, errOut)
		}
	}
}
