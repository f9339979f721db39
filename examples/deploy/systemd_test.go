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
	unit := unitSettings(t, "ctguard.service")
	svc := unit["Service"]
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
		{"Type", "notify"},
		{"NotifyAccess", "main"},
		{"WatchdogSec", "30s"},
		{"CapabilityBoundingSet", "CAP_NET_ADMIN"},
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
	// Each of these would cut ctguard off the host's netns or /proc/sys,
	// or off the journal a root "ctguard apply" leaves (uid 0 only).
	for _, k := range []string{"PrivateNetwork", "PrivateUsers", "ProcSubset", "DynamicUser", "User", "AmbientCapabilities"} {
		if _, set := svc[k]; set {
			t.Errorf("%s must not be set", k)
		}
	}
}

// TestSystemdUnitOrdering: early boot with explicit dependencies, stopped
// at shutdown, before the network is configured.
func TestSystemdUnitOrdering(t *testing.T) {
	u := unitSettings(t, "ctguard.service")["Unit"]
	all := func(k string) []string {
		var out []string
		for _, v := range u[k] {
			out = append(out, strings.Fields(v)...)
		}
		return out
	}
	if got := u["DefaultDependencies"]; len(got) != 1 || got[0] != "no" {
		t.Errorf("DefaultDependencies = %q, want no", got)
	}
	want := map[string][]string{
		"After":     {"local-fs.target", "systemd-modules-load.service", "systemd-sysctl.service", "nftables.service"},
		"Before":    {"network-pre.target", "shutdown.target"},
		"Wants":     {"network-pre.target"},
		"Conflicts": {"shutdown.target"},
	}
	for k, units := range want {
		for _, unit := range units {
			if !slices.Contains(all(k), unit) {
				t.Errorf("%s= lacks %s (has %q)", k, unit, all(k))
			}
		}
	}
	for _, unit := range []string{"sysinit.target", "basic.target", "network.target", "network-online.target"} {
		if slices.Contains(all("After"), unit) || slices.Contains(all("Requires"), unit) {
			t.Errorf("ctguard is ordered after %s: it must start before the network", unit)
		}
	}
}

// verifyUnits copies the unit (ExecStart pointed at a stub, as verify wants
// an executable) and extra units into a directory and runs systemd-analyze
// verify on them all: it builds one start transaction, so ordering cycles
// between them show. It returns verify's lines about any unit.
func verifyUnits(t *testing.T, edit func(string) string, extra map[string]string) []string {
	t.Helper()
	if _, err := exec.LookPath("systemd-analyze"); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("systemd-analyze not installed in CI (.ci/run installs systemd)")
		}
		t.Skip("systemd-analyze not installed")
	}
	dir := t.TempDir()
	bin := filepath.Join(dir, "ctguard")
	if err := os.WriteFile(bin, []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	unit, err := os.ReadFile("ctguard.service")
	if err != nil {
		t.Fatal(err)
	}
	text := strings.ReplaceAll(string(unit), "/usr/local/bin/ctguard", bin)
	if edit != nil {
		text = edit(text)
	}
	paths := []string{filepath.Join(dir, "ctguard.service")}
	if err := os.WriteFile(paths[0], []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	for name, body := range extra {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
		paths = append(paths, p)
	}
	out, err := exec.Command("systemd-analyze", append([]string{"verify", "--man=no"}, paths...)...).CombinedOutput()
	if err != nil && !strings.Contains(string(out), "cyclic") {
		t.Errorf("systemd-analyze verify: %v\n%s", err, out)
	}
	var lines []string
	for _, line := range strings.Split(string(out), "\n") {
		if strings.Contains(line, ".service") || strings.Contains(line, ".target") || strings.Contains(line, "cyclic") {
			lines = append(lines, line)
		}
	}
	return lines
}

// Units as on a cloud image with ifupdown: cloud-init runs early in
// sysinit.target, after the network is configured, which is after
// network-pre.target.
var cloudImageUnits = map[string]string{
	"networking.service": `[Unit]
Description=ifupdown (test stand-in)
DefaultDependencies=no
Wants=network.target
After=local-fs.target network-pre.target
Before=network.target shutdown.target
[Service]
Type=oneshot
ExecStart=/bin/true
`,
	"cloud-init.service": `[Unit]
Description=cloud-init (test stand-in)
DefaultDependencies=no
Wants=networking.service
After=networking.service
Before=sysinit.target network-online.target
[Service]
Type=oneshot
ExecStart=/bin/true
`,
}

// TestSystemdUnitNoOrderingCycle: on a cloud image the unit forms no
// ordering cycle; with the default dependencies it would (the bug this
// guards against: systemd then drops a job to break the cycle).
func TestSystemdUnitNoOrderingCycle(t *testing.T) {
	for _, line := range verifyUnits(t, nil, cloudImageUnits) {
		if strings.Contains(line, "cycle") || strings.Contains(line, "cyclic") {
			t.Errorf("ordering cycle on a cloud image: %s", line)
		}
	}
	withDefaults := func(unit string) string {
		return strings.Replace(unit, "DefaultDependencies=no\n", "", 1)
	}
	found := false
	for _, line := range verifyUnits(t, withDefaults, cloudImageUnits) {
		found = found || strings.Contains(line, "Found ordering cycle")
	}
	if !found {
		t.Error("the stand-in units do not reproduce the cycle with default dependencies: the test proves nothing")
	}
}

// TestSystemdAnalyzeVerify runs systemd-analyze verify (CI installs it).
// It exits 0 even on bad settings, so any message about the unit counts as
// a failure, except for system call names newer than the local systemd's
// table.
func TestSystemdAnalyzeVerify(t *testing.T) {
	for _, line := range verifyUnits(t, nil, nil) {
		if strings.Contains(line, "ctguard.service") && !strings.Contains(line, "Failed to parse system call") {
			t.Errorf("systemd-analyze verify: %s", line)
		}
	}
}
