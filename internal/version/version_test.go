package version

import (
	"runtime/debug"
	"strings"
	"testing"
)

func TestFrom(t *testing.T) {
	recorded := &debug.BuildInfo{
		GoVersion: "go1.26.8",
		Main:      debug.Module{Path: "github.com/ctguard/ctguard", Version: "(devel)"},
		Settings:  []debug.BuildSetting{{Key: "vcs.revision", Value: "abc123"}, {Key: "vcs.modified", Value: "true"}},
	}
	installed := &debug.BuildInfo{GoVersion: "go1.26.8", Main: debug.Module{Version: "v0.2.0"}}
	tests := []struct {
		name            string
		bi              *debug.BuildInfo
		version, commit string
		want            Info
	}{
		{"nothing known", nil, "", "", Info{"devel", "unknown", "unknown"}},
		{"work tree build", recorded, "", "", Info{"devel", "abc123-dirty", "go1.26.8"}},
		{"go install at a version", installed, "", "", Info{"v0.2.0", "unknown", "go1.26.8"}},
		{"stamped wins", recorded, "v0.3.0", "def456", Info{"v0.3.0", "def456", "go1.26.8"}},
		{"blank stamp ignored", installed, " ", "", Info{"v0.2.0", "unknown", "go1.26.8"}},
	}
	for _, tt := range tests {
		if got := from(tt.bi, tt.version, tt.commit); got != tt.want {
			t.Errorf("%s: %+v, want %+v", tt.name, got, tt.want)
		}
	}
}

func TestGet(t *testing.T) {
	i := Get()
	if !strings.HasPrefix(i.GoVersion, "go") || i.Version == "" || i.Commit == "" {
		t.Fatalf("Get = %+v", i)
	}
	if s := i.String(); !strings.HasPrefix(s, "ctguard "+i.Version+" (commit ") {
		t.Fatalf("String = %q", s)
	}
}
