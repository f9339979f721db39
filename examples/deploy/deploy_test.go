// Package examples_test checks the deployment examples: the Kubernetes
// manifests, the systemd unit and the Dockerfile agree with each other and
// with the ctguard binary they run.
package examples_test

import (
	"fmt"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"

	"github.com/ctguard/ctguard/policy"
)

const (
	metricsPort = "9468"
	policyDir   = "/etc/ctguard"
	stateDir    = "/var/lib/ctguard"
	repoRoot    = "../.."
)

// readSingleDoc parses a one-document YAML file. sigs.k8s.io/yaml silently
// reads only the first document, so a second one is an error here.
func readSingleDoc(t *testing.T, name string) map[string]any {
	t.Helper()
	data, err := os.ReadFile(name)
	if err != nil {
		t.Fatal(err)
	}
	if regexp.MustCompile(`(?m)^---`).Match(data) {
		t.Fatalf("%s: more than one YAML document", name)
	}
	var doc map[string]any
	if err := yaml.Unmarshal(data, &doc); err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	return doc
}

// get walks doc along path; an int element indexes a list.
func get(t *testing.T, doc any, path ...any) any {
	t.Helper()
	cur := doc
	for i, p := range path {
		switch k := p.(type) {
		case string:
			m, ok := cur.(map[string]any)
			if !ok {
				t.Fatalf("%v: not a map", path[:i])
			}
			if cur, ok = m[k]; !ok {
				t.Fatalf("%v: no key %q", path[:i], k)
			}
		case int:
			l, ok := cur.([]any)
			if !ok || k >= len(l) {
				t.Fatalf("%v: no element %d", path[:i], k)
			}
			cur = l[k]
		}
	}
	return cur
}

// byName returns the element of the list at path whose "name" is name.
func byName(t *testing.T, doc any, name string, path ...any) map[string]any {
	t.Helper()
	for _, e := range get(t, doc, path...).([]any) {
		if m := e.(map[string]any); m["name"] == name {
			return m
		}
	}
	t.Fatalf("%v: no element named %q", path, name)
	return nil
}

func strs(v any) []string {
	var out []string
	for _, e := range v.([]any) {
		out = append(out, e.(string))
	}
	return out
}

// flagValue returns the value following flag in args.
func flagValue(args []string, flag string) string {
	if i := slices.Index(args, flag); i >= 0 && i+1 < len(args) {
		return args[i+1]
	}
	return ""
}

func TestConfigMapPolicyIsValid(t *testing.T) {
	cm := readSingleDoc(t, "configmap.yaml")
	if get(t, cm, "kind") != "ConfigMap" {
		t.Fatalf("kind = %v", get(t, cm, "kind"))
	}
	data := get(t, cm, "data").(map[string]any)
	if len(data) == 0 {
		t.Fatal("no data")
	}
	for key, v := range data {
		if !strings.HasSuffix(key, ".yaml") || strings.HasPrefix(key, ".") {
			t.Errorf("key %q: ctguard reads only *.yaml files not starting with a dot", key)
		}
		pols, err := policy.Parse(key, []byte(v.(string)))
		if err != nil {
			t.Fatalf("%s: %v", key, err)
		}
		for _, p := range pols {
			if !p.IsPerFlow() {
				t.Errorf("%s: policy %s is not perFlow; the DaemonSet cannot write sysctls", key, p.Name())
			}
		}
	}
}

