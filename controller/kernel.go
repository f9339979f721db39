package controller

import (
	"fmt"
	"strconv"
	"strings"
)

// KernelNotes says, for a kernel release ("6.18.44-generic"), how its
// conntrack treats the incident's packets, so operators read the counters
// with the right expectations. Unknown releases get no notes.
func KernelNotes(release string) []string {
	major, minor, patch, ok := parseRelease(release)
	if !ok {
		return nil
	}
	at := func(ma, mi, pa int) bool {
		return major > ma || major == ma && (minor > mi || minor == mi && patch >= pa)
	}
	var notes []string
	if at(6, 1, 0) {
		notes = append(notes, "old-sequence spurious retransmissions are ignored by conntrack (Linux 6.1+); server segments beyond the receiver's window are still invalid and still trigger the RST")
	} else {
		notes = append(notes, "old-sequence spurious retransmissions and segments beyond the window are both marked invalid (before Linux 6.1): the incident as written")
	}
	if !at(5, 18, 0) && !(major == 5 && minor == 10 && patch >= 110) {
		notes = append(notes, fmt.Sprintf("kernel %d.%d.%d may predate \"preserve liberal flag in tcp options\": the SYN-ACK can wipe a REPLY flag set at NEW; ctguard re-flags such flows when they turn ESTABLISHED", major, minor, patch))
	}
	return notes
}

// parseRelease reads "MAJOR.MINOR[.PATCH][-suffix]".
func parseRelease(release string) (major, minor, patch int, ok bool) {
	core, _, _ := strings.Cut(release, "-")
	parts := strings.SplitN(core, ".", 3)
	if len(parts) < 2 {
		return 0, 0, 0, false
	}
	nums := make([]int, 3)
	for i, p := range parts {
		n, err := strconv.Atoi(p)
		if err != nil {
			return 0, 0, 0, false
		}
		nums[i] = n
	}
	return nums[0], nums[1], nums[2], true
}
