package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/ctguard/ctguard/controller"
	"github.com/ctguard/ctguard/controller/plan"
	"github.com/ctguard/ctguard/internal/version"
	"sigs.k8s.io/yaml"
)

// update rewrites the golden files of these tests.
var update = flag.Bool("update", false, "rewrite testdata golden files")

// These tests run ctguard in-process on buffers, without root: every case
// ends before the kernel is touched (a flag, -o or a policy is rejected, or
// the command needs no kernel). What needs a kernel is in *_kernel_test.go.

// runIn runs ctguard with a state directory of the test's own and returns
// stdout, stderr and the exit code.
func runIn(t *testing.T, args ...string) (string, string, int) {
	t.Helper()
	var stdout, stderr bytes.Buffer
	code := run(append([]string{"--state-dir", t.TempDir()}, args...), &stdout, &stderr)
	return stdout.String(), stderr.String(), code
}

// TestRejectsBadFlags: each bad flag exits 1 with a message naming it,
// before anything is opened (finding 10 of issue 13: --resync 1ns ran 3,752
// reconciles in 5 s and --event-buffer -1 was accepted).
func TestRejectsBadFlags(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"run", "--resync", "1ns"}, "--resync: 1ns is below the minimum 1s"},
		{[]string{"run", "--resync", "999ms"}, "--resync"},
		{[]string{"run", "--resync", "-1s"}, "--resync"},
		{[]string{"run", "--resync", "soon"}, `invalid argument "soon" for "--resync" flag`},
		{[]string{"run", "--event-buffer", "-1"}, "--event-buffer: -1 bytes is not between 1 and"},
		{[]string{"run", "--event-buffer", "0"}, "--event-buffer"},
		{[]string{"run", "--stuck-after", "0s"}, "--stuck-after: must be positive"},
		{[]string{"run", "--gate-hold", "-1us"}, "--gate-hold: -1µs is not between 0 and 10ms"},
		{[]string{"run", "--gate-hold", "1s"}, "--gate-hold: 1s is not between 0 and 10ms"},
		{[]string{"run", "--metrics-addr", "", "--web-config-file", "web.yml"}, "--web-config-file: needs --metrics-addr"},
		{[]string{"run", "--web-config-file", "/nonexistent/web.yml"}, "--web-config-file:"},
		{[]string{"run", "--metrics-addr", "192.0.2.1:9468"}, "--metrics-addr: listen on 192.0.2.1:9468"},
		{[]string{"--mark-bit", "0", "status"}, "--mark-bit: 0x0 must have exactly one bit set"},
		{[]string{"--mark-bit", "3", "status"}, "--mark-bit: 0x3 must have exactly one bit set"},
		{[]string{"--mark-bit", "0x30000", "plan"}, "--mark-bit: 0x30000"},
		{[]string{"--mark-bit", "0x3", "apply"}, "--mark-bit"},
		{[]string{"--mark-bit", "0x3", "rollback"}, "--mark-bit"},
		{[]string{"--mark-bit", "-1", "rollback"}, `invalid argument "-1" for "--mark-bit" flag`},
		{[]string{"--log-level", "loud", "status"}, `--log-level: "loud" is not one of debug, info, warn, error`},
		{[]string{"--log-level", "loud", "lab"}, "--log-level"},
		{[]string{"--gate-queue", "70000", "status"}, `invalid argument "70000" for "--gate-queue" flag`},
		{[]string{"--evidence-group", "0", "detect"}, "--evidence-group: detect needs a group (1-65535)"},
		{[]string{"lab", "--family", "ipv5"}, `--family: "ipv5" is not one of ipv4, ipv6, both`},
		{[]string{"lab", "--workaround", "prayer"}, `--workaround: "prayer" is not one of all, none, liberal, liberal-global, dropInvalid`},
		{[]string{"plan", "extra"}, `unknown command "extra" for "ctguard plan"`},
		{[]string{"plan", "--bogus"}, "unknown flag: --bogus"},
		{[]string{"frobnicate"}, `unknown command "frobnicate" for "ctguard"`},
	} {
		out, errOut, code := runIn(t, tc.args...)
		if code != exitError || !strings.Contains(errOut, tc.want) || out != "" {
			t.Errorf("ctguard %v: exit %d, stdout %q, stderr %q; want exit 1 and a message naming %q", tc.args, code, out, errOut, tc.want)
		}
		if !strings.HasPrefix(errOut, "ctguard: ") {
			t.Errorf("ctguard %v: stderr %q does not start with \"ctguard: \"", tc.args, errOut)
		}
	}
}

