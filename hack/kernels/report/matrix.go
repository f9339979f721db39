package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"github.com/ctguard/ctguard/lab"
)

// matrix is everything the matrix collected, one kernel after the other.
type matrix struct {
	kernels []kernel
	skipped []string // kernel tests not run under emulation, with the reason
}

// kernel is the outcome on one kernel.
type kernel struct {
	line        string // "5.10"
	pkg         string // Debian package and version
	release     string // uname -r
	tests       []pkgResult
	testsRun    bool // the kernel tests were run (not --lab-only)
	testsRC     int
	testsSecs   float64
	lab         lab.Report
	labErr      string // the lab's output could not be read
	labRC       int
	labSecs     float64
	labProblems []string
}

// pkgResult is one package's kernel tests.
type pkgResult struct {
	pkg     string
	ok      bool
	done    bool // its "=== RESULT" line was seen
	secs    float64
	passed  int
	failed  []string
	skipped []string
}

// load reads DIR/<kernel line>/... as hack/kernels/matrix writes them.
func load(dir string) (*matrix, error) {
	m := &matrix{}
	if b, err := os.ReadFile(filepath.Join(dir, "skipped")); err == nil {
		for _, l := range strings.Split(strings.TrimSpace(string(b)), "\n") {
			if l != "" {
				m.skipped = append(m.skipped, l)
			}
		}
	}
	order, err := os.ReadFile(filepath.Join(dir, "kernels"))
	if err != nil {
		return nil, err
	}
	for _, line := range strings.Fields(string(order)) {
		k, err := loadKernel(filepath.Join(dir, line), line)
		if err != nil {
			return nil, err
		}
		m.kernels = append(m.kernels, k)
	}
	// Oldest kernel first, whatever order they ran in.
	slices.SortStableFunc(m.kernels, func(a, b kernel) int {
		am, an := lineVersion(a.line)
		bm, bn := lineVersion(b.line)
		if am != bm {
			return am - bm
		}
		return an - bn
	})
	return m, nil
}

// lineVersion is a kernel line's major and minor version ("6.12": 6, 12).
func lineVersion(line string) (major, minor int) {
	a, b, _ := strings.Cut(line, ".")
	major, _ = strconv.Atoi(a)
	minor, _ = strconv.Atoi(b)
	return major, minor
}

func loadKernel(dir, line string) (kernel, error) {
	k := kernel{line: line, testsRC: -1, labRC: -1}
	read := func(name string) string {
		b, _ := os.ReadFile(filepath.Join(dir, name))
		return strings.TrimSpace(string(b))
	}
	number := func(name string) float64 {
		v, _ := strconv.ParseFloat(read(name), 64)
		return v
	}
	k.pkg, k.release = read("package"), read("release")
	k.testsSecs, k.labSecs = number("tests.seconds"), number("lab.seconds")
	if v, err := strconv.Atoi(read("tests.rc")); err == nil {
		k.testsRun, k.testsRC = true, v
	}
	if v, err := strconv.Atoi(read("lab.rc")); err == nil {
		k.labRC = v
	}
	if f, err := os.Open(filepath.Join(dir, "tests.log")); err == nil {
		k.tests = parseTests(f)
		f.Close()
	}
	if b, err := os.ReadFile(filepath.Join(dir, "lab.json")); err != nil || len(b) == 0 {
		k.labErr = "no lab output"
	} else if err := json.Unmarshal(b, &k.lab); err != nil {
		k.labErr = fmt.Sprintf("lab output is not its JSON report: %v", err)
	}
	if k.labErr == "" {
		k.labProblems = judgeLab(line, k.lab)
	}
	return k, nil
}

var (
	packageLine = regexp.MustCompile(`^=== PACKAGE (\S+)`)
	resultLine  = regexp.MustCompile(`^=== RESULT (\S+) (ok|FAIL) ([0-9.]+)`)
	testLine    = regexp.MustCompile(`^--- (PASS|FAIL|SKIP): (\S+)`)
)

// parseTests reads ctguard-kernel-tests' output: per package, the
// top-level tests' outcomes (subtests are indented) and the package's
// result.
func parseTests(r io.Reader) []pkgResult {
	var out []pkgResult
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64<<10), 4<<20)
	for sc.Scan() {
		l := sc.Text()
		if m := packageLine.FindStringSubmatch(l); m != nil {
			out = append(out, pkgResult{pkg: m[1]})
			continue
		}
		if len(out) == 0 {
			continue
		}
		cur := &out[len(out)-1]
		if m := resultLine.FindStringSubmatch(l); m != nil && m[1] == cur.pkg {
			cur.done, cur.ok = true, m[2] == "ok"
			cur.secs, _ = strconv.ParseFloat(m[3], 64)
			continue
		}
		if m := testLine.FindStringSubmatch(l); m != nil {
			switch m[1] {
			case "PASS":
				cur.passed++
			case "FAIL":
				cur.failed = append(cur.failed, m[2])
			case "SKIP":
				cur.skipped = append(cur.skipped, m[2])
			}
		}
	}
	return out
}

