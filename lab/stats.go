package lab

import (
	"fmt"

	"github.com/mdlayher/netlink"
	"github.com/ti-mo/conntrack"
)

// invalidCount returns conntrack's "invalid" statistic of ns, summed over
// CPUs.
func invalidCount(ns Namespace) (uint64, error) {
	c, err := conntrack.Dial(&netlink.Config{NetNS: ns.Fd()})
	if err != nil {
		return 0, fmt.Errorf("conntrack in %s: %w", ns.Name, err)
	}
	defer c.Close()
	stats, err := c.Stats()
	if err != nil {
		return 0, fmt.Errorf("conntrack stats in %s: %w", ns.Name, err)
	}
	var sum uint64
	for _, s := range stats {
		sum += uint64(s.Invalid)
	}
	return sum, nil
}
