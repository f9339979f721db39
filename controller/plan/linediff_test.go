package plan

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// sides rebuilds both inputs from an edit script.
func sides(edits []edit) (a, b []string) {
	for _, e := range edits {
		if e.kind != insert {
			a = append(a, e.line)
		}
		if e.kind != remove {
			b = append(b, e.line)
		}
	}
	return a, b
}

// lcs is the length of the longest common subsequence, by dynamic
// programming.
func lcs(a, b []string) int {
	dp := make([][]int, len(a)+1)
	for i := range dp {
		dp[i] = make([]int, len(b)+1)
	}
	for i := len(a) - 1; i >= 0; i-- {
		for j := len(b) - 1; j >= 0; j-- {
			if a[i] == b[j] {
				dp[i][j] = dp[i+1][j+1] + 1
			} else {
				dp[i][j] = max(dp[i+1][j], dp[i][j+1])
			}
		}
	}
	return dp[0][0]
}

func randomLines(r *rand.Rand, n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = string(rune('a' + r.IntN(4)))
	}
	return out
}

func TestLineDiffIsShortest(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for i := range 2000 {
		a, b := randomLines(r, r.IntN(12)), randomLines(r, r.IntN(12))
		edits := lineDiff(a, b)
		ga, gb := sides(edits)
		if !slices.Equal(ga, a) || !slices.Equal(gb, b) {
			t.Fatalf("case %d: %q -> %q: edits rebuild %q -> %q", i, a, b, ga, gb)
		}
		changes := 0
		for _, e := range edits {
			if e.kind != keep {
				changes++
			}
		}
		if want := len(a) + len(b) - 2*lcs(a, b); changes != want {
			t.Fatalf("case %d: %q -> %q: %d changed lines, shortest is %d", i, a, b, changes, want)
		}
	}
}

func TestLineDiffBeyondMaxEdits(t *testing.T) {
	var a, b []string
	for i := range maxEdits {
		a = append(a, fmt.Sprint("a", i))
		b = append(b, fmt.Sprint("b", i))
	}
	a, b = append(a, "same"), append(b, "same")
	edits := lineDiff(a, b)
	ga, gb := sides(edits)
	if !slices.Equal(ga, a) || !slices.Equal(gb, b) {
		t.Fatal("fallback edits do not rebuild the inputs")
	}
}

// TestWriteUnifiedMatchesDiff compares the hunks with GNU diff -u.
func TestWriteUnifiedMatchesDiff(t *testing.T) {
	a := strings.Split("1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 21 22 23 24 25 26 27 28", " ")
	tests := map[string]func([]string) []string{
		"merged hunk": func(b []string) []string {
			b[1] = "two"
			return slices.Insert(b, 7, "7.5") // 6 lines apart: one hunk
		},
		"split hunks": func(b []string) []string {
			b[1] = "two"
			return slices.Insert(b, 8, "8.5") // 7 lines apart: two hunks
		},
		"edges": func(b []string) []string {
			return append(b[1:20], "new", "last")
		},
		"all new": func([]string) []string { return []string{"x", "y"} },
	}
	dir := t.TempDir()
	for name, edit := range tests {
		t.Run(name, func(t *testing.T) {
			b := edit(slices.Clone(a))
			var got bytes.Buffer
			if err := writeUnified(&got, "", lineDiff(a, b)); err != nil {
				t.Fatal(err)
			}
			want := gnuDiff(t, dir, a, b)
			if got.String() != want {
				t.Fatalf("got\n%s\ndiff -u says\n%s", got.String(), want)
			}
		})
	}
}

// gnuDiff returns the hunks of "diff -u" between a and b.
func gnuDiff(t *testing.T, dir string, a, b []string) string {
	t.Helper()
	if _, err := exec.LookPath("diff"); err != nil {
		t.Skip("diff not installed")
	}
	pa, pb := filepath.Join(dir, "a"), filepath.Join(dir, "b")
	for p, lines := range map[string][]string{pa: a, pb: b} {
		if err := os.WriteFile(p, []byte(strings.Join(lines, "\n")+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	out, _ := exec.Command("diff", "-u", pa, pb).Output() // exit 1: files differ
	_, hunks, _ := strings.Cut(string(out), "\n+++ ")
	_, hunks, _ = strings.Cut(hunks, "\n")
	return hunks
}

func BenchmarkLineDiffLargeTable(b *testing.B) {
	var old []string
	for i := range 5000 {
		old = append(old, fmt.Sprintf("\t\telements = { 198.18.%d.0/24 }", i))
	}
	cur := slices.Clone(old)
	cur[10], cur[2500], cur[4990] = "changed", "changed", "changed"
	for b.Loop() {
		lineDiff(old, cur)
	}
}
