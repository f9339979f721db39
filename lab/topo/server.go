package topo

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"strconv"
	"time"
)

// Body is the content the lab's server sends, with its digest.
type Body struct {
	Data   []byte
	SHA256 [sha256.Size]byte
}

// NewBody returns size bytes of deterministic pseudo-random content (not
// compressible, the same for every run).
func NewBody(size int) Body {
	data := make([]byte, size)
	var seed [32]byte
	copy(seed[:], "ctguard lab body")
	_, _ = rand.NewChaCha8(seed).Read(data) // ChaCha8.Read never fails
	return Body{Data: data, SHA256: sha256.Sum256(data)}
}

// Ports of the lab's server: ServerPort in an SNAT topology; in a DNAT
// topology the client dials ServicePort on the service address and the
// server listens on BackendPort, as a kube-proxy service maps a port to a
// backend's target port.
const (
	ServerPort  = 80
	ServicePort = 80
	BackendPort = 8080
)

// Server is an HTTP server in the server namespace that sends its body to
// every GET, paced to a byte rate so a download lasts long enough to be
// tampered with.
type Server struct {
	// URL is the address the client downloads from.
	URL    string
	srv    *http.Server
	served chan error
}

// chunkSize is the pacing granularity of the server's writes.
const chunkSize = 16 << 10

// StartServer serves body on the server's address of family f at about
// rate bytes per second (unpaced when rate <= 0). The listening socket is
// created on a thread inside the server namespace, so it belongs there. Its
// URL is the address the client dials (ServiceAddr).
func (t *Topology) StartServer(f Family, body Body, rate int) (*Server, error) {
	addr := t.ListenAddr(f)
	if !addr.Addr().IsValid() {
		return nil, fmt.Errorf("server for %s: %w", f, ErrUnknownFamily)
	}
	var ln net.Listener
	err := t.Server.Do(func() (err error) {
		ln, err = net.Listen("tcp", addr.String())
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("listen on %s in %s: %w", addr, t.Server.Name, err)
	}
	s := &Server{
		URL:    "http://" + t.ServiceAddr(f).String() + "/",
		srv:    &http.Server{Handler: pacedHandler(body, rate), ReadHeaderTimeout: 5 * time.Second},
		served: make(chan error, 1),
	}
	go func() {
		s.served <- s.srv.Serve(ln)
		close(s.served)
	}()
	return s, nil
}

// Close stops the server and drops its connections. Later calls do nothing.
func (s *Server) Close() error {
	err := s.srv.Close()
	if serr := <-s.served; !errors.Is(serr, http.ErrServerClosed) {
		err = errors.Join(err, serr)
	}
	return err
}

// pacedHandler writes body in chunks, never ahead of rate bytes per second.
func pacedHandler(body Body, rate int) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/octet-stream")
		w.Header().Set("Content-Length", strconv.Itoa(len(body.Data)))
		start := time.Now()
		for sent := 0; sent < len(body.Data); {
			if rate > 0 {
				due := start.Add(time.Duration(float64(sent) / float64(rate) * float64(time.Second)))
				select {
				case <-r.Context().Done():
					return
				case <-time.After(time.Until(due)):
				}
			}
			n := min(chunkSize, len(body.Data)-sent)
			if _, err := w.Write(body.Data[sent : sent+n]); err != nil {
				return
			}
			sent += n
		}
	})
}
