package main

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/ctguard/ctguard/controller"
)

func TestStuck(t *testing.T) {
	now := time.Date(2026, 12, 1, 6, 0, 0, 0, time.UTC)
	ago := func(d time.Duration) time.Time { return now.Add(-d) }
	tests := []struct {
		name     string
		loop     int64
		engine   time.Time
		wantPart string // "" = healthy
	}{
		{"starting: nothing beat yet", 0, time.Time{}, ""},
		{"both beating", ago(time.Second).UnixNano(), ago(time.Second), ""},
		{"no per-flow policy: the engine waits", ago(time.Second).UnixNano(), time.Time{}, ""},
		{"loop stuck", ago(2 * time.Minute).UnixNano(), ago(time.Second), "reconcile loop has been busy for 2m0s"},
		{"engine stuck", ago(time.Second).UnixNano(), ago(90 * time.Second), "per-flow engine has been busy for 1m30s"},
	}
	for _, tt := range tests {
		err := stuck(now, time.Minute, tt.loop, tt.engine)
		switch {
		case tt.wantPart == "" && err != nil:
			t.Errorf("%s: %v, want healthy", tt.name, err)
		case tt.wantPart != "" && (err == nil || !strings.Contains(err.Error(), tt.wantPart)):
			t.Errorf("%s: %v, want %q", tt.name, err, tt.wantPart)
		}
	}
}

// TestReadiness: /readyz fails until the first apply, and while the last
// reconcile fails.
func TestReadiness(t *testing.T) {
	r := &controllerRun{}
	if err := r.readiness(); err == nil || !strings.Contains(err.Error(), "first apply not done yet") {
		t.Errorf("before the first apply: %v", err)
	}
	r.ready.Store(true)
	if err := r.readiness(); err != nil {
		t.Errorf("ready: %v", err)
	}
	r.failing.Store(true)
	if err := r.readiness(); err == nil || !strings.Contains(err.Error(), "the last reconcile failed") {
		t.Errorf("failing: %v", err)
	}
}

// TestStatusChanged: systemd hears of a live status only when the failing
// state or the policy generation changed.
func TestStatusChanged(t *testing.T) {
	r := &controllerRun{lastGeneration: -1}
	for i, tc := range []struct {
		st   controller.LiveStatus
		want bool
	}{
		{controller.LiveStatus{Generation: 1}, true},
		{controller.LiveStatus{Generation: 1}, false},
		{controller.LiveStatus{Generation: 1, ReconcileFailing: true}, true},
		{controller.LiveStatus{Generation: 1, ReconcileFailing: true}, false},
		{controller.LiveStatus{Generation: 1}, true},
		{controller.LiveStatus{Generation: 2}, true},
	} {
		if got := r.statusChanged(tc.st); got != tc.want {
			t.Errorf("status %d %+v: changed %v, want %v", i, tc.st, got, tc.want)
		}
		if r.failing.Load() != tc.st.ReconcileFailing {
			t.Errorf("status %d: failing not recorded", i)
		}
	}
}

// TestWithServeError: a metrics server's failure is added to Run's error,
// naming the address.
func TestWithServeError(t *testing.T) {
	ch := make(chan error, 1)
	if err := withServeError(nil, "127.0.0.1:9468", ch); err != nil {
		t.Errorf("no server error: %v", err)
	}
	ch <- errors.New("boom")
	err := withServeError(errors.New("run"), "127.0.0.1:9468", ch)
	if err == nil || !strings.Contains(err.Error(), "run") || !strings.Contains(err.Error(), "--metrics-addr 127.0.0.1:9468: boom") {
		t.Errorf("with server error: %v", err)
	}
}

func TestLiveLine(t *testing.T) {
	if got := liveLine(controller.LiveStatus{Revision: 3, Generation: 2}); got != "revision 3, policy generation 2" {
		t.Errorf("liveLine = %q", got)
	}
	if got := liveLine(controller.LiveStatus{Revision: 3, Generation: 2, ReconcileFailing: true, LastError: "x"}); got != "revision 3, policy generation 2; reconcile FAILING: x" {
		t.Errorf("liveLine failing = %q", got)
	}
}
