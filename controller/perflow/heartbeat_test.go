package perflow

import "testing"

// TestHeartbeat: Run beats while it waits for events and while it waits
// for policies; a beat that stops advancing is what /healthz calls stuck.
func TestHeartbeat(t *testing.T) {
	for _, tt := range []struct {
		name string
		e    func(t *testing.T) *Engine
	}{
		{"handling events", func(t *testing.T) *Engine { return newEngine(t, newFakeConn(), nil, web) }},
		{"waiting for policies", func(t *testing.T) *Engine { return newEngine(t, newFakeConn(), nil) }},
	} {
		t.Run(tt.name, func(t *testing.T) {
			e := tt.e(t)
			if !e.Heartbeat().IsZero() {
				t.Fatal("heartbeat before Run")
			}
			stop := run(t, e)
			defer stop()
			waitFor(t, "a first heartbeat", func() bool { return !e.Heartbeat().IsZero() })
			first := e.Heartbeat()
			waitFor(t, "the heartbeat advancing", func() bool { return e.Heartbeat().After(first) })
		})
	}
}
