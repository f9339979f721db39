// Package helm_test lints and renders the Helm chart in ctguard/ and checks
// what it would install: the policies validate with ctguard's own loader,
// the DaemonSet runs ctguard with the values' flags, and GOMEMLIMIT stays
// below the memory limit.
package helm_test

import (
	"bytes"
	"errors"
	"io"
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"

	"github.com/ctguard/ctguard/policy"
)

// helm finds the helm binary; CI builds it (.ci/run), so only a
// developer's machine may lack it.
func helm(t *testing.T) string {
	t.Helper()
	p, err := exec.LookPath("helm")
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("helm not found in CI (.ci/run builds it)")
		}
		t.Skip("helm not installed")
	}
	return p
}

// run runs helm with args and returns its stdout, stderr and error.
func run(t *testing.T, args ...string) (string, string, error) {
	t.Helper()
	cmd := exec.Command(helm(t), args...)
	// A private home: helm must not read or write the user's config.
	home := t.TempDir()
	cmd.Env = append(os.Environ(), "HELM_CACHE_HOME="+home, "HELM_CONFIG_HOME="+home, "HELM_DATA_HOME="+home)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	return stdout.String(), stderr.String(), err
}

func TestHelmLint(t *testing.T) {
	out, errOut, err := run(t, "lint", "--strict", "ctguard")
	if err != nil || !strings.Contains(out, "0 chart(s) failed") {
		t.Fatalf("helm lint --strict: %v\n%s%s", err, out, errOut)
	}
	// The optional parts too.
	out, errOut, err = run(t, "lint", "--strict", "ctguard", "--set", "metrics.podMonitor.enabled=true,metrics.webConfigSecret=ctguard-web,cleanupOnExit=false")
	if err != nil || !strings.Contains(out, "0 chart(s) failed") {
		t.Fatalf("helm lint --strict with every option: %v\n%s%s", err, out, errOut)
	}
}

// render runs helm template with the --set values and returns the objects
// by kind.
func render(t *testing.T, set ...string) map[string]map[string]any {
	t.Helper()
	args := []string{"template", "ctguard", "ctguard", "--namespace", "kube-system"}
	for _, s := range set {
		args = append(args, "--set", s)
	}
	out, errOut, err := run(t, args...)
	if err != nil {
		t.Fatalf("helm template %v: %v\n%s", set, err, errOut)
	}
	objs := map[string]map[string]any{}
	dec := yaml.NewDecoder(strings.NewReader(out))
	for {
		var doc map[string]any
		err := dec.Decode(&doc)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("helm template output: %v\n%s", err, out)
		}
		if doc == nil {
			continue
		}
		kind := doc["kind"].(string)
		if _, dup := objs[kind]; dup {
			t.Fatalf("two %s objects", kind)
		}
		objs[kind] = doc
	}
	return objs
}

// at walks a rendered object along path; an int indexes a list.
func at(t *testing.T, v any, path ...any) any {
	t.Helper()
	for i, p := range path {
		switch k := p.(type) {
		case string:
			m, ok := v.(map[string]any)
			if !ok {
				t.Fatalf("%v: not a map", path[:i+1])
			}
			v = m[k]
		case int:
			l, ok := v.([]any)
			if !ok || k >= len(l) {
				t.Fatalf("%v: no element %d", path[:i], k)
			}
			v = l[k]
		}
	}
	return v
}

// container is the DaemonSet's ctguard container.
func container(t *testing.T, objs map[string]map[string]any) map[string]any {
	t.Helper()
	ds, ok := objs["DaemonSet"]
	if !ok {
		t.Fatal("no DaemonSet")
	}
	return at(t, ds, "spec", "template", "spec", "containers", 0).(map[string]any)
}

func args(t *testing.T, c map[string]any) []string {
	var out []string
	for _, a := range c["args"].([]any) {
		out = append(out, a.(string))
	}
	return out
}

func flag(args []string, name string) string {
	if i := slices.Index(args, name); i >= 0 && i+1 < len(args) {
		return args[i+1]
	}
	return ""
}

func env(t *testing.T, c map[string]any, name string) string {
	for _, e := range c["env"].([]any) {
		if e.(map[string]any)["name"] == name {
			return e.(map[string]any)["value"].(string)
		}
	}
	t.Fatalf("no env %s", name)
	return ""
}

