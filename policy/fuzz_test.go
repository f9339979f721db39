package policy

import (
	"encoding/json"
	"errors"
	"os"
	"reflect"
	"strings"
	"testing"
)

// FuzzParse checks that Parse never panics, that every problem is one
// well-formed line, and that whatever it accepts is valid and survives the
// JSON and YAML round trips.
func FuzzParse(f *testing.F) {
	examples, err := os.ReadFile("testdata/examples.yaml")
	if err != nil {
		f.Fatal(err)
	}
	f.Add(examples)
	f.Add(defaultYAML)
	f.Add([]byte(withSpec("workaround: dropInvalid\ndropInvalid: {interfaces: [eth0], hooks: [forward]}\nmatch: {destinationPorts: [1, \"2-3\"]}")))
	f.Add([]byte("a: &x [1]\nb: *x\n---\n- [\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		ps, err := Parse("f.yaml", data)
		if err != nil {
			var list ErrorList
			if !errors.As(err, &list) || len(list) == 0 {
				t.Fatalf("error %v (%T) is not a non-empty ErrorList", err, err)
			}
			for _, e := range list {
				if msg := e.Error(); e.File != "f.yaml" || e.Msg == "" || strings.Contains(msg, "\n") {
					t.Fatalf("malformed problem %q", msg)
				}
			}
			return
		}
		for _, p := range ps {
			if (p.doc.Spec.Liberal != nil) != (p.doc.Spec.Workaround == WorkaroundLiberal) ||
				(p.doc.Spec.DropInvalid != nil) != (p.doc.Spec.Workaround == WorkaroundDropInvalid) ||
				checkName(p.doc.Metadata.Name) != "" || p.doc.Spec.Match.Family == "" {
				t.Fatalf("accepted an invalid policy: %+v", p)
			}
		}
		js, err := json.Marshal(ps)
		if err != nil {
			t.Fatal(err)
		}
		var fromJSON []Policy
		if err := json.Unmarshal(js, &fromJSON); err != nil {
			t.Fatalf("JSON round trip: %v\n%s", err, js)
		}
		if len(ps) > 0 && !reflect.DeepEqual(fromJSON, withoutSource(ps)) {
			t.Fatalf("JSON round trip changed the policies:\n%s", js)
		}
		out, err := Marshal(ps)
		if err != nil {
			t.Fatal(err)
		}
		back, err := Parse("f.yaml", out)
		if err != nil || !reflect.DeepEqual(back, ps) {
			t.Fatalf("Parse(Marshal(p)) = %v; rendered:\n%s", err, out)
		}
	})
}
