// Command benchtable turns benchstat's CSV output (stdin) for hack/bench
// into the README's table of issue 9's nftables and journal rows: for
// each row ctguard's median (before and after, when benchstat compared two
// inputs), its anchor's median measured in the same run, and the ratio.
package main

import (
	"encoding/csv"
	"fmt"
	"io"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
)

// medians maps unit, benchmark name and input name to a median.
type medians map[string]map[string]map[string]float64

// parse reads benchstat's CSV: blocks of a header naming the inputs
// (absent for one input), a header naming the unit of each value column
// (each followed by its CI column), then one row per benchmark. It
// returns the medians and the input names in order.
func parse(r io.Reader) (medians, []string, error) {
	cr := csv.NewReader(r)
	cr.FieldsPerRecord = -1
	out := medians{}
	var inputs, inputRow, unitRow []string
	gomaxprocs := regexp.MustCompile(`-\d+$`)
	for {
		rec, err := cr.Read()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, nil, err
		}
		switch {
		case len(rec) < 2 || rec[0] == "geomean":
		case rec[0] == "" && len(rec) > 2 && rec[2] == "CI":
			unitRow = rec
		case rec[0] == "":
			inputRow = rec
		default:
			name := gomaxprocs.ReplaceAllString(rec[0], "")
			for i := 1; i < len(rec) && i < len(unitRow); i++ {
				if i+1 >= len(unitRow) || unitRow[i+1] != "CI" {
					continue // not a value column
				}
				v, err := strconv.ParseFloat(rec[i], 64)
				if err != nil {
					continue
				}
				input := ""
				if i < len(inputRow) {
					input = inputRow[i]
				}
				if !slices.Contains(inputs, input) {
					inputs = append(inputs, input)
				}
				unit := unitRow[i]
				if out[unit] == nil {
					out[unit] = map[string]map[string]float64{}
				}
				if out[unit][name] == nil {
					out[unit][name] = map[string]float64{}
				}
				out[unit][name][input] = v
			}
		}
	}
	if len(inputs) == 0 {
		return nil, nil, fmt.Errorf("no benchmark results")
	}
	return out, inputs, nil
}

// row is one line of the table.
type row struct {
	what, unit, bench, anchor, goal string
}

var rows = []row{
	{"re-apply a 100,000-address dropInvalid policy after editing one address (warm controller)", "sec/op", "PrivilegedDropInvalid100k/edit-one/ctguard", "PrivilegedDropInvalid100k/edit-one/nft-f", "< 50 ms, counters kept"},
	{"  same, anchor nft add element", "sec/op", "PrivilegedDropInvalid100k/edit-one/ctguard", "PrivilegedDropInvalid100k/edit-one/nft-add-element", ""},
	{"  same, CPU", "cpu-ms/op", "PrivilegedDropInvalid100k/edit-one/ctguard", "PrivilegedDropInvalid100k/edit-one/nft-f", ""},
	{"first apply of that policy", "sec/op", "PrivilegedDropInvalid100k/first-apply/ctguard", "PrivilegedDropInvalid100k/first-apply/nft-f", "<= 1x nft -f"},
	{"  same, CPU", "cpu-ms/op", "PrivilegedDropInvalid100k/first-apply/ctguard", "PrivilegedDropInvalid100k/first-apply/nft-f", ""},
	{"200,000-CIDR policy: no-op apply, CPU", "cpu-ms/op", "PrivilegedNoop200k/apply/ctguard", "PrivilegedNoop200k/list/nft", "<= 1x nft list"},
	{"  no-op plan, CPU", "cpu-ms/op", "PrivilegedNoop200k/plan/ctguard", "PrivilegedNoop200k/list/nft", "<= 1x nft list"},
	{"  status, CPU", "cpu-ms/op", "PrivilegedNoop200k/status/ctguard", "PrivilegedNoop200k/list/nft", "<= 1x nft list"},
	{"  idle ctguard run: CPU of one resync", "cpu-ms/op", "PrivilegedNoop200k/resync/ctguard", "", ""},
	{"  idle ctguard run: CPU share at --resync 30s", "%cpu@30s", "PrivilegedNoop200k/resync/ctguard", "", "< 1%"},
	{"  journal: bytes for 10 revisions", "journal-bytes", "Journal200k", "", "policies stored once"},
}

// anchorNames name the anchors by their benchmark's sub-name.
var anchorNames = map[string]string{
	"edit-one/nft-f":           "nft -f",
	"edit-one/nft-add-element": "nft add element",
	"first-apply/nft-f":        "nft -f",
	"list/nft":                 "nft list table",
}

func main() {
	m, inputs, err := parse(os.Stdin)
	if err != nil {
		fmt.Fprintln(os.Stderr, "benchtable:", err)
		os.Exit(1)
	}
	head := inputs[len(inputs)-1]
	base := ""
	if len(inputs) > 1 {
		base = inputs[0]
	}
	fmt.Println("| row | unit | ctguard before | ctguard now | anchor (same run) | now / anchor | goal |")
	fmt.Println("|---|---|---|---|---|---|---|")
	for _, r := range rows {
		get := func(bench, input string) (float64, bool) {
			v, ok := m[r.unit][bench][input]
			return v, ok
		}
		now, ok := get(r.bench, head)
		if !ok {
			continue
		}
		before := "-"
		if v, ok := get(r.bench, base); ok && base != "" {
			before = format(r.unit, v)
		}
		anchor, ratio := "-", "-"
		if r.anchor != "" {
			if v, ok := get(r.anchor, head); ok {
				anchor = anchorNames[r.anchor[strings.Index(r.anchor, "/")+1:]] + " " + format(r.unit, v)
				ratio = fmt.Sprintf("%.2fx", now/v)
			}
		}
		fmt.Printf("| %s | %s | %s | %s | %s | %s | %s |\n", r.what, r.unit, before, format(r.unit, now), anchor, ratio, r.goal)
	}
}

// format renders a value of a unit for people.
func format(unit string, v float64) string {
	switch unit {
	case "sec/op":
		if v < 1 {
			return fmt.Sprintf("%.0f ms", v*1000)
		}
		return fmt.Sprintf("%.2f s", v)
	case "cpu-ms/op":
		if v >= 1000 {
			return fmt.Sprintf("%.2f s", v/1000)
		}
		return fmt.Sprintf("%.1f ms", v)
	case "%cpu@30s":
		return fmt.Sprintf("%.3f%%", v)
	case "journal-bytes":
		return fmt.Sprintf("%.1f MB", v/1e6)
	}
	return strconv.FormatFloat(v, 'g', 4, 64)
}
