package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/ctguard/ctguard/controller/nft"
	"github.com/ctguard/ctguard/internal/netnstest"
	"sigs.k8s.io/yaml"
)

// binary is the ctguard binary built once for the CLI tests.
var binary string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "ctguard-bin-")
	if err != nil {
		panic(err)
	}
	binary = filepath.Join(dir, "ctguard")
	out, err := exec.Command("go", "build", "-o", binary, ".").CombinedOutput()
	if err != nil {
		os.Stderr.Write(out)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// cli runs ctguard in ns with a state directory of the test's own.
type cli struct {
	t        *testing.T
	ns       *netnstest.NS
	stateDir string
}

func newCLI(t *testing.T) *cli {
	return &cli{t: t, ns: netnstest.NewNetNS(t, "cli"), stateDir: t.TempDir()}
}

// run returns stdout, stderr and the exit code.
func (c *cli) run(args ...string) (string, string, int) {
	c.t.Helper()
	full := append([]string{"netns", "exec", c.ns.Name, binary, "--state-dir", c.stateDir}, args...)
	cmd := exec.Command("ip", full...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
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

// mustRun fails the test unless ctguard exits with want.
func (c *cli) mustRun(want int, args ...string) string {
	c.t.Helper()
	out, errOut, code := c.run(args...)
	if code != want {
		c.t.Fatalf("ctguard %v: exit %d, want %d\nstdout:\n%s\nstderr:\n%s", args, code, want, out, errOut)
	}
	return out
}

func (c *cli) ruleset() string {
	c.t.Helper()
	return string(c.ns.MustRun(c.t, "nft", "-j", "list", "ruleset"))
}

func writePolicy(t testing.TB, doc string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "policy.yaml")
	if err := os.WriteFile(p, []byte(doc), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

const foreignTable = `table inet foreign {
	chain input {
		type filter hook input priority 0; policy accept;
		tcp dport 22 counter accept
	}
}
`

func TestPrivilegedApplyPlanRollbackCycle(t *testing.T) {
	c := newCLI(t)
	c.ns.MustRun(t, "sh", "-c", "printf '%s' '"+foreignTable+"' | nft -f -")
	foreignBefore := string(c.ns.MustRun(t, "nft", "-j", "list", "table", "inet", "foreign"))
	before := c.ruleset()
	liberalBefore := c.ns.Sysctl(t, "net.netfilter.nf_conntrack_tcp_be_liberal")

	drop := "../../examples/drop-invalid-wan.yaml"
	c.mustRun(2, "plan", "-f", drop)
	if c.ruleset() != before {
		t.Fatal("plan changed the ruleset")
	}
	c.mustRun(0, "apply", "-f", drop)

	table := c.ns.NftJSON(t, "list", "table", "inet", "ctguard")
	rules, sets, evidence := 0, 0, 0
	for _, item := range table["nftables"].([]any) {
		obj := item.(map[string]any)
		if r, ok := obj["rule"].(map[string]any); ok && r["chain"] != nft.OwnerChainName {
			if r["comment"] == "ctguard evidence" {
				evidence++
				continue
			}
			rules++
			if !strings.HasPrefix(r["comment"].(string), "ctguard policy wan-drop-invalid") {
				t.Errorf("rule without ctguard's comment: %v", r)
			}
		}
		if _, ok := obj["set"]; ok {
			sets++
		}
	}
	// drop-invalid and count-invalid-rst, each for IPv4 and IPv6, and the
	// evidence rules of input, forward and output.
	if rules != 4 || sets != 4 || evidence != 3 {
		t.Fatalf("nft -j shows %d policy rules, %d evidence rules and %d sets, want 4, 3 and 4 (dst4, dst6, ports, ifaces)", rules, evidence, sets)
	}

	out := c.mustRun(0, "apply", "-f", drop)
	if !strings.Contains(out, "No changes") {
		t.Fatalf("second apply is not a no-op:\n%s", out)
	}
	c.mustRun(0, "plan", "-f", drop)
	var plan map[string]any
	if err := json.Unmarshal([]byte(c.mustRun(0, "plan", "-f", drop, "-o", "json")), &plan); err != nil {
		t.Fatalf("plan -o json: %v", err)
	}
	var planYAML map[string]any
	if err := yaml.Unmarshal([]byte(c.mustRun(0, "plan", "-f", drop, "-o", "yaml")), &planYAML); err != nil || !reflect.DeepEqual(planYAML, plan) {
		t.Fatalf("plan -o yaml: %v: %v, want -o json's %v", err, planYAML, plan)
	}

	global := "../../examples/global-liberal-emergency.yaml"
	c.mustRun(2, "plan", "-f", global)
	c.mustRun(0, "apply", "-f", global)
	if got := c.ns.Sysctl(t, "net.netfilter.nf_conntrack_tcp_be_liberal"); got != "1" {
		t.Fatalf("be_liberal = %s after the global policy, want 1", got)
	}

	var st map[string]any
	if err := json.Unmarshal([]byte(c.mustRun(0, "status", "-o", "json")), &st); err != nil {
		t.Fatalf("status -o json: %v", err)
	}
	if st["beLiberal"] != 1.0 || st["tablePresent"] != true || st["drift"] != false || st["state"] != "inForce" {
		t.Fatalf("status: %v", st)
	}
	var stYAML map[string]any
	if err := yaml.Unmarshal([]byte(c.mustRun(0, "status", "-o", "yaml")), &stYAML); err != nil ||
		stYAML["beLiberal"] != 1.0 || stYAML["state"] != "inForce" || !reflect.DeepEqual(stYAML["revision"], st["revision"]) {
		t.Fatalf("status -o yaml: %v: %v, want -o json's %v", err, stYAML, st)
	}

	c.mustRun(0, "rollback")
	if got := c.ns.Sysctl(t, "net.netfilter.nf_conntrack_tcp_be_liberal"); got != liberalBefore {
		t.Fatalf("be_liberal = %s after rollback, want %s", got, liberalBefore)
	}
	c.mustRun(0, "plan", "-f", drop)

	c.mustRun(0, "rollback", "--all")
	if after := c.ruleset(); after != before {
		t.Fatalf("ruleset after rollback --all differs from before the first apply:\nbefore %s\nafter  %s", before, after)
	}
	if got := string(c.ns.MustRun(t, "nft", "-j", "list", "table", "inet", "foreign")); got != foreignBefore {
		t.Fatal("the foreign table changed")
	}
	if got := c.ns.Sysctl(t, "net.netfilter.nf_conntrack_tcp_be_liberal"); got != liberalBefore {
		t.Fatalf("be_liberal = %s after rollback --all, want %s", got, liberalBefore)
	}
	if _, errOut, code := c.run("rollback"); code != 1 || !strings.Contains(errOut, "nothing to roll back") {
		t.Fatalf("rollback with nothing applied: exit %d, %s", code, errOut)
	}
}

func TestPrivilegedBadPolicyChangesNothing(t *testing.T) {
	c := newCLI(t)
	before := c.ruleset()
	bad := writePolicy(t, `apiVersion: ctguard.io/v1alpha1
kind: MitigationPolicy
metadata:
  name: egress
spec:
  workaround: dropInvalid
  match:
    sources: [198.18.1.0/24]
    destinations: [198.19.0.0/16, 10.0.0.300/8]
    destinationPorts: [443, "9000-8000"]
`)
	for _, cmd := range []string{"plan", "apply"} {
		_, errOut, code := c.run(cmd, "-f", bad)
		if code != 1 {
			t.Fatalf("%s of a bad policy: exit %d, want 1", cmd, code)
		}
		lines := strings.Split(strings.TrimSpace(errOut), "\n")
		if len(lines) != 3 {
			t.Fatalf("%s: want one line per problem (3), got:\n%s", cmd, errOut)
		}
		for _, want := range []string{
			`policy "egress": spec.match.sources`,
			`policy "egress": spec.match.destinations[1]: invalid CIDR "10.0.0.300/8"`,
			`policy "egress": spec.match.destinationPorts[1]`,
		} {
			if !strings.Contains(errOut, bad+":") || !strings.Contains(errOut, want) {
				t.Errorf("%s: stderr lacks %q:\n%s", cmd, want, errOut)
			}
		}
		if strings.Contains(errOut, "goroutine") || strings.Contains(errOut, "panic") {
			t.Fatalf("%s printed a stack trace:\n%s", cmd, errOut)
		}
	}
	if c.ruleset() != before {
		t.Fatal("a bad policy changed the ruleset")
	}
	if _, err := os.Stat(filepath.Join(c.stateDir, "journal.json")); !errors.Is(err, os.ErrNotExist) {
		t.Fatal("a bad policy wrote the journal")
	}
}

func TestPrivilegedWithoutCapNetAdminGivesOneLine(t *testing.T) {
	c := newCLI(t)
	if err := os.Chown(c.stateDir, 65534, 65534); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("ip", "netns", "exec", c.ns.Name, "setpriv", "--reuid", "65534", "--regid", "65534",
		"--clear-groups", "--inh-caps=-all", binary, "--state-dir", c.stateDir, "status")
	out, err := cmd.CombinedOutput()
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() != 1 {
		t.Fatalf("status without CAP_NET_ADMIN: %v, want exit 1\n%s", err, out)
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	if len(lines) != 1 || !strings.Contains(lines[0], "needs root or CAP_NET_ADMIN") {
		t.Fatalf("want one line naming CAP_NET_ADMIN, got:\n%s", out)
	}
}
