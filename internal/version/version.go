// Package version tells which ctguard this is: the version and commit
// stamped at build time with -ldflags, or else what the Go toolchain
// recorded in the binary (module version, VCS revision), and the Go
// version it was built with.
package version

import (
	"fmt"
	"runtime/debug"
	"strings"
)

// Stamped at build time, e.g. (the Dockerfile does this):
//
//	go build -ldflags "-X github.com/ctguard/ctguard/internal/version.version=v0.3.0 \
//	    -X github.com/ctguard/ctguard/internal/version.commit=$(git rev-parse HEAD)" ./cmd/ctguard
var (
	version string
	commit  string
)

// Info is what a binary knows of its build.
type Info struct {
	// Version is the release ("v0.3.0"), the module version "go install"
	// recorded, or "devel" for an unstamped build from a work tree.
	Version string `json:"version"`
	// Commit is the VCS revision, with "-dirty" when the work tree had
	// uncommitted changes; "unknown" when neither stamped nor recorded.
	Commit string `json:"commit"`
	// GoVersion is the toolchain that built the binary ("go1.26.8").
	GoVersion string `json:"goVersion"`
}

// Get returns this binary's Info.
func Get() Info {
	bi, _ := debug.ReadBuildInfo()
	return from(bi, version, commit)
}

// from builds an Info from the toolchain's record and the stamped values;
// a stamped value wins.
func from(bi *debug.BuildInfo, stampedVersion, stampedCommit string) Info {
	info := Info{Version: "devel", Commit: "unknown", GoVersion: "unknown"}
	if bi != nil {
		info.GoVersion = bi.GoVersion
		if v := bi.Main.Version; v != "" && v != "(devel)" {
			info.Version = v
		}
		var rev string
		var dirty bool
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				rev = s.Value
			case "vcs.modified":
				dirty = s.Value == "true"
			}
		}
		if rev != "" {
			info.Commit = rev
			if dirty {
				info.Commit += "-dirty"
			}
		}
	}
	if v := strings.TrimSpace(stampedVersion); v != "" {
		info.Version = v
	}
	if c := strings.TrimSpace(stampedCommit); c != "" {
		info.Commit = c
	}
	return info
}

// String is the one line "ctguard --version" prints.
func (i Info) String() string {
	return fmt.Sprintf("ctguard %s (commit %s, %s)", i.Version, i.Commit, i.GoVersion)
}
