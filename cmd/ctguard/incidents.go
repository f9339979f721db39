package main

import (
	"context"
	"sync"
	"time"

	"github.com/ctguard/ctguard/controller"
	"github.com/ctguard/ctguard/controller/detect"
	"github.com/ctguard/ctguard/controller/incident"
	"github.com/ctguard/ctguard/controller/metrics"
	"github.com/ctguard/ctguard/policy"
)

// ringSize is how many incidents "ctguard run" keeps for "ctguard status".
const ringSize = 32

// incidentRing runs the incident detector beside the controller: it keeps
// the last incidents for the live status and counts them per policy.
type incidentRing struct {
	s     *session
	group uint16
	w     *detect.Watcher // nil when the group could not be bound

	mu    sync.Mutex
	ring  *incident.Ring
	state string
	dirty bool
	last  *controller.LiveStatus
}

// startIncidents binds the evidence group before the first apply writes
// rules logging to it. A group another process holds (a "ctguard detect")
// leaves the ring off, loudly; the controller runs on.
func startIncidents(ctx context.Context, s *session, group uint16, m *metrics.Metrics, initial []policy.Policy) *incidentRing {
	r := &incidentRing{s: s, group: group, ring: incident.NewRing(ringSize), state: "off (--evidence-group 0)"}
	if group == 0 {
		return r
	}
	var total *metrics.Incidents
	w, err := detect.Open(detect.Config{NetNSFd: -1, Group: group, Conn: s.Conntrack, Policies: initial, Logger: s.log, OnIncident: func(inc incident.Incident) {
		s.log.Warn("connection reset on a conntrack-invalid segment", "incident", incident.Text(inc))
		refs := inc.Policies
		if len(refs) == 0 {
			refs = []incident.PolicyRef{{Workaround: "none"}}
		}
		for _, p := range refs {
			total.Total.WithLabelValues(p.Name, string(p.Workaround)).Inc()
		}
		r.mu.Lock()
		r.ring.Add(inc)
		r.dirty = true
		r.mu.Unlock()
	}})
	if err != nil {
		s.log.Error("the incident ring cannot run: incidents are not recorded", "group", group, "err", err)
		r.state = "off: " + err.Error()
		return r
	}
	r.w, r.state = w, "listening"
	total = m.NewIncidents(func() (uint64, uint64, uint64) {
		st := w.Stats()
		return st.Logged, st.Lost, st.Overruns
	})
	go func() {
		if err := w.Run(ctx); err != nil {
			s.log.Error("the incident ring stopped", "err", err)
			r.mu.Lock()
			r.state = "stopped: " + err.Error()
			r.mu.Unlock()
		}
	}()
	go r.republish(ctx)
	return r
}

// setPolicies passes a new policy set to the detector's coverage check.
func (r *incidentRing) setPolicies(ps []policy.Policy) {
	if r.w != nil {
		if err := r.w.SetPolicies(ps); err != nil {
			r.s.log.Warn("incident ring policies", "err", err)
		}
	}
}

// publish adds the ring to a live status and publishes it.
func (r *incidentRing) publish(st controller.LiveStatus) {
	r.mu.Lock()
	st.Incidents = r.status()
	r.last, r.dirty = &st, false
	r.mu.Unlock()
	r.s.publishLive(st)
}

// status is the ring's part of the live status; r.mu is held.
func (r *incidentRing) status() *controller.IncidentStatus {
	is := &controller.IncidentStatus{State: r.state, Group: r.group, Total: r.ring.Total(), Last: r.ring.Last()}
	if r.w != nil {
		st := r.w.Stats()
		is.Logged, is.Lost, is.Overruns = st.Logged, st.Lost, st.Overruns
	}
	return is
}

// republish publishes the last live status again, at most once a second,
// when incidents arrived since.
func (r *incidentRing) republish(ctx context.Context) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		r.mu.Lock()
		var st controller.LiveStatus
		ok := r.dirty && r.last != nil
		if ok {
			st = *r.last
			st.UpdatedAt = time.Now()
		}
		r.mu.Unlock()
		if ok {
			r.publish(st)
		}
	}
}

// ringEngine passes every policy set the Run loop adopts to the ring too.
type ringEngine struct {
	controller.Engine
	ring *incidentRing
}

// SetPolicies implements controller.Engine.
func (e ringEngine) SetPolicies(ps []policy.Policy) error {
	e.ring.setPolicies(ps)
	return e.Engine.SetPolicies(ps)
}