// TestOutputFlag: every command with -o offers its formats (the first is
// the default), rejects another before anything is read, and names the
// ones it takes.
func TestOutputFlag(t *testing.T) {
	want := map[string]string{
		"detect":  "text, json",
		"lab":     "text, json",
		"plan":    "text, json, yaml",
		"policy":  "yaml, json",
		"status":  "text, json, yaml",
		"version": "text, json",
	}
	root := newRootCommand(&bytes.Buffer{}, &bytes.Buffer{})
	var with []string
	for _, c := range root.Commands() {
		f := c.Flags().Lookup("output")
		if f == nil {
			continue
		}
		with = append(with, c.Name())
		formats := want[c.Name()]
		if f.Shorthand != "o" || !strings.HasPrefix(formats, f.DefValue+",") || !strings.Contains(f.Usage, formats) {
			t.Errorf("%s -o: shorthand %q, default %q, usage %q; want formats %s", c.Name(), f.Shorthand, f.DefValue, f.Usage, formats)
		}
		out, errOut, code := runIn(t, c.Name(), "-o", "xml")
		if code != exitError || out != "" || !strings.Contains(errOut, `-o: "xml" is not one of `+formats) {
			t.Errorf("%s -o xml: exit %d, stdout %q, stderr %q", c.Name(), code, out, errOut)
		}
	}
	if len(with) != len(want) {
		t.Errorf("commands with -o: %v, want those of %v", with, want)
	}
}

// badPolicy has an invalid CIDR on line 9 and an unknown field on line 10.
const badPolicy = `apiVersion: ctguard.io/v1alpha1
kind: MitigationPolicy
metadata:
  name: egress
spec:
  workaround: dropInvalid
  match:
    destinations:
      - 10.0.0.300/8
    sources: [198.18.0.0/24]
`

// TestRejectsBadPolicyFiles: a bad policy exits 1 before the kernel is
// touched, every problem one line on stderr naming file, line, policy and
// field path, nothing on stdout.
func TestRejectsBadPolicyFiles(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.yaml")
	if err := os.WriteFile(bad, []byte(badPolicy), 0o600); err != nil {
		t.Fatal(err)
	}
	want := []string{
		bad + `:9: policy "egress": spec.match.destinations[0]: invalid CIDR "10.0.0.300/8"`,
		bad + `:10: policy "egress": spec.match.sources:`,
	}
	for _, cmd := range [][]string{
		{"plan", "-f", bad},
		{"plan", "-f", bad, "-o", "json"},
		{"apply", "-f", bad},
		{"run", "-f", bad, "--metrics-addr", ""},
		{"detect", "-f", bad},
	} {
		out, errOut, code := runIn(t, cmd...)
		lines := strings.Split(strings.TrimSuffix(errOut, "\n"), "\n")
		if code != exitError || out != "" || len(lines) != len(want) {
			t.Errorf("ctguard %v: exit %d, stdout %q, stderr:\n%s\nwant exit 1 and %d lines", cmd, code, out, errOut, len(want))
			continue
		}
		for i, w := range want {
			if !strings.HasPrefix(lines[i], w) {
				t.Errorf("ctguard %v: line %d %q, want it to start with %q", cmd, i+1, lines[i], w)
			}
		}
	}
	out, errOut, code := runIn(t, "plan", "-f", filepath.Join(dir, "missing.yaml"))
	if code != exitError || out != "" || !strings.Contains(errOut, "missing.yaml") {
		t.Errorf("plan -f missing.yaml: exit %d, stdout %q, stderr %q", code, out, errOut)
	}
}