func TestHelmTemplateDefaults(t *testing.T) {
	objs := render(t)
	if _, ok := objs["PodMonitor"]; ok {
		t.Error("PodMonitor rendered by default")
	}
	c := container(t, objs)
	a := args(t, c)
	if a[0] != "run" || flag(a, "-f") != "/etc/ctguard" || flag(a, "--state-dir") != "/var/lib/ctguard" ||
		flag(a, "--metrics-addr") != "0.0.0.0:9468" || flag(a, "--mark-bit") != "0x800000" || !slices.Contains(a, "--cleanup-on-exit") ||
		flag(a, "--gate-hold") != "200us" {
		t.Errorf("args %q", a)
	}
	if got := env(t, c, "GOMEMLIMIT"); got != "230MiB" {
		t.Errorf("GOMEMLIMIT = %s with a 256Mi limit, want 230MiB", got)
	}
	sc := c["securityContext"].(map[string]any)
	if at(t, sc, "capabilities", "add", 0) != "NET_ADMIN" || at(t, sc, "capabilities", "drop", 0) != "ALL" || sc["privileged"] != false {
		t.Errorf("securityContext %v", sc)
	}
	if at(t, objs["DaemonSet"], "spec", "template", "spec", "hostNetwork") != true {
		t.Error("not on the host network")
	}
	// The policies are what ctguard will load from the mounted ConfigMap.
	cm := objs["ConfigMap"]
	if at(t, objs["DaemonSet"], "spec", "template", "spec", "volumes", 0, "configMap", "name") != at(t, cm, "metadata", "name") {
		t.Error("the DaemonSet mounts another ConfigMap")
	}
	data := cm["data"].(map[string]any)
	if len(data) == 0 {
		t.Fatal("no policy in the ConfigMap")
	}
	for name, doc := range data {
		ps, err := policy.Parse(name, []byte(doc.(string)))
		if err != nil {
			t.Errorf("%s: %v", name, err)
		}
		if len(ps) != 1 || !ps[0].IsPerFlow() {
			t.Errorf("%s: %d policies, want the per-flow default", name, len(ps))
		}
	}
}

func TestHelmTemplateValues(t *testing.T) {
	objs := render(t, "cleanupOnExit=false", "metrics.webConfigSecret=ctguard-web", "metrics.podMonitor.enabled=true",
		"resources.limits.memory=1Gi", "markBit=1024", "metrics.bindAddress=127.0.0.1", "gateHold=0")
	c := container(t, objs)
	a := args(t, c)
	if slices.Contains(a, "--cleanup-on-exit") || flag(a, "--web-config-file") != "/etc/ctguard-web/web-config.yml" ||
		flag(a, "--mark-bit") != "0x400" || flag(a, "--metrics-addr") != "127.0.0.1:9468" || flag(a, "--gate-hold") != "0" {
		t.Errorf("args %q", a)
	}
	if got := env(t, c, "GOMEMLIMIT"); got != "921MiB" {
		t.Errorf("GOMEMLIMIT = %s with a 1Gi limit, want 921MiB", got)
	}
	for _, probe := range []string{"livenessProbe", "readinessProbe"} {
		if at(t, c, probe, "httpGet", "scheme") != "HTTPS" || at(t, c, probe, "httpGet", "host") != "127.0.0.1" {
			t.Errorf("%s %v", probe, c[probe])
		}
	}
	if at(t, objs["PodMonitor"], "spec", "podMetricsEndpoints", 0, "scheme") != "https" {
		t.Error("PodMonitor scrapes plain HTTP with TLS configured")
	}
}

func TestHelmTemplateRejects(t *testing.T) {
	for _, tt := range []struct{ set, want string }{
		{"resources.limits.memory=300M", `resources.limits.memory: "300M" must be given in Mi or Gi`},
		{"goMemLimitPercent=100", "goMemLimitPercent: 100 must be between 50 and 95"},
		{"policies.Bad_Name.kind=MitigationPolicy", `policies: key "Bad_Name" must be a DNS label`},
	} {
		_, errOut, err := run(t, "template", "ctguard", "ctguard", "--set", tt.set)
		if err == nil || !strings.Contains(errOut, tt.want) {
			t.Errorf("--set %s: %v, stderr %q; want an error with %q", tt.set, err, errOut, tt.want)
		}
	}
}