// oldRetransmissionReproduces reports whether the kernel line predates
// "netfilter: conntrack: ignore overly delayed tcp packets" (Linux 6.1),
// i.e. marks an old-sequence retransmission invalid.
func oldRetransmissionReproduces(line string) bool {
	a, b := lineVersion(line)
	return a < 6 || (a == 6 && b < 1)
}

// judgeLab checks the lab's report against what the kernel line must show:
// no run failed, the beyond-window segment reproduces the RST everywhere,
// the old-sequence retransmission exactly on kernels before 6.1, and every
// workaround protected every case that reproduced.
func judgeLab(line string, rep lab.Report) []string {
	var problems []string
	if rep.Error != "" {
		problems = append(problems, "the lab stopped: "+rep.Error)
	}
	if !rep.OK() {
		problems = append(problems, "the lab's own verdict is FAILED")
	}
	baselines := 0
	for _, r := range rep.Results {
		key := fmt.Sprintf("%s/%s/%s", r.Family, r.Case, r.Workaround)
		if r.Error != "" {
			problems = append(problems, fmt.Sprintf("%s: %s", key, r.Error))
			continue
		}
		if r.Workaround != lab.Baseline {
			continue
		}
		baselines++
		var want bool
		switch r.Case {
		case lab.BeyondWindow:
			want = true
		case lab.OldRetransmission:
			want = oldRetransmissionReproduces(line)
		default:
			continue // a case whose kernel behaviour this table does not claim
		}
		if r.Reproducible != want {
			problems = append(problems, fmt.Sprintf("%s: reproduced %v, want %v on Linux %s", key, r.Reproducible, want, line))
		}
	}
	if baselines == 0 {
		problems = append(problems, "the lab ran no baseline")
	}
	return problems
}

// cell is the short text of one result for the table.
func cell(r lab.Result) string {
	if h := r.Handshake; h != nil && r.Error == "" && !r.Skipped {
		resets := fmt.Sprintf("%d/%d reset", h.Reset, h.Conns)
		if r.Workaround == lab.Baseline {
			return resets
		}
		return fmt.Sprintf("%s, %s", r.Verdict, resets)
	}
	switch {
	case r.Error != "":
		return "error"
	case r.Workaround == lab.Baseline && r.Reproducible:
		return "RST from NAT, download dies"
	case r.Workaround == lab.Baseline:
		return "ignored by conntrack, no RST"
	case r.Skipped:
		return "not needed"
	}
	return r.Verdict
}

// rowName is the table row of a result: its case, and the NAT box's kind
// when the lab reports one.
func rowName(r lab.Result) string {
	if r.Topology == "" {
		return string(r.Case)
	}
	return fmt.Sprintf("%s (%s)", r.Case, r.Topology)
}

// labRows returns the rows (case and topology) and workarounds in the
// order the lab ran them and, per row and workaround, the cell text with
// both families folded in.
func labRows(rep lab.Report) (rows []string, workarounds []string, cells map[string]string) {
	byKey := map[string][]lab.Result{}
	for _, r := range rep.Results {
		if !slices.Contains(rows, rowName(r)) {
			rows = append(rows, rowName(r))
		}
		if !slices.Contains(workarounds, r.Workaround) {
			workarounds = append(workarounds, r.Workaround)
		}
		k := rowName(r) + "\x00" + r.Workaround
		byKey[k] = append(byKey[k], r)
	}
	cells = map[string]string{}
	for k, rs := range byKey {
		same := true
		for _, r := range rs[1:] {
			same = same && cell(r) == cell(rs[0])
		}
		var parts []string
		if same {
			fams := make([]string, len(rs))
			for i, r := range rs {
				fams[i] = familyName(r.Family)
			}
			parts = append(parts, fmt.Sprintf("%s (%s)", cell(rs[0]), strings.Join(fams, ", ")))
		} else {
			for _, r := range rs {
				parts = append(parts, fmt.Sprintf("%s: %s", familyName(r.Family), cell(r)))
			}
		}
		cells[k] = strings.Join(parts, "; ")
	}
	return rows, workarounds, cells
}

func familyName(f lab.Family) string {
	switch f {
	case lab.IPv4:
		return "IPv4"
	case lab.IPv6:
		return "IPv6"
	}
	return string(f)
}

// kernelName is the table's name for the kernel: line, upstream version
// and Debian package.
func (k kernel) name() string {
	pkg, ver, _ := strings.Cut(k.pkg, " ")
	if pkg == "" {
		return k.line
	}
	return fmt.Sprintf("%s (`%s` %s)", k.line, pkg, ver)
}

