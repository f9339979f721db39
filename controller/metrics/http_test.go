package metrics

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
)

func get(t *testing.T, h http.Handler, path string) (int, string) {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
	return rec.Code, rec.Body.String()
}

func TestProbes(t *testing.T) {
	var notReady atomic.Pointer[error]
	errStarting := errors.New("initial reconcile pending")
	notReady.Store(&errStarting)
	h := New().Handler(func() error {
		if p := notReady.Load(); p != nil {
			return *p
		}
		return nil
	})

	steps := []struct {
		name       string
		ready      bool
		path       string
		wantCode   int
		wantInBody string
	}{
		{"healthz while starting", false, "/healthz", http.StatusOK, "ok"},
		{"readyz while starting", false, "/readyz", http.StatusServiceUnavailable, "initial reconcile pending"},
		{"readyz once ready", true, "/readyz", http.StatusOK, "ok"},
		{"readyz after failure", false, "/readyz", http.StatusServiceUnavailable, "initial reconcile pending"},
		{"healthz after failure", false, "/healthz", http.StatusOK, "ok"},
	}
	for _, s := range steps {
		if s.ready {
			notReady.Store(nil)
		} else {
			notReady.Store(&errStarting)
		}
		code, body := get(t, h, s.path)
		if code != s.wantCode || !strings.Contains(body, s.wantInBody) {
			t.Errorf("%s: GET %s = %d %q, want %d containing %q", s.name, s.path, code, body, s.wantCode, s.wantInBody)
		}
	}
}

func TestNilReadyIsReady(t *testing.T) {
	if code, _ := get(t, New().Handler(nil), "/readyz"); code != http.StatusOK {
		t.Errorf("GET /readyz = %d, want 200", code)
	}
}

func TestUnknownPath(t *testing.T) {
	if code, _ := get(t, New().Handler(nil), "/nope"); code != http.StatusNotFound {
		t.Errorf("GET /nope = %d, want 404", code)
	}
}

func TestServeShutsDownOnCancel(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- serve(ctx, ln, New().Handler(nil)) }()

	resp, err := http.Get("http://" + ln.Addr().String() + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || string(body) != "ok\n" {
		t.Errorf("GET /healthz = %d %q", resp.StatusCode, body)
	}

	cancel()
	if err := <-done; err != nil {
		t.Errorf("serve after cancel = %v, want nil", err)
	}
	if _, err := net.Dial("tcp", ln.Addr().String()); err == nil {
		t.Errorf("listener still accepting after shutdown")
	}
}

func TestServeBadAddr(t *testing.T) {
	if err := Serve(context.Background(), "127.0.0.1:notaport", http.NotFoundHandler()); err == nil {
		t.Fatal("Serve with a bad address returned nil")
	}
}

func TestLiveProbe(t *testing.T) {
	var stuck atomic.Bool
	h := New().ProbeHandler(Probes{Live: func() error {
		if stuck.Load() {
			return errors.New("the reconcile loop has been busy for 2m0s")
		}
		return nil
	}})
	if code, body := get(t, h, "/healthz"); code != http.StatusOK || body != "ok\n" {
		t.Errorf("GET /healthz = %d %q, want 200 ok", code, body)
	}
	stuck.Store(true)
	if code, body := get(t, h, "/healthz"); code != http.StatusServiceUnavailable || !strings.Contains(body, "unhealthy: the reconcile loop has been busy") {
		t.Errorf("GET /healthz while stuck = %d %q, want 503 naming the loop", code, body)
	}
	if code, _ := get(t, h, "/readyz"); code != http.StatusOK {
		t.Errorf("GET /readyz without a check = %d, want 200", code)
	}
}

func TestListenNamesTheAddress(t *testing.T) {
	ln, err := Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	_, err = Listen(ln.Addr().String())
	if err == nil || !strings.Contains(err.Error(), "listen on "+ln.Addr().String()+": ") || strings.Count(err.Error(), ln.Addr().String()) != 1 {
		t.Fatalf("Listen on a busy address: %v", err)
	}
}
