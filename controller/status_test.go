package controller

import (
	"context"
	"encoding/json"
	"github.com/ctguard/ctguard/controller/nslock"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/ctguard/ctguard/controller/perflow"
)

func TestSummarize(t *testing.T) {
	now := time.Date(2026, 12, 1, 6, 0, 0, 0, time.UTC)
	rev := &RevisionStatus{Number: 1}
	fresh := &LiveStatus{UpdatedAt: now.Add(-time.Second)}
	tests := []struct {
		name string
		st   Status
		want State
	}{
		{"nothing applied", Status{}, StateNotApplied},
		{"in force", Status{Revision: rev, TablePresent: true}, StateInForce},
		{"in force, controller running", Status{Revision: rev, Live: fresh, ControllerRunning: true}, StateInForce},
		{"drifted", Status{Revision: rev, Drift: true}, StateDrifted},
		{"a foreign table ctguard would replace", Status{TablePresent: true, Drift: true}, StateDrifted},
		{"interrupted beats drifted", Status{Revision: rev, Drift: true, Interrupted: true}, StateFailing},
		{"reconcile failing", Status{Revision: rev, ControllerRunning: true, Live: &LiveStatus{UpdatedAt: now, ReconcileFailing: true, LastError: "nft: EPERM"}}, StateFailing},
		{"policy rejected", Status{Revision: rev, ControllerRunning: true, Live: &LiveStatus{UpdatedAt: now, LastError: "p.yaml:3: bad"}}, StateFailing},
		{"stuck controller", Status{Revision: rev, ControllerRunning: true, Live: &LiveStatus{UpdatedAt: now.Add(-time.Minute)}}, StateFailing},
		{"a stopped controller's old error", Status{Revision: rev, Live: &LiveStatus{UpdatedAt: now.Add(-time.Hour), LastError: "old"}}, StateInForce},
	}
	for _, tt := range tests {
		tt.st.summarize(now)
		if tt.st.State != tt.want || tt.st.FormatVersion != StatusFormatVersion {
			t.Errorf("%s: state %s (format %d), want %s", tt.name, tt.st.State, tt.st.FormatVersion, tt.want)
		}
		if (tt.want == StateFailing || tt.want == StateDrifted) != (len(tt.st.Problems) > 0) {
			t.Errorf("%s: problems %q with state %s", tt.name, tt.st.Problems, tt.st.State)
		}
	}
}

// camelKey is the one key style of status -o json.
var camelKey = regexp.MustCompile(`^[a-z][a-zA-Z0-9]*$`)

// TestStatusJSONKeys: every key of a fully populated status is camelCase
// (the keys of "policies" are policy names, data) and the sysctl values
// are numbers.
func TestStatusJSONKeys(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	if _, err := f.c.Apply(ctx, mustParse(t, dropDoc+"---\n"+perFlowDoc+"---\n"+globalDoc)); err != nil {
		t.Fatal(err)
	}
	live := LiveStatus{UpdatedAt: time.Now(), PID: 1, Revision: 1, Generation: 1, LastError: "x", ReconcileFailing: true,
		Engine: perflow.Snapshot{FlowsSeen: 1, Policies: map[string]perflow.PolicyStats{"Egress_Policy": {Matched: 1}}}}
	if err := f.store.SaveLive(live); err != nil {
		t.Fatal(err)
	}
	release, err := f.store.HoldController(nslock.RoleRun) // as a running controller does
	if err != nil {
		t.Fatal(err)
	}
	defer release()
	st, err := f.c.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	b, err := json.Marshal(st)
	if err != nil {
		t.Fatal(err)
	}
	var doc map[string]any
	if err := json.Unmarshal(b, &doc); err != nil {
		t.Fatal(err)
	}
	var walk func(path string, v any)
	walk = func(path string, v any) {
		switch v := v.(type) {
		case map[string]any:
			for k, sub := range v {
				if !strings.HasSuffix(path, ".policies") && !camelKey.MatchString(k) {
					t.Errorf("key %s.%s is not camelCase", path, k)
				}
				walk(path+"."+k, sub)
			}
		case []any:
			for _, sub := range v {
				walk(path+"[]", sub)
			}
		}
	}
	walk("", doc)
	for _, k := range []string{"formatVersion", "state", "beLiberal", "beLiberalBaseline", "controllerRunning", "live", "rules"} {
		if _, ok := doc[k]; !ok {
			t.Errorf("status JSON lacks %q:\n%s", k, b)
		}
	}
	if v, ok := doc["beLiberal"].(float64); !ok || v != 1 {
		t.Errorf("beLiberal = %#v, want the number 1", doc["beLiberal"])
	}
	if v, ok := doc["beLiberalBaseline"].(float64); !ok || v != 0 {
		t.Errorf("beLiberalBaseline = %#v, want the number 0", doc["beLiberalBaseline"])
	}
	if doc["formatVersion"] != float64(StatusFormatVersion) {
		t.Errorf("formatVersion = %#v", doc["formatVersion"])
	}
	// The controller lock is held, so the controller counts as running
	// and its failing reconcile makes the state.
	if doc["state"] != string(StateFailing) || doc["controllerRunning"] != true {
		t.Errorf("state %v, controllerRunning %v; want failing, true", doc["state"], doc["controllerRunning"])
	}
}

func TestKernelState(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	if ks, err := f.c.KernelState(); err != nil || ks.TablePresent || ks.Drift || len(ks.Rules) != 0 {
		t.Fatalf("before any apply: %+v, %v", ks, err)
	}
	if _, err := f.c.Apply(ctx, mustParse(t, dropDoc+"---\n"+globalDoc)); err != nil {
		t.Fatal(err)
	}
	ks, err := f.c.KernelState()
	if err != nil || !ks.TablePresent || ks.Drift || ks.BeLiberal != 1 || len(ks.Rules) == 0 {
		t.Fatalf("after apply: %+v, %v", ks, err)
	}
	f.sys.values["net.netfilter.nf_conntrack_tcp_be_liberal"] = "0"
	if ks, _ := f.c.KernelState(); !ks.Drift || ks.BeLiberal != 0 {
		t.Fatalf("sysctl changed behind ctguard's back: %+v, want drift", ks)
	}
	f.sys.values["net.netfilter.nf_conntrack_tcp_be_liberal"] = "1"
	if err := f.tables.Delete(); err != nil {
		t.Fatal(err)
	}
	if ks, _ := f.c.KernelState(); !ks.Drift || ks.TablePresent {
		t.Fatalf("table deleted: %+v, want drift", ks)
	}
}
