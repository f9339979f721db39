package plan

import (
	"bytes"
	"strings"
	"testing"
)

// TestStaleFlagsMakeAPlan is finding 4 of issue 13 in the plan: flows
// carrying ctguard's flag in a direction no policy wants made the kernel
// differ from the policy while plan said it matched.
func TestStaleFlagsMakeAPlan(t *testing.T) {
	observed := State{StaleFlags: StaleFlags{Flows: 1000, Sample: []string{"198.18.1.2:40000 -> 198.19.0.10:443"}}}
	p := Compute(State{}, observed)
	if p.Empty() || p.Summary().Change != 1 {
		t.Fatalf("plan with stale flags: empty=%v summary %+v", p.Empty(), p.Summary())
	}
	var text, js bytes.Buffer
	if err := WriteText(&text, p); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(text.String(), "clear ctguard's flag on 1000 flows") || !strings.Contains(text.String(), "198.18.1.2:40000") {
		t.Errorf("text plan:\n%s", text.String())
	}
	if err := WriteJSON(&js, p); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(js.String(), `"staleFlags": {`) || !strings.Contains(js.String(), `"flows": 1000`) {
		t.Errorf("JSON plan:\n%s", js.String())
	}
	if p := Compute(State{}, State{}); p.StaleFlags != nil || !p.Empty() {
		t.Error("a plan without stale flags has them")
	}
}
