package metrics

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/prometheus/exporter-toolkit/web"
	"golang.org/x/net/netutil"
)

// Handler serves /metrics from the private registry, /healthz (200 while
// the process runs) and /readyz (200 when ready returns nil, else 503 with
// the error as the body). A nil ready is always ready.
func (m *Metrics) Handler(ready func() error) http.Handler {
	return m.ProbeHandler(Probes{Ready: ready})
}

// Probes are the checks behind /healthz (Live) and /readyz (Ready). A nil
// check passes.
type Probes struct {
	// Live fails when the process should be restarted, e.g. a loop is
	// stuck.
	Live func() error
	// Ready fails while the process cannot do its job yet or any more.
	Ready func() error
}

// ProbeHandler serves /metrics from the private registry, and /healthz and
// /readyz from p: 200 "ok" when the check passes, else 503 with the error
// as the body.
func (m *Metrics) ProbeHandler(p Probes) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(m.Registry, promhttp.HandlerOpts{
		// A failing collector must not hide the other metrics.
		ErrorHandling:       promhttp.ContinueOnError,
		Registry:            m.Registry,
		MaxRequestsInFlight: 4,
	}))
	mux.HandleFunc("GET /healthz", probe("unhealthy", p.Live))
	mux.HandleFunc("GET /readyz", probe("not ready", p.Ready))
	return mux
}

// probe answers 200 "ok" when check passes, else 503 "what: error".
func probe(what string, check func() error) http.HandlerFunc {
	return func(w http.ResponseWriter, _ *http.Request) {
		if check != nil {
			if err := check(); err != nil {
				http.Error(w, what+": "+err.Error(), http.StatusServiceUnavailable)
				return
			}
		}
		_, _ = io.WriteString(w, "ok\n")
	}
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
	ln, err := Listen(addr)
	if err != nil {
		return fmt.Errorf("metrics: %w", err)
	}
	return ServeListener(ctx, ln, h, "", nil)
}

// Listen binds addr for ServeListener, so that a caller can fail at once
// when the address cannot be bound.
func Listen(addr string) (net.Listener, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		var op *net.OpError
		if errors.As(err, &op) {
			err = op.Err // its message repeats the address
		}
		return nil, fmt.Errorf("listen on %s: %w", addr, err)
	}
	return ln, nil
}

// ServeListener is Serve on a listener from Listen; it closes ln. With a
// webConfig file (the Prometheus exporter-toolkit format: TLS server
// certificate, client CAs, basic auth users with bcrypt hashes, see
// CheckWebConfig) it serves HTTPS and checks users as that file says; the
// file is read again for every connection, so renewed certificates need no
// restart. log receives the toolkit's messages.
func ServeListener(ctx context.Context, ln net.Listener, h http.Handler, webConfig string, log *slog.Logger) error {
	ln = netutil.LimitListener(ln, MaxConnections)
	if webConfig == "" {
		return serve(ctx, ln, h)
	}
	return serveWith(ctx, ln, h, func(srv *http.Server) error {
		return web.Serve(ln, srv, &web.FlagConfig{WebConfigFile: &webConfig}, log)
	})
}

// CheckWebConfig validates an exporter-toolkit web configuration file, so
// that a bad one fails at start rather than at the first scrape.
func CheckWebConfig(path string) error {
	if err := web.Validate(path); err != nil {
		return fmt.Errorf("web config %s: %w", path, err)
	}
	return nil
}

func serve(ctx context.Context, ln net.Listener, h http.Handler) error {
	return serveWith(ctx, ln, h, func(srv *http.Server) error { return srv.Serve(ln) })
}

// serveWith runs run (which serves srv on ln) until ctx is done.
func serveWith(ctx context.Context, ln net.Listener, h http.Handler, run func(*http.Server) error) error {
	srv := &http.Server{
		Handler:           h,
		ReadHeaderTimeout: readTimeout,
		ReadTimeout:       readTimeout,
		WriteTimeout:      writeTimeout,
		IdleTimeout:       idleTimeout,
		MaxHeaderBytes:    8 << 10,
	}
	done := make(chan error, 1)
	go func() { done <- run(srv) }()

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
