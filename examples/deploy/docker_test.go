package examples_test

import (
	"debug/elf"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// buildFlags are the go build flags of the Dockerfile's build stage, with
// its VERSION and COMMIT build arguments set to stampVersion and stampCommit.
var buildFlags = []string{"-trimpath", "-ldflags=-s -w -X " + versionPkg + ".version=" + stampVersion + " -X " + versionPkg + ".commit=" + stampCommit}

const (
	versionPkg   = "github.com/ctguard/ctguard/internal/version"
	stampVersion = "v0.0.0-test"
	stampCommit  = "0123456789abcdef"
)

// dockerfile returns the Dockerfile's instructions, continuation lines
// joined and comments dropped.
func dockerfile(t *testing.T) []string {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(repoRoot, "Dockerfile"))
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	cur := ""
	for _, line := range strings.Split(string(data), "\n") {
		line = strings.TrimSpace(line)
		if strings.HasPrefix(line, "#") || (line == "" && cur == "") {
			continue
		}
		if strings.HasSuffix(line, "\\") {
			cur += strings.TrimSuffix(line, "\\") + " "
			continue
		}
		if s := strings.TrimSpace(cur + line); s != "" {
			out = append(out, s)
		}
		cur = ""
	}
	return out
}

// goMinor returns "1.N" of go.mod's go directive.
func goMinor(t *testing.T) string {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(repoRoot, "go.mod"))
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^go (\d+\.\d+)`).FindSubmatch(data)
	if m == nil {
		t.Fatal("go.mod: no go directive")
	}
	return string(m[1])
}

func TestDockerfile(t *testing.T) {
	var froms, builds []string
	instr := map[string][]string{}
	for _, l := range dockerfile(t) {
		op, rest, _ := strings.Cut(l, " ")
		instr[op] = append(instr[op], rest)
		switch {
		case op == "FROM":
			froms = append(froms, rest)
		case op == "RUN" && strings.Contains(rest, "go build"):
			builds = append(builds, rest)
		}
	}
	if len(froms) != 2 {
		t.Fatalf("stages = %q, want a build and a runtime stage", froms)
	}
	if want := "golang:" + goMinor(t) + " "; !strings.Contains(froms[0]+" ", want) {
		t.Errorf("build stage %q does not use %s(the go.mod version)", froms[0], want)
	}
	if !strings.HasPrefix(froms[1], "gcr.io/distroless/static") {
		t.Errorf("runtime stage %q is not distroless/static", froms[1])
	}
	if len(builds) != 1 {
		t.Fatalf("go build steps = %q, want one", builds)
	}
	for _, want := range []string{"CGO_ENABLED=0", "-trimpath", `-ldflags="-s -w `, "./cmd/ctguard",
		"-X " + versionPkg + ".version=${VERSION}", "-X " + versionPkg + ".commit=${COMMIT}"} {
		if !strings.Contains(builds[0], want) {
			t.Errorf("go build step lacks %s: %s", want, builds[0])
		}
	}
	checks := []struct{ op, want string }{
		{"COPY", "--from=build /out/ctguard /usr/local/bin/ctguard"},
		{"ENTRYPOINT", `["ctguard"]`},
		{"CMD", `["run"]`},
	}
	for _, c := range checks {
		if got := instr[c.op]; len(got) == 0 || got[len(got)-1] != c.want {
			t.Errorf("%s instructions = %q, want the last to be %q", c.op, got, c.want)
		}
	}
}

// TestStaticBuild builds ./cmd/ctguard the way the Dockerfile does and checks
// the binary runs on distroless/static: no dynamic loader, no libraries.
func TestStaticBuild(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	bin := filepath.Join(t.TempDir(), "ctguard")
	args := append([]string{"build"}, buildFlags...)
	cmd := exec.Command("go", append(args, "-o", bin, "./cmd/ctguard")...)
	cmd.Dir = repoRoot
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	f, err := elf.Open(bin)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			t.Error("binary has a dynamic loader (PT_INTERP)")
		}
	}
	if libs, _ := f.ImportedLibraries(); len(libs) > 0 {
		t.Errorf("binary needs shared libraries %v", libs)
	}
	if f.Section(".symtab") != nil {
		t.Error("binary has a symbol table: -ldflags=-s not applied")
	}
	if out, err := exec.Command(bin, "--help").CombinedOutput(); err != nil {
		t.Errorf("ctguard --help: %v\n%s", err, out)
	}
	out, err := exec.Command(bin, "--version").CombinedOutput()
	if want := "ctguard " + stampVersion + " (commit " + stampCommit + ", go"; err != nil || !strings.HasPrefix(string(out), want) {
		t.Errorf("ctguard --version = %q, %v; want it to start with %q", out, err, want)
	}
}