func (k kernel) testsOK() bool {
	if !k.testsRun {
		return true
	}
	if k.testsRC != 0 || len(k.tests) == 0 {
		return false
	}
	for _, p := range k.tests {
		if !p.done || !p.ok || len(p.failed) > 0 {
			return false
		}
	}
	return true
}

func (k kernel) labOK() bool {
	return k.labErr == "" && k.labRC == 0 && len(k.labProblems) == 0
}

func (m *matrix) ok() bool {
	if len(m.kernels) == 0 {
		return false
	}
	for _, k := range m.kernels {
		if !k.testsOK() || !k.labOK() {
			return false
		}
	}
	return true
}

// write prints the lab table (kernel x case x workaround), the kernel
// tests' table, every problem, and a summary line.
func (m *matrix) write(w io.Writer) error {
	var workarounds []string
	for _, k := range m.kernels {
		_, ws, _ := labRows(k.lab)
		for _, x := range ws {
			if !slices.Contains(workarounds, x) {
				workarounds = append(workarounds, x)
			}
		}
	}
	b := &strings.Builder{}
	fmt.Fprintf(b, "| kernel | case | %s |\n", strings.Join(workarounds, " | "))
	fmt.Fprintf(b, "|---|---|%s\n", strings.Repeat("---|", len(workarounds)))
	for _, k := range m.kernels {
		if k.labErr != "" {
			fmt.Fprintf(b, "| %s | lab | **%s** (exit %d)%s\n", k.name(), k.labErr, k.labRC, strings.Repeat(" |", len(workarounds)))
			continue
		}
		rows, _, cells := labRows(k.lab)
		for _, row := range rows {
			fmt.Fprintf(b, "| %s | %s |", k.name(), row)
			for _, x := range workarounds {
				v := cells[row+"\x00"+x]
				if v == "" {
					v = "-"
				}
				fmt.Fprintf(b, " %s |", v)
			}
			b.WriteString("\n")
		}
	}
	b.WriteString("\n| kernel | kernel tests (`TestPrivileged*`, compiled) | passed | failed | skipped by the test | lab | time (tests + lab) |\n|---|---|---|---|---|---|---|\n")
	for _, k := range m.kernels {
		if !k.testsRun {
			fmt.Fprintf(b, "| %s | not run | - | - | - | %s | %.0f s |\n", k.name(), verdictText(k.labOK()), k.labSecs)
			continue
		}
		passed, pkgs := 0, 0
		var failed, skipped []string
		for _, p := range k.tests {
			pkgs++
			passed += p.passed
			for _, f := range p.failed {
				failed = append(failed, p.pkg+"."+f)
			}
			for _, s := range p.skipped {
				skipped = append(skipped, p.pkg+"."+s)
			}
			if !p.done {
				failed = append(failed, p.pkg+" (did not finish)")
			} else if !p.ok && len(p.failed) == 0 {
				failed = append(failed, p.pkg+" (package failed)")
			}
		}
		verdict := verdictText(k.testsOK())
		if !k.testsOK() {
			if len(failed) == 0 {
				failed = append(failed, fmt.Sprintf("runner exit %d", k.testsRC))
			}
		}
		labVerdict := verdictText(k.labOK())
		fail := "0"
		if len(failed) > 0 {
			fail = fmt.Sprintf("%d: %s", len(failed), strings.Join(failed, ", "))
		}
		skip := "0"
		if len(skipped) > 0 {
			skip = fmt.Sprintf("%d: %s", len(skipped), strings.Join(skipped, ", "))
		}
		fmt.Fprintf(b, "| %s | %s, %d packages | %d | %s | %s | %s | %.0f s + %.0f s |\n",
			k.name(), verdict, pkgs, passed, fail, skip, labVerdict, k.testsSecs, k.labSecs)
	}
	for _, s := range m.skipped {
		fmt.Fprintf(b, "\nNot run under emulation: %s", s)
	}
	if len(m.skipped) > 0 {
		b.WriteString("\n")
	}
	for _, k := range m.kernels {
		for _, p := range k.labProblems {
			fmt.Fprintf(b, "\n%s lab: %s", k.line, p)
		}
		if k.labErr == "" && k.labRC != 0 {
			fmt.Fprintf(b, "\n%s lab: ctguard lab exited %d", k.line, k.labRC)
		}
	}
	verdict := "OK"
	if !m.ok() {
		verdict = "FAILED"
	}
	fmt.Fprintf(b, "\nmatrix of %d kernel(s): %s\n", len(m.kernels), verdict)
	_, err := io.WriteString(w, b.String())
	return err
}

func verdictText(ok bool) string {
	if ok {
		return "ok"
	}
	return "**FAIL**"
}
