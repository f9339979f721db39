package metrics

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"
	"golang.org/x/net/netutil"
)

// Handler serves /metrics from the private registry, /healthz (200 while
// the process runs) and /readyz (200 when ready returns nil, else 503 with
// the error as the body). A nil ready is always ready.
func (m *Metrics) Handler(ready func() error) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(m.Registry, promhttp.HandlerOpts{
		// A failing collector must not hide the other metrics.
		ErrorHandling:       promhttp.ContinueOnError,
		Registry:            m.Registry,
		MaxRequestsInFlight: 4,
	}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		_, _ = io.WriteString(w, "ok\n")
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		if ready != nil {
			if err := ready(); err != nil {
				http.Error(w, "not ready: "+err.Error(), http.StatusServiceUnavailable)
				return
			}
		}
		_, _ = io.WriteString(w, "ok\n")
	})
	return mux
}

// The metrics endpoint can never starve the control loop of file
// descriptors or goroutines: it holds at most MaxConnections connections
// (more wait in the kernel's accept queue, costing ctguard nothing), and
// drops a connection that sends no request within a few seconds.
const (
	// MaxConnections bounds the connections served at once: a scrape, a
	// probe or two, and room to spare.
	MaxConnections = 16
	// readTimeout bounds reading a request, headers included; idleTimeout
	// how long a kept-alive connection waits for the next one.
	readTimeout  = 3 * time.Second
	idleTimeout  = 5 * time.Second
	writeTimeout = 10 * time.Second
)

// shutdownTimeout bounds how long Serve waits for in-flight requests once
// its context is done.
const shutdownTimeout = 5 * time.Second

// Serve listens on addr and serves h until ctx is done, then shuts the
// server down gracefully and returns nil. It returns an error if addr
// cannot be bound or the server fails.
func Serve(ctx context.Context, addr string, h http.Handler) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("metrics: listen on %s: %w", addr, err)
	}
	return serve(ctx, ln, h)
}

func serve(ctx context.Context, ln net.Listener, h http.Handler) error {
	ln = netutil.LimitListener(ln, MaxConnections)
	srv := &http.Server{
		Handler:           h,
		ReadHeaderTimeout: readTimeout,
		ReadTimeout:       readTimeout,
		WriteTimeout:      writeTimeout,
		IdleTimeout:       idleTimeout,
		MaxHeaderBytes:    8 << 10,
	}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ln) }()

	select {
	case err := <-done:
		return fmt.Errorf("metrics: serve on %s: %w", ln.Addr(), err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), shutdownTimeout)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		return errors.Join(fmt.Errorf("metrics: shutdown: %w", err), srv.Close())
	}
	if err := <-done; !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("metrics: serve on %s: %w", ln.Addr(), err)
	}
	return nil
}
