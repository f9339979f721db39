package examples_test

import (
	"bufio"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// unitSettings reads a systemd unit into section -> key -> values (a key
// may repeat).
func unitSettings(t *testing.T, name string) map[string]map[string][]string {
	t.Helper()
	f, err := os.Open(name)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	out := map[string]map[string][]string{}
	section := ""
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		switch {
		case line == "" || strings.HasPrefix(line, "#"):
		case strings.HasPrefix(line, "["):
			section = strings.Trim(line, "[]")
			out[section] = map[string][]string{}
		default:
			k, v, ok := strings.Cut(line, "=")
			if !ok || section == "" {
				t.Fatalf("%s: bad line %q", name, line)
			}
			out[section][k] = append(out[section][k], v)
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

func TestSystemdUnit(t *testing.T) {
	svc := unitSettings(t, "ctguard.service")["Service"]
	one := func(k string) string {
		if len(svc[k]) != 1 {
			t.Fatalf("%s set %d times", k, len(svc[k]))
		}
		return svc[k][0]
	}

	args := strings.Fields(one("ExecStart"))
	if args[0] != "/usr/local/bin/ctguard" || args[1] != "run" || flagValue(args, "-f") != policyDir ||
		flagValue(args, "--state-dir") != stateDir || flagValue(args, "--metrics-addr") != "127.0.0.1:"+metricsPort {
		t.Errorf("ExecStart = %q", args)
	}
	if got := one("StateDirectory"); "/var/lib/"+got != stateDir {
		t.Errorf("StateDirectory = %s, want the --state-dir %s", got, stateDir)
	}

	checks := []struct{ key, want string }{
		{"ExecReload", "/bin/kill -HUP $MAINPID"},
		{"Restart", "always"},
		{"CapabilityBoundingSet", "CAP_NET_ADMIN"},
		{"AmbientCapabilities", "CAP_NET_ADMIN"},
		{"NoNewPrivileges", "yes"},
		{"ProtectSystem", "strict"},
		{"ReadWritePaths", "-/proc/sys/net/netfilter"},
	}
	for _, c := range checks {
		if got := one(c.key); got != c.want {
			t.Errorf("%s = %q, want %q", c.key, got, c.want)
		}
	}
	families := strings.Fields(one("RestrictAddressFamilies"))
	for _, f := range []string{"AF_NETLINK", "AF_INET", "AF_INET6", "AF_UNIX"} {
		if !slices.Contains(families, f) {
			t.Errorf("RestrictAddressFamilies lacks %s", f)
		}
	}
	// Each of these would cut ctguard off the host's netns or /proc/sys.
	for _, k := range []string{"PrivateNetwork", "PrivateUsers", "ProcSubset"} {
		if _, set := svc[k]; set {
			t.Errorf("%s must not be set", k)
		}
	}
}

// TestSystemdAnalyzeVerify runs systemd-analyze verify where it is
// installed. It exits 0 even on bad settings, so any message about the unit
// counts as a failure, except for system call names newer than the local
// systemd's table.
func TestSystemdAnalyzeVerify(t *testing.T) {
	if _, err := exec.LookPath("systemd-analyze"); err != nil {
		t.Skip("systemd-analyze not installed")
	}
	dir := t.TempDir()
	bin := filepath.Join(dir, "ctguard") // verify wants an executable ExecStart
	if err := os.WriteFile(bin, []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	unit, err := os.ReadFile("ctguard.service")
	if err != nil {
		t.Fatal(err)
	}
	unitPath := filepath.Join(dir, "ctguard.service")
	unit = []byte(strings.ReplaceAll(string(unit), "/usr/local/bin/ctguard", bin))
	if err := os.WriteFile(unitPath, unit, 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("systemd-analyze", "verify", "--man=no", unitPath).CombinedOutput()
	if err != nil {
		t.Errorf("systemd-analyze verify: %v", err)
	}
	for _, line := range strings.Split(string(out), "\n") {
		if strings.Contains(line, "ctguard.service") && !strings.Contains(line, "Failed to parse system call") {
			t.Errorf("systemd-analyze verify: %s", line)
		}
	}
}