func TestVersion(t *testing.T) {
	want := version.Get()
	out, errOut, code := runIn(t, "version")
	if code != 0 || errOut != "" || out != want.String()+"\n" {
		t.Errorf("version: exit %d, stdout %q, stderr %q; want %q", code, out, errOut, want.String())
	}
	out, _, code = runIn(t, "version", "-o", "json")
	var got version.Info
	if err := json.Unmarshal([]byte(out), &got); code != 0 || err != nil || got != want {
		t.Errorf("version -o json: exit %d, %v, %+v; want %+v", code, err, got, want)
	}
	if out, _, code = runIn(t, "--version"); code != 0 || out != want.String()+"\n" {
		t.Errorf("--version: exit %d, stdout %q", code, out)
	}
}

// TestHelp: help goes to stdout and names every command; nothing fails.
func TestHelp(t *testing.T) {
	out, errOut, code := runIn(t, "--help")
	if code != 0 || errOut != "" {
		t.Fatalf("--help: exit %d, stderr %q", code, errOut)
	}
	for _, c := range []string{"plan", "apply", "status", "rollback", "run", "lab", "version", "detect"} {
		if !strings.Contains(out, "\n  "+c+" ") {
			t.Errorf("--help does not list %s:\n%s", c, out)
		}
	}
	if out, _, code := runIn(t, "run", "--help"); code != 0 || !strings.Contains(out, "--resync duration") {
		t.Errorf("run --help: exit %d\n%s", code, out)
	}
}

// loadStatus reads testdata/status.json, what "ctguard status -o json"
// printed for a drifted revision with a running controller.
func loadStatus(t *testing.T) controller.Status {
	t.Helper()
	b, err := os.ReadFile("testdata/status.json")
	if err != nil {
		t.Fatal(err)
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	var st controller.Status
	if err := dec.Decode(&st); err != nil {
		t.Fatalf("testdata/status.json: %v", err)
	}
	return st
}

// golden compares got with testdata/name, or rewrites it with -update.
func golden(t *testing.T, name, got string) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if got != string(want) {
		t.Errorf("%s differs (go test -run %s -update rewrites it):\n--- got\n%s\n--- want\n%s", path, t.Name(), got, want)
	}
}

// TestStatusView renders a status fixture as text (golden) and as JSON
// (the fixture again).
func TestStatusView(t *testing.T) {
	st := loadStatus(t)
	now := st.Live.UpdatedAt.Add(5 * time.Second)
	var text bytes.Buffer
	if err := writeView(&text, outputText, statusView(st, now)); err != nil {
		t.Fatal(err)
	}
	golden(t, "status.txt", text.String())

	var js bytes.Buffer
	if err := writeView(&js, outputJSON, statusView(st, now)); err != nil {
		t.Fatal(err)
	}
	var back controller.Status
	if err := json.Unmarshal(js.Bytes(), &back); err != nil {
		t.Fatal(err)
	}
	a, _ := json.Marshal(st)
	b, _ := json.Marshal(back)
	if !bytes.Equal(a, b) {
		t.Errorf("status -o json does not round-trip:\n%s\n%s", a, b)
	}
}

// TestStatusViewNothingApplied renders the status of a fresh state
// directory: no revision, no controller.
func TestStatusViewNothingApplied(t *testing.T) {
	st := controller.Status{FormatVersion: 1, State: controller.StateInForce, Kernel: "6.18.44", NetNS: "net:[1]"}
	var b bytes.Buffer
	if err := writeStatus(&b, st, time.Now()); err != nil {
		t.Fatal(err)
	}
	text := strings.Join(strings.Fields(b.String()), " ")
	for _, want := range []string{"Revision: none (nothing applied)", "Table inet ctguard: absent", "Controller (ctguard run): never ran with this state directory"} {
		if !strings.Contains(text, want) {
			t.Errorf("status text lacks %q:\n%s", want, b.String())
		}
	}
}

// TestStatusExit: the exit status of each state, as documented.
func TestStatusExit(t *testing.T) {
	for state, want := range map[controller.State]int{controller.StateInForce: 0, controller.StateDrifted: exitDrifted, controller.StateFailing: exitFailing} {
		got := 0
		var code exitCodeError
		if err := statusExit(state); errors.As(err, &code) {
			got = int(code)
		} else if err != nil {
			t.Fatalf("%s: %v", state, err)
		}
		if got != want {
			t.Errorf("status exit for %s: %d, want %d", state, got, want)
		}
	}
	if exitError != 1 || exitChanges != 2 || exitDrifted != 3 || exitFailing != 4 {
		t.Error("exit codes differ from the README's table")
	}
}

