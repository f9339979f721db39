package controller

import "github.com/ctguard/ctguard/controller/incident"

// IncidentStatus is the incident ring of a running controller in its live
// status: the last incidents and the evidence log's delivery counters.
type IncidentStatus struct {
	// State is "listening", or why the ring does not run.
	State string `json:"state"`
	// Group is the evidence rules' nfnetlink_log group.
	Group uint16 `json:"group"`
	// Total counts incidents since the controller started; Last holds the
	// most recent, oldest first, at most the ring's capacity.
	Total uint64              `json:"total"`
	Last  []incident.Incident `json:"last"`
	// Logged counts packets read from the log; Lost messages the kernel
	// could not deliver; Overruns receive buffer overruns.
	Logged   uint64 `json:"logged"`
	Lost     uint64 `json:"lost"`
	Overruns uint64 `json:"overruns"`
}
