// Package monitoring_test checks the monitoring examples: the alerting
// rules with promtool, and that the rules, the dashboard and the PodMonitor
// agree with the metrics ctguard serves and the DaemonSet it runs in.
package monitoring_test

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/ctguard/ctguard/controller/metrics"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"sigs.k8s.io/yaml"
)

// promtool finds promtool; CI installs it (.ci/run), so only a developer's
// machine may lack it.
func promtool(t *testing.T) string {
	t.Helper()
	p, err := exec.LookPath("promtool")
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("promtool not found in CI (.ci/run unpacks it from Debian's prometheus package)")
		}
		t.Skip("promtool not installed")
	}
	return p
}

func TestPromtoolCheckRules(t *testing.T) {
	out, err := exec.Command(promtool(t), "check", "rules", "alerts.yaml").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "SUCCESS") {
		t.Fatalf("promtool check rules: %v\n%s", err, out)
	}
}

func TestPromtoolTestRules(t *testing.T) {
	out, err := exec.Command(promtool(t), "test", "rules", "alerts_test.yaml").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "SUCCESS") {
		t.Fatalf("promtool test rules: %v\n%s", err, out)
	}
}

// served returns the metric family names ctguard serves, with every
// labelled family populated.
func served(t *testing.T) map[string]bool {
	t.Helper()
	m := metrics.New()
	m.SetPolicies([]string{"egress"})
	m.SetPoliciesInForce([]metrics.PolicyInForce{{Name: "egress", Workaround: "liberal", Scope: "perFlow"}})
	m.ReadKernelAtScrape(func() (metrics.KernelState, error) {
		return metrics.KernelState{Rules: []metrics.RuleCounter{{Policy: "egress", Purpose: "count-invalid-rst"}}}, nil
	})
	m.FlagLatency.Observe(0.001)
	m.ReconcileDuration.Observe(0.01)
	rec := httptest.NewRecorder()
	m.Handler(nil).ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	parser := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := parser.TextToMetricFamilies(strings.NewReader(rec.Body.String()))
	if err != nil {
		t.Fatal(err)
	}
	names := map[string]bool{}
	for name := range fams {
		names[name] = true
	}
	return names
}

var metricName = regexp.MustCompile(`\bctguard_[a-z_]+`)

// checkNames fails for every ctguard_ metric text names that ctguard does
// not serve (histogram series name their family plus _bucket, _sum, _count).
func checkNames(t *testing.T, file, text string) {
	t.Helper()
	have := served(t)
	for _, n := range slices.Compact(slices.Sorted(slices.Values(metricName.FindAllString(text, -1)))) {
		base := n
		for _, suffix := range []string{"_bucket", "_sum", "_count"} {
			base = strings.TrimSuffix(base, suffix)
		}
		if !have[n] && !have[base] {
			t.Errorf("%s uses %s, which ctguard does not serve", file, n)
		}
	}
}

func TestAlertsUseServedMetrics(t *testing.T) {
	b, err := os.ReadFile("alerts.yaml")
	if err != nil {
		t.Fatal(err)
	}
	checkNames(t, "alerts.yaml", string(b))
	var rules struct {
		Groups []struct {
			Rules []struct {
				Alert  string
				Labels map[string]string
			}
		}
	}
	if err := yaml.Unmarshal(b, &rules); err != nil {
		t.Fatal(err)
	}
	var alerts []string
	for _, g := range rules.Groups {
		for _, r := range g.Rules {
			alerts = append(alerts, r.Alert)
			if s := r.Labels["severity"]; s != "warning" && s != "critical" {
				t.Errorf("%s: severity %q", r.Alert, s)
			}
		}
	}
	// The list: incident RSTs, reconcile failing, policy rejected,
	// flag failures, engine falling behind.
	for _, want := range []string{"CtguardIncidentResets", "CtguardReconcileFailing", "CtguardPolicyRejected", "CtguardFlagFailures", "CtguardEventsLost", "CtguardFlagLatencyHigh"} {
		if !slices.Contains(alerts, want) {
			t.Errorf("no alert %s", want)
		}
	}
}

func TestDashboard(t *testing.T) {
	b, err := os.ReadFile("dashboard.json")
	if err != nil {
		t.Fatal(err)
	}
	var d struct {
		UID    string
		Panels []struct {
			Type, Title string
			GridPos     struct{ X, Y, W, H int }
			Targets     []struct{ Expr string }
		}
	}
	if err := json.Unmarshal(b, &d); err != nil {
		t.Fatal(err)
	}
	if d.UID == "" || len(d.Panels) == 0 {
		t.Fatalf("dashboard: uid %q, %d panels", d.UID, len(d.Panels))
	}
	var exprs []string
	for _, p := range d.Panels {
		if p.Type == "row" {
			continue
		}
		if len(p.Targets) == 0 || p.GridPos.W == 0 || p.GridPos.X+p.GridPos.W > 24 {
			t.Errorf("panel %q: %d targets, grid %+v", p.Title, len(p.Targets), p.GridPos)
		}
		for _, tg := range p.Targets {
			if !strings.Contains(tg.Expr, `instance=~"$instance"`) {
				t.Errorf("panel %q: %s ignores the instance variable", p.Title, tg.Expr)
			}
			exprs = append(exprs, tg.Expr)
		}
	}
	checkNames(t, "dashboard.json", strings.Join(exprs, "\n"))
}

// TestPodMonitorMatchesDaemonSet: the PodMonitor selects the DaemonSet's
// pods in its namespace and scrapes its metrics port by name.
func TestPodMonitorMatchesDaemonSet(t *testing.T) {
	read := func(name string) map[string]any {
		b, err := os.ReadFile(name)
		if err != nil {
			t.Fatal(err)
		}
		var doc map[string]any
		if err := yaml.Unmarshal(b, &doc); err != nil {
			t.Fatal(err)
		}
		return doc
	}
	pm := read("podmonitor.yaml")
	ds := read("../deploy/daemonset.yaml")
	js := func(v any) string { b, _ := json.Marshal(v); return string(b) }
	spec := pm["spec"].(map[string]any)
	podLabels := ds["spec"].(map[string]any)["template"].(map[string]any)["metadata"].(map[string]any)["labels"]
	if got := js(spec["selector"].(map[string]any)["matchLabels"]); got != js(podLabels) {
		t.Errorf("PodMonitor selects %s, the DaemonSet's pods carry %s", got, js(podLabels))
	}
	ns := ds["metadata"].(map[string]any)["namespace"]
	if got := js(spec["namespaceSelector"].(map[string]any)["matchNames"]); got != js([]any{ns}) {
		t.Errorf("PodMonitor namespaces %s, the DaemonSet runs in %v", got, ns)
	}
	port := spec["podMetricsEndpoints"].([]any)[0].(map[string]any)["port"]
	container := ds["spec"].(map[string]any)["template"].(map[string]any)["spec"].(map[string]any)["containers"].([]any)[0].(map[string]any)
	found := false
	for _, p := range container["ports"].([]any) {
		found = found || p.(map[string]any)["name"] == port
	}
	if !found {
		t.Errorf("PodMonitor scrapes port %v, which the DaemonSet's container does not name", port)
	}
}
