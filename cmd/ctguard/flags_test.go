package main

import (
	"bytes"
	"os/exec"
	"strings"
	"testing"
)

// TestRejectsSenselessFlags is finding 10 of issue 13: --resync 1ns ran
// 3,752 reconciles in 5 s and --event-buffer -1 was accepted. Each bad flag
// exits 1 with a message naming it, before anything is opened.
func TestRejectsSenselessFlags(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"run", "--resync", "1ns"}, "--resync"},
		{[]string{"run", "--resync", "999ms"}, "--resync"},
		{[]string{"run", "--resync", "-1s"}, "--resync"},
		{[]string{"run", "--event-buffer", "-1"}, "--event-buffer"},
		{[]string{"run", "--event-buffer", "0"}, "--event-buffer"},
		{[]string{"--mark-bit", "0", "status"}, "--mark-bit"},
		{[]string{"--mark-bit", "3", "status"}, "--mark-bit"},
	} {
		cmd := exec.Command(binary, append([]string{"--state-dir", t.TempDir()}, tc.args...)...)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		err := cmd.Run()
		exit, ok := err.(*exec.ExitError)
		if !ok || exit.ExitCode() != 1 || !strings.Contains(stderr.String(), tc.want) {
			t.Errorf("ctguard %v: %v, stderr %q; want exit 1 naming %s", tc.args, err, stderr.String(), tc.want)
		}
	}
}