func TestWriteApplied(t *testing.T) {
	var b bytes.Buffer
	set := controller.PolicySet{Source: "p.yaml"}
	if err := writeApplied(&b, set, controller.ApplyResult{Revision: 2, FlaggedExisting: 3, ClearedStale: 1}); err != nil {
		t.Fatal(err)
	}
	want := "Applied revision 2 from p.yaml; flagged 3 existing flows; cleared ctguard's flag on 1 flows no policy wants any more.\n"
	if !strings.HasSuffix(b.String(), want) {
		t.Errorf("apply printed %q, want it to end with %q", b.String(), want)
	}
}

func TestWriteRolledBack(t *testing.T) {
	for _, tc := range []struct {
		res  controller.RollbackResult
		want string
	}{
		{controller.RollbackResult{ToRevision: 0, ClearedFlows: 4}, "Removed everything ctguard applied; cleared the flag on 4 flows.\n"},
		{controller.RollbackResult{ToRevision: 2}, "Rolled back: the previous policies are in force again as revision 2.\n"},
		{controller.RollbackResult{ToRevision: 2, ClearedFlows: 1, ForeignTableKept: true},
			"Left table inet ctguard alone: ctguard did not create it (see ctguard status).\nRolled back: the previous policies are in force again as revision 2; cleared the flag on 1 flows.\n"},
	} {
		var b bytes.Buffer
		if err := writeRolledBack(&b, tc.res); err != nil || b.String() != tc.want {
			t.Errorf("%+v: %q, %v; want %q", tc.res, b.String(), err, tc.want)
		}
	}
}

// TestRootWritesToItsStreams: cobra's own output (usage of a bad command
// line is silenced; help) goes to the injected streams, never to the
// process's.
func TestRootWritesToItsStreams(t *testing.T) {
	var out, errOut bytes.Buffer
	root := newRootCommand(&out, &errOut)
	root.SetArgs([]string{"help", "status"})
	if err := root.Execute(); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "ctguard status [-o text|json|yaml]") {
		t.Errorf("help status wrote %q", out.String())
	}
}

// TestPlanView: plan's text and its versioned JSON document through the
// same view as every command.
func TestPlanView(t *testing.T) {
	var text, js bytes.Buffer
	if err := writePlan(&text, outputText, plan.Plan{}); err != nil {
		t.Fatal(err)
	}
	if err := writePlan(&js, outputJSON, plan.Plan{}); err != nil {
		t.Fatal(err)
	}
	var doc struct {
		FormatVersion int  `json:"formatVersion"`
		Empty         bool `json:"empty"`
	}
	if err := json.Unmarshal(js.Bytes(), &doc); err != nil || doc.FormatVersion != plan.JSONFormatVersion || !doc.Empty {
		t.Errorf("plan -o json of an empty plan: %+v, %v\n%s", doc, err, js.String())
	}
	if text.Len() == 0 || strings.HasPrefix(text.String(), "{") {
		t.Errorf("plan text of an empty plan: %q", text.String())
	}
}

// TestYAMLViewIsTheJSONView: -o yaml shows what -o json shows, field for
// field, for a value (status) and for a document of its own (plan).
func TestYAMLViewIsTheJSONView(t *testing.T) {
	for name, v := range map[string]view{
		"status": statusView(loadStatus(t), time.Unix(0, 0)),
		"plan":   {json: func(w io.Writer) error { return plan.WriteJSON(w, plan.Plan{}) }},
	} {
		var js, y bytes.Buffer
		if err := writeView(&js, outputJSON, v); err != nil {
			t.Fatal(err)
		}
		if err := writeView(&y, outputYAML, v); err != nil {
			t.Fatal(err)
		}
		fromYAML, err := yaml.YAMLToJSON(y.Bytes())
		if err != nil {
			t.Fatalf("%s -o yaml does not parse: %v\n%s", name, err, y.String())
		}
		var a, b any
		if json.Unmarshal(js.Bytes(), &a) != nil || json.Unmarshal(fromYAML, &b) != nil || !reflect.DeepEqual(a, b) {
			t.Errorf("%s: -o yaml\n%s\ndiffers from -o json\n%s", name, y.String(), js.String())
		}
	}
}
