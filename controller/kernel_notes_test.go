package controller

import (
	"strings"
	"testing"
)

func TestKernelNotes(t *testing.T) {
	for _, tc := range []struct {
		release      string
		ignoresOld   bool
		reflagWarned bool
		none         bool
	}{
		{release: "6.18.44-fc-v657", ignoresOld: true},
		{release: "6.1.0-13-amd64", ignoresOld: true},
		{release: "5.15.0-91-generic", reflagWarned: true},
		{release: "5.10.110-1", reflagWarned: false},
		{release: "5.10.109", reflagWarned: true},
		{release: "4.19.0-26-amd64", reflagWarned: true},
		{release: "unknown", none: true},
	} {
		notes := KernelNotes(tc.release)
		if tc.none {
			if notes != nil {
				t.Errorf("%s: notes %q, want none", tc.release, notes)
			}
			continue
		}
		all := strings.Join(notes, "\n")
		if got := strings.Contains(all, "are ignored by conntrack"); got != tc.ignoresOld {
			t.Errorf("%s: ignores old retransmissions = %v, want %v\n%s", tc.release, got, tc.ignoresOld, all)
		}
		if got := strings.Contains(all, "re-flags"); got != tc.reflagWarned {
			t.Errorf("%s: re-flag note = %v, want %v\n%s", tc.release, got, tc.reflagWarned, all)
		}
	}
}
