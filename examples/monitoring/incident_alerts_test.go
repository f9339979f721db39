package monitoring

import (
	"os"
	"regexp"
	"testing"

	"github.com/ctguard/ctguard/controller/metrics"
	"go.yaml.in/yaml/v3"
)

// TestIncidentAlertsNameServedMetrics checks that every metric the incident
// alerting rules use is one "ctguard run" serves, with the labels they use.
func TestIncidentAlertsNameServedMetrics(t *testing.T) {
	b, err := os.ReadFile("incident-alerts.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Groups []struct {
			Rules []struct {
				Alert, Expr string
			}
		}
	}
	if err := yaml.Unmarshal(b, &doc); err != nil {
		t.Fatal(err)
	}
	m := metrics.New()
	in := m.NewIncidents(func() (uint64, uint64, uint64) { return 0, 0, 0 })
	in.Total.WithLabelValues("p", "liberal").Inc()
	fams, err := m.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	labels := map[string]map[string]bool{}
	for _, f := range fams {
		labels[f.GetName()] = map[string]bool{"instance": true}
		for _, mm := range f.GetMetric() {
			for _, l := range mm.GetLabel() {
				labels[f.GetName()][l.GetName()] = true
			}
		}
	}
	rules := 0
	for _, g := range doc.Groups {
		for _, r := range g.Rules {
			rules++
			names := regexp.MustCompile(`ctguard_[a-z_]+`).FindAllString(r.Expr, -1)
			if len(names) == 0 {
				t.Errorf("%s: no ctguard metric in %q", r.Alert, r.Expr)
			}
			for _, n := range names {
				if labels[n] == nil {
					t.Errorf("%s: metric %s is not served", r.Alert, n)
				}
				for _, l := range regexp.MustCompile(`(\w+)\s*=~?\s*"`).FindAllStringSubmatch(r.Expr, -1) {
					if !labels[n][l[1]] {
						t.Errorf("%s: %s has no label %s", r.Alert, n, l[1])
					}
				}
			}
		}
	}
	if rules != 3 {
		t.Errorf("%d rules, want 3", rules)
	}
}