func TestDaemonSet(t *testing.T) {
	ds := readSingleDoc(t, "daemonset.yaml")
	cm := readSingleDoc(t, "configmap.yaml")
	pod := get(t, ds, "spec", "template", "spec")
	c := byName(t, pod, "ctguard", "containers")

	checks := []struct {
		name      string
		got, want any
	}{
		{"kind", get(t, ds, "kind"), "DaemonSet"},
		{"same namespace as the ConfigMap", get(t, ds, "metadata", "namespace"), get(t, cm, "metadata", "namespace")},
		{"hostNetwork", get(t, pod, "hostNetwork"), true},
		{"priorityClassName", get(t, pod, "priorityClassName"), "system-node-critical"},
		{"tolerates every taint", get(t, pod, "tolerations", 0, "operator"), "Exists"},
		{"maxUnavailable", get(t, ds, "spec", "updateStrategy", "rollingUpdate", "maxUnavailable"), "10%"},
		{"selector matches the pod", get(t, ds, "spec", "selector", "matchLabels", "app.kubernetes.io/name"),
			get(t, ds, "spec", "template", "metadata", "labels", "app.kubernetes.io/name")},
		{"capabilities added", strs(get(t, c, "securityContext", "capabilities", "add")), []string{"NET_ADMIN"}},
		{"capabilities dropped", strs(get(t, c, "securityContext", "capabilities", "drop")), []string{"ALL"}},
		{"privileged", get(t, c, "securityContext", "privileged"), false},
		{"allowPrivilegeEscalation", get(t, c, "securityContext", "allowPrivilegeEscalation"), false},
		{"readOnlyRootFilesystem", get(t, c, "securityContext", "readOnlyRootFilesystem"), true},
		{"liveness path", get(t, c, "livenessProbe", "httpGet", "path"), "/healthz"},
		{"readiness path", get(t, c, "readinessProbe", "httpGet", "path"), "/readyz"},
		{"scrape annotation", get(t, ds, "spec", "template", "metadata", "annotations", "prometheus.io/scrape"), "true"},
		{"scrape port", get(t, ds, "spec", "template", "metadata", "annotations", "prometheus.io/port"), metricsPort},
	}
	for _, ck := range checks {
		if !equal(ck.got, ck.want) {
			t.Errorf("%s = %v, want %v", ck.name, ck.got, ck.want)
		}
	}

	args := strs(get(t, c, "args"))
	if args[0] != "run" || flagValue(args, "-f") != policyDir || flagValue(args, "--state-dir") != stateDir ||
		!strings.HasSuffix(flagValue(args, "--metrics-addr"), ":"+metricsPort) {
		t.Errorf("args = %q", args)
	}

	// Both probes reach the metrics port.
	port := byName(t, c, "metrics", "ports")
	if !equal(port["containerPort"], metricsPort) {
		t.Errorf("metrics containerPort = %v, want %s", port["containerPort"], metricsPort)
	}
	for _, probe := range []string{"livenessProbe", "readinessProbe"} {
		if p := get(t, c, probe, "httpGet", "port"); p != "metrics" && !equal(p, metricsPort) {
			t.Errorf("%s port = %v", probe, p)
		}
	}

	// The policy directory is the ConfigMap, mounted whole so updates
	// propagate; the state directory is on the host.
	mounts := map[string]map[string]any{}
	for _, m := range get(t, c, "volumeMounts").([]any) {
		mm := m.(map[string]any)
		mounts[mm["mountPath"].(string)] = mm
	}
	pm, ok := mounts[policyDir]
	if !ok {
		t.Fatalf("nothing mounted at %s", policyDir)
	}
	if _, sub := pm["subPath"]; sub {
		t.Errorf("policy mounted with subPath: ConfigMap updates would not propagate")
	}
	pv := byName(t, pod, pm["name"].(string), "volumes")
	if got, want := get(t, pv, "configMap", "name"), get(t, cm, "metadata", "name"); got != want {
		t.Errorf("policy volume ConfigMap = %v, want %v", got, want)
	}
	sm, ok := mounts[stateDir]
	if !ok {
		t.Fatalf("nothing mounted at %s", stateDir)
	}
	sv := byName(t, pod, sm["name"].(string), "volumes")
	if got := get(t, sv, "hostPath", "path"); got != stateDir {
		t.Errorf("state hostPath = %v, want %s", got, stateDir)
	}
}

// equal compares decoded YAML loosely: numbers decode as float64, so
// 9468 and "9468" are equal.
func equal(got, want any) bool { return fmt.Sprint(got) == fmt.Sprint(want) }
