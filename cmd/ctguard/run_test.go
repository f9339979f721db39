package main

import (
	"strings"
	"testing"
	"time"
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
