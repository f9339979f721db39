package plan

import (
	"fmt"
	"io"
	"slices"
	"strings"
)

// maxEdits bounds the work of lineDiff: past this many inserted and deleted
// lines the differing middle is shown as removed, then added, in full.
const maxEdits = 1000

// contextLines is how many unchanged lines surround each hunk.
const contextLines = 3

// editKind is one line's fate in a line diff.
type editKind byte

// The line fates, as unified diff marks them.
const (
	keep   editKind = ' '
	insert editKind = '+'
	remove editKind = '-'
)

// edit is one line of a line diff.
type edit struct {
	kind editKind
	line string
}

// lineDiff returns a shortest edit script from a to b (Myers' algorithm),
// removals before insertions where both are possible.
func lineDiff(a, b []string) []edit {
	pre := 0
	for pre < len(a) && pre < len(b) && a[pre] == b[pre] {
		pre++
	}
	suf := 0
	for suf < len(a)-pre && suf < len(b)-pre && a[len(a)-1-suf] == b[len(b)-1-suf] {
		suf++
	}
	var out []edit
	for _, l := range a[:pre] {
		out = append(out, edit{keep, l})
	}
	out = append(out, myers(a[pre:len(a)-suf], b[pre:len(b)-suf])...)
	for _, l := range a[len(a)-suf:] {
		out = append(out, edit{keep, l})
	}
	return out
}

// myers is Myers' greedy O((N+M)D) diff. For each edit distance d it
// keeps the furthest x reached on each diagonal k in [-d, d] (index k+d of
// trace[d]) to walk the path back.
func myers(a, b []string) []edit {
	n, m := len(a), len(b)
	limit := min(n+m, maxEdits)
	off := limit + 1
	v := make([]int, 2*off+1)
	var trace [][]int
	for d := 0; d <= limit; d++ {
		for k := -d; k <= d; k += 2 {
			var x int
			if k == -d || (k != d && v[off+k-1] < v[off+k+1]) {
				x = v[off+k+1]
			} else {
				x = v[off+k-1] + 1
			}
			y := x - k
			for x < n && y < m && a[x] == b[y] {
				x, y = x+1, y+1
			}
			v[off+k] = x
			if x >= n && y >= m {
				return backtrack(a, b, trace, d)
			}
		}
		trace = append(trace, slices.Clone(v[off-d:off+d+1]))
	}
	return replaceAll(a, b)
}

// backtrack walks the furthest-reaching paths of myers back from (n, m),
// reached at edit distance dist.
func backtrack(a, b []string, trace [][]int, dist int) []edit {
	x, y := len(a), len(b)
	var rev []edit
	for d := dist; d > 0; d-- {
		prev := func(k int) int { return trace[d-1][k+d-1] }
		k := x - y
		var pk int
		if k == -d || (k != d && prev(k-1) < prev(k+1)) {
			pk = k + 1
		} else {
			pk = k - 1
		}
		px := prev(pk)
		py := px - pk
		for x > px && y > py {
			x, y = x-1, y-1
			rev = append(rev, edit{keep, a[x]})
		}
		if x == px {
			y--
			rev = append(rev, edit{insert, b[y]})
		} else {
			x--
			rev = append(rev, edit{remove, a[x]})
		}
	}
	for x > 0 {
		x--
		rev = append(rev, edit{keep, a[x]})
	}
	slices.Reverse(rev)
	return rev
}

// replaceAll removes every line of a, then inserts every line of b.
func replaceAll(a, b []string) []edit {
	out := make([]edit, 0, len(a)+len(b))
	for _, l := range a {
		out = append(out, edit{remove, l})
	}
	for _, l := range b {
		out = append(out, edit{insert, l})
	}
	return out
}

// writeUnified writes the edits as unified diff hunks with contextLines of
// context, each line prefixed by indent.
func writeUnified(w io.Writer, indent string, edits []edit) error {
	for start := 0; start < len(edits); {
		first := nextChange(edits, start)
		if first == len(edits) {
			break
		}
		lo := max(first-contextLines, start)
		// Extend the hunk while the next change is within 2*context lines.
		hi := first
		for {
			end := hi
			for end < len(edits) && edits[end].kind != keep {
				end++
			}
			next := nextChange(edits, end)
			if next == len(edits) || next-end > 2*contextLines {
				hi = min(end+contextLines, len(edits))
				break
			}
			hi = next
		}
		aLine, bLine := lineNumbers(edits[:lo])
		aLen, bLen := lineNumbers(edits[lo:hi])
		if _, err := fmt.Fprintf(w, "%s@@ -%s +%s @@\n", indent, hunkRange(aLine, aLen), hunkRange(bLine, bLen)); err != nil {
			return err
		}
		for _, e := range edits[lo:hi] {
			if _, err := fmt.Fprintf(w, "%s%c%s\n", indent, e.kind, e.line); err != nil {
				return err
			}
		}
		start = hi
	}
	return nil
}

// nextChange returns the index of the first non-keep edit at or after i.
func nextChange(edits []edit, i int) int {
	for i < len(edits) && edits[i].kind == keep {
		i++
	}
	return i
}

// lineNumbers counts the lines of a and of b the edits cover.
func lineNumbers(edits []edit) (a, b int) {
	for _, e := range edits {
		if e.kind != insert {
			a++
		}
		if e.kind != remove {
			b++
		}
	}
	return a, b
}

// hunkRange formats a hunk's line range as unified diff does: the first
// line (1-based; the line before when empty) and the count.
func hunkRange(before, n int) string {
	if n == 0 {
		return fmt.Sprintf("%d,0", before)
	}
	return fmt.Sprintf("%d,%d", before+1, n)
}

// splitLines splits text into lines, without a trailing empty line.
func splitLines(text string) []string {
	if text == "" {
		return nil
	}
	return strings.Split(strings.TrimSuffix(text, "\n"), "\n")
}
