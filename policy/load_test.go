package policy

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// named returns a valid policy YAML named name whose metadata.name is on
// line 4.
func named(name, workaround string) string {
	return strings.Replace(withSpec("workaround: "+workaround), "name: t", "name: "+name, 1)
}

// writeFiles creates files (path -> content) under dir.
func writeFiles(t *testing.T, dir string, files map[string]string) {
	t.Helper()
	for name, content := range files {
		path := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

func symlink(t *testing.T, target, link string) {
	t.Helper()
	if err := os.Symlink(target, link); err != nil {
		t.Fatal(err)
	}
}

// sources returns "name@file" for each policy, file relative to dir.
func sources(t *testing.T, dir string, ps []Policy) []string {
	t.Helper()
	var out []string
	for _, p := range ps {
		rel, err := filepath.Rel(dir, p.source)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, p.doc.Metadata.Name+"@"+rel)
	}
	return out
}

func TestLoadFile(t *testing.T) {
	dir := t.TempDir()
	writeFiles(t, dir, map[string]string{"policies": named("a", "liberal") + "---\n" + named("b", "dropInvalid")})
	ps, err := Load(filepath.Join(dir, "policies"))
	if err != nil {
		t.Fatal(err)
	}
	if got, want := sources(t, dir, ps), []string{"a@policies", "b@policies"}; !reflect.DeepEqual(got, want) {
		t.Errorf("loaded %v, want %v", got, want)
	}
}

func TestLoadDirectory(t *testing.T) {
	dir := t.TempDir()
	writeFiles(t, dir, map[string]string{
		"b.yml":              named("b", "liberal"),
		"a.yaml":             named("a1", "liberal") + "---\n" + named("a2", "dropInvalid"),
		"empty.yaml":         "# nothing yet\n",
		"notes.txt":          "not: yaml policy",
		".hidden.yaml":       "garbage: [",
		"sub/c.yaml":         named("c", "liberal"),
		"dir.yaml/d.yaml":    named("d", "liberal"),
		"target/linked.yaml": named("linked", "liberal"),
	})
	symlink(t, filepath.Join(dir, "target", "linked.yaml"), filepath.Join(dir, "l.yaml"))
	ps, err := Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"a1@a.yaml", "a2@a.yaml", "b@b.yml", "linked@l.yaml"}
	if got := sources(t, dir, ps); !reflect.DeepEqual(got, want) {
		t.Errorf("loaded %v, want %v", got, want)
	}
}

func TestLoadConfigMapMount(t *testing.T) {
	// The layout the kubelet gives a mounted ConfigMap.
	dir := t.TempDir()
	const stamp = "..2024_05_01_10_00_00.123456789"
	writeFiles(t, dir, map[string]string{
		stamp + "/egress.yaml": named("egress", "liberal"),
		stamp + "/drop.yml":    named("drop", "dropInvalid"),
	})
	symlink(t, stamp, filepath.Join(dir, "..data"))
	symlink(t, "..data/egress.yaml", filepath.Join(dir, "egress.yaml"))
	symlink(t, "..data/drop.yml", filepath.Join(dir, "drop.yml"))
	ps, err := Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := sources(t, dir, ps), []string{"drop@drop.yml", "egress@egress.yaml"}; !reflect.DeepEqual(got, want) {
		t.Errorf("loaded %v, want %v", got, want)
	}
}

func TestLoadErrors(t *testing.T) {
	tests := []struct {
		name   string
		files  map[string]string
		path   string // relative to the temporary directory; "" is the directory
		want   []string
		wantIs error
	}{
		{"duplicate names across files",
			map[string]string{"a.yaml": named("x", "liberal"), "b.yaml": named("x", "dropInvalid")}, "",
			[]string{`DIR/b.yaml:4: policy "x": metadata.name: duplicate name "x" (also defined at DIR/a.yaml:4)`}, nil},
		{"problems of every file",
			map[string]string{"a.yaml": named("a", "sysctl"), "b.yaml": "kind: [", "c.yaml": named("c", "liberal")}, "",
			[]string{
				`DIR/a.yaml:6: policy "a": spec.workaround: unknown workaround "sysctl", valid: liberal, dropInvalid, observe`,
				`DIR/b.yaml:1: invalid YAML: did not find expected node content`,
			}, nil},
		{"empty directory", nil, "",
			[]string{`DIR: no policies found (no *.yaml or *.yml files)`}, ErrNoPolicies},
		{"only empty files", map[string]string{"a.yaml": "", "b.yaml": "---\n# later\n"}, "",
			[]string{`DIR: no policies found`}, ErrNoPolicies},
		{"empty file", map[string]string{"a.yaml": "# todo\n"}, "a.yaml",
			[]string{`DIR/a.yaml: no policies found`}, ErrNoPolicies},
		{"missing path", nil, "nope.yaml",
			[]string{`DIR/nope.yaml: no such file or directory`}, fs.ErrNotExist},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			writeFiles(t, dir, tt.files)
			ps, err := Load(filepath.Join(dir, tt.path))
			if ps != nil {
				t.Errorf("Load returned %d policies along with errors, want none", len(ps))
			}
			if err == nil {
				t.Fatal("Load: no error")
			}
			if got, want := strings.ReplaceAll(err.Error(), dir, "DIR"), strings.Join(tt.want, "\n"); got != want {
				t.Errorf("Load errors:\n%s\nwant:\n%s", got, want)
			}
			if tt.wantIs != nil && !errors.Is(err, tt.wantIs) {
				t.Errorf("errors.Is(err, %v) = false", tt.wantIs)
			}
		})
	}
}

func TestLoadReportsBrokenSymlink(t *testing.T) {
	dir := t.TempDir()
	writeFiles(t, dir, map[string]string{"a.yaml": named("a", "liberal")})
	symlink(t, "gone.yaml", filepath.Join(dir, "b.yaml"))
	_, err := Load(dir)
	want := filepath.Join(dir, "b.yaml") + ": no such file or directory"
	if err == nil || err.Error() != want || !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Load error = %v, want %s", err, want)
	}
}

func TestTooManyPerFlowPolicies(t *testing.T) {
	var doc strings.Builder
	for i := range MaxPerFlowPolicies + 1 {
		fmt.Fprintf(&doc, "---\napiVersion: ctguard.io/v1alpha1\nkind: MitigationPolicy\nmetadata: {name: p%d}\nspec:\n  workaround: liberal\n", i)
	}
	_, err := Parse("p.yaml", []byte(doc.String()))
	want := fmt.Sprintf(`p.yaml:%d: policy "p64": spec.workaround: more than 64 perFlow liberal policies in all (merge their matches: list items are OR-ed)`, 64*6+6) // the 65th document's workaround line
	if err == nil || err.Error() != want {
		t.Fatalf("error = %v\nwant %s", err, want)
	}
}
