package plan

import (
	"bytes"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"reflect"
	"testing"

	"github.com/ctguard/ctguard/controller/ruleset"
	"github.com/ctguard/ctguard/policy"
	"sigs.k8s.io/yaml"
)

var update = flag.Bool("update", false, "rewrite testdata/*.golden")

// goldenCase is one plan rendered into testdata/NAME.txt.golden and
// testdata/NAME.json.golden.
type goldenCase struct {
	name              string
	desired, observed State
}

func goldenCases() []goldenCase {
	b := base()
	return []goldenCase{
		{
			name: "create-from-nothing",
			desired: State{
				Table:   b.Table,
				Sysctls: liberal("0"),
				PerFlow: []PerFlowPolicy{egressFlow(12, "tcp 198.18.0.10:443 <- 198.51.100.7:51514", "tcp 198.18.0.11:443 <- 198.51.100.7:51520")},
			},
			observed: State{Sysctls: liberal("0")},
		},
		{
			name:     "no-change",
			desired:  b,
			observed: withCounterValues(b, 7),
		},
		{
			name:     "set-elements-change",
			desired:  State{Table: table(egress("198.18.0.0/24", "198.18.7.0/24", "203.0.113.0/24"), wanDrop()), Sysctls: b.Sysctls, PerFlow: b.PerFlow},
			observed: withCounterValues(State{Table: table(egress("198.18.0.0/24", "198.18.9.9/32"), wanDrop()), Sysctls: b.Sysctls, PerFlow: b.PerFlow}, 3),
		},
		{
			name:    "rule-added",
			desired: b,
			observed: State{
				Table: editChain(b.Table, ruleset.HookInput, func(rs []ruleset.Rule) []ruleset.Rule {
					return rs[:len(rs)-1] // someone deleted a rule
				}),
				Sysctls: b.Sysctls, PerFlow: b.PerFlow,
			},
		},
		{
			name:    "rule-removed",
			desired: b,
			observed: State{
				Table: editChain(b.Table, ruleset.HookInput, func(rs []ruleset.Rule) []ruleset.Rule {
					return append(rs, unrecognised(`handle 9: tcp dport 22 accept comment "ssh"`))
				}),
				Sysctls: b.Sysctls, PerFlow: b.PerFlow,
			},
		},
		{
			name:     "policy-removed",
			desired:  State{Table: table(egress("198.18.0.0/24")), Sysctls: b.Sysctls, PerFlow: b.PerFlow},
			observed: b,
		},
		{
			name:     "sysctl-change",
			desired:  State{Table: table(global()), Sysctls: liberal("1")},
			observed: State{Table: table(global()), Sysctls: liberal("0")},
		},
		{
			name:     "sysctl-absent",
			desired:  State{Sysctls: liberal("1")},
			observed: State{},
		},
		{
			name: "perflow-added",
			desired: State{Table: b.Table, Sysctls: b.Sysctls, PerFlow: []PerFlowPolicy{
				egressFlow(12, "tcp 198.18.0.10:443 <- 198.51.100.7:51514", "tcp 198.18.0.11:443 <- 198.51.100.7:51520"),
			}},
			observed: State{Table: b.Table, Sysctls: b.Sysctls},
		},
		{
			name: "perflow-changed",
			desired: State{PerFlow: []PerFlowPolicy{
				{Name: "batch", Directions: []policy.Direction{policy.DirectionReply}, ExistingFlows: false, MatchingFlows: 4},
				{Name: "egress", Directions: []policy.Direction{policy.DirectionOriginal, policy.DirectionReply}, ExistingFlows: true, MatchingFlows: 1, Sample: []string{"tcp 198.18.0.10:443 <- 198.51.100.7:51514"}},
				{Name: "steady", Directions: []policy.Direction{policy.DirectionReply}, ExistingFlows: true, MatchingFlows: 2},
			}},
			observed: State{PerFlow: []PerFlowPolicy{
				egressFlow(0),
				{Name: "old", Directions: []policy.Direction{policy.DirectionReply}, ExistingFlows: true},
				{Name: "steady", Directions: []policy.Direction{policy.DirectionReply}, ExistingFlows: true},
			}},
		},
		{
			name:     "informational-only",
			desired:  State{Table: b.Table, Sysctls: b.Sysctls, PerFlow: []PerFlowPolicy{egressFlow(2, "tcp 198.18.0.12:443 <- 198.51.100.9:40000")}},
			observed: withCounterValues(b, 1),
		},
		{
			name: "table-drift",
			desired: State{
				Table: b.Table,
			},
			observed: State{
				Table: func() *ruleset.Table {
					t := editChain(b.Table, ruleset.HookOutput, func(rs []ruleset.Rule) []ruleset.Rule {
						rs[0].Drop = true // same comment, different rule
						return rs
					})
					t.Chains[0].Priority = 0
					t.Sets = append([]ruleset.Set(nil), t.Sets...)
					for i := range t.Sets {
						if t.Sets[i].Name == "egress-ports" {
							t.Sets[i].Interval = false
						}
					}
					t.Counters = append(t.Counters, ruleset.Counter{Name: "stale", Packets: 5})
					t.Chains = append(t.Chains, ruleset.Chain{Hook: ruleset.HookForward, Priority: ruleset.Priority})
					return t
				}(),
			},
		},
		{
			name:     "delete-everything",
			desired:  State{Sysctls: liberal("0")},
			observed: withCounterValues(State{Table: table(egress("198.18.0.0/24"), wanDrop(), global()), Sysctls: liberal("1"), PerFlow: b.PerFlow}, 9),
		},
	}
}

func TestGolden(t *testing.T) {
	for _, tc := range goldenCases() {
		t.Run(tc.name, func(t *testing.T) {
			p := Compute(tc.desired, tc.observed)
			var text, js bytes.Buffer
			if err := WriteText(&text, p); err != nil {
				t.Fatal(err)
			}
			if err := WriteJSON(&js, p); err != nil {
				t.Fatal(err)
			}
			checkGolden(t, tc.name+".txt.golden", text.Bytes())
			checkGolden(t, tc.name+".json.golden", js.Bytes())
			var y bytes.Buffer
			if err := WriteYAML(&y, p); err != nil {
				t.Fatal(err)
			}
			if tc.name == "perflow-added" {
				checkGolden(t, tc.name+".yaml.golden", y.Bytes())
			}
			// -o yaml is -o json, field for field.
			back, err := yaml.YAMLToJSON(y.Bytes())
			if err != nil {
				t.Fatal(err)
			}
			var fromYAML, fromJSON any
			if err := json.Unmarshal(back, &fromYAML); err != nil {
				t.Fatal(err)
			}
			if err := json.Unmarshal(js.Bytes(), &fromJSON); err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(fromYAML, fromJSON) {
				t.Errorf("WriteYAML differs from WriteJSON:\n%s", y.Bytes())
			}
		})
	}
}

func checkGolden(t *testing.T, name string, got []byte) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test -update to create it)", err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s differs (run go test -update to accept):\n--- got\n%s\n--- want\n%s", path, got, want)
	}
}
