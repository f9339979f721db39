package perflow

import (
	"encoding/json"
	"testing"
)

// TestCountersTable: the one table of counters agrees with PolicyStats
// (its JSON) and names every counter once.
func TestCountersTable(t *testing.T) {
	var p PolicyStats
	names, metrics := map[string]bool{}, map[string]bool{}
	perPolicy := 0
	for i, c := range Counters {
		if c.Name == "" || c.Metric == "" || c.Help == "" || names[c.Name] || metrics[c.Metric] {
			t.Errorf("counter %d: %+v: empty or duplicate name", i, c)
		}
		names[c.Name], metrics[c.Metric] = true, true
		f := p.field(Counter(i))
		if c.PerPolicy {
			perPolicy++
			if f == nil || c.Column == "" {
				t.Errorf("per-policy counter %s: no PolicyStats field or status column", c.Name)
				continue
			}
			*f = uint64(i + 1)
		} else if f != nil {
			t.Errorf("engine-wide counter %s has a PolicyStats field", c.Name)
		}
	}
	var fields map[string]uint64
	b, _ := json.Marshal(p)
	if err := json.Unmarshal(b, &fields); err != nil || len(fields) != perPolicy {
		t.Errorf("PolicyStats JSON %s: %d fields, want %d (%v)", b, len(fields), perPolicy, err)
	}
	for i, c := range Counters {
		if c.PerPolicy && p.Get(Counter(i)) != uint64(i+1) {
			t.Errorf("Get(%s) = %d, want %d", c.Name, p.Get(Counter(i)), i+1)
		}
	}
}
