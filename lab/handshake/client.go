package handshake

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"slices"
	"sync"
	"syscall"
	"time"

	"github.com/ctguard/ctguard/lab/topo"
)

// Load is what the client does: Conns connections, started at Rate a
// second, each given ConnectTimeout to connect (a lost SYN costs a
// one-second retransmission: that is slow setup, not a reset) and then
// Timeout to read the whole response.
type Load struct {
	Conns   int
	Rate    float64
	Timeout time.Duration
	// ConnectTimeout defaults to DefaultConnectTimeout.
	ConnectTimeout time.Duration
}

// Defaults of Load.
const (
	DefaultConns   = 40
	DefaultRate    = 200
	DefaultTimeout = 2 * time.Second

	DefaultConnectTimeout = 3 * time.Second
)

func (l Load) withDefaults() Load {
	if l.Conns <= 0 {
		l.Conns = DefaultConns
	}
	if l.Rate <= 0 {
		l.Rate = DefaultRate
	}
	if l.Timeout <= 0 {
		l.Timeout = DefaultTimeout
	}
	if l.ConnectTimeout <= 0 {
		l.ConnectTimeout = DefaultConnectTimeout
	}
	return l
}

// Outcome is what the client saw.
type Outcome struct {
	Conns int `json:"connections"`
	OK    int `json:"ok"` // the whole response
	// Reset counts connections that connected and did not get the whole
	// response: ECONNRESET, a short or wrong body, or not all of it by the
	// deadline (a NAT-generated RST kills the server's end and leaves the
	// client waiting). Their sum is the incident's count.
	Reset         int `json:"reset"`
	ResetByRST    int `json:"resetByRST"`    // ECONNRESET on the client
	ResetShort    int `json:"resetShort"`    // EOF before the whole response, or a wrong one
	ResetTimeout  int `json:"resetTimeout"`  // no whole response within the deadline
	ConnectFailed int `json:"connectFailed"` // never connected (not counted as reset)
	// FirstError is one failure's text, for the report.
	FirstError string `json:"firstError,omitempty"`
	// SetupP50 and SetupP99 are connection setup latencies (connect
	// start to established) of the connections that connected.
	SetupP50 time.Duration `json:"setupP50ns"`
	SetupP99 time.Duration `json:"setupP99ns"`
	// Rate is the connection rate achieved (connections started per second).
	Rate    float64       `json:"rate"`
	Elapsed time.Duration `json:"elapsedNs"`
}

// Run opens load.Conns connections from namespace client to target at
// load.Rate a second, concurrently, and returns what they got. It returns
// early with ctx's error.
func Run(ctx context.Context, client topo.Namespace, target netip.AddrPort, load Load) (Outcome, error) {
	load = load.withDefaults()
	out := Outcome{Conns: load.Conns}
	results := make([]result, load.Conns)
	var wg sync.WaitGroup
	start := time.Now()
	interval := time.Duration(float64(time.Second) / load.Rate)
	var launched time.Duration
	for i := range results {
		if d := time.Until(start.Add(time.Duration(i) * interval)); d > 0 {
			select {
			case <-ctx.Done():
				wg.Wait()
				return out, ctx.Err()
			case <-time.After(d):
			}
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			results[i] = once(ctx, client, target, load)
		}()
	}
	launched = time.Since(start)
	wg.Wait()
	out.Elapsed = time.Since(start)
	if load.Conns > 1 && launched > 0 {
		out.Rate = float64(load.Conns-1) / launched.Seconds()
	}
	if err := ctx.Err(); err != nil {
		return out, err
	}
	var setup []time.Duration
	for _, r := range results {
		switch r.kind {
		case resultOK:
			out.OK++
		case resultConnectFailed:
			out.ConnectFailed++
		case resultRST:
			out.ResetByRST++
		case resultShort:
			out.ResetShort++
		case resultTimeout:
			out.ResetTimeout++
		}
		if r.kind != resultConnectFailed {
			setup = append(setup, r.setup)
		}
		if r.err != nil && out.FirstError == "" {
			out.FirstError = r.err.Error()
		}
	}
	out.Reset = out.ResetByRST + out.ResetShort + out.ResetTimeout
	out.SetupP50, out.SetupP99 = percentile(setup, 50), percentile(setup, 99)
	return out, nil
}

type resultKind int

const (
	resultOK resultKind = iota
	resultConnectFailed
	resultRST
	resultShort
	resultTimeout
)

type result struct {
	kind  resultKind
	setup time.Duration
	err   error
}

// once runs one connection: connect from a socket created in the client
// namespace, read until EOF, the deadline or one byte more than the
// response, compare.
func once(ctx context.Context, client topo.Namespace, target netip.AddrPort, load Load) result {
	timeout := load.Timeout
	var conn net.Conn
	var setup time.Duration
	err := client.Do(func() (err error) {
		d := net.Dialer{Timeout: load.ConnectTimeout}
		start := time.Now()
		conn, err = d.DialContext(ctx, "tcp", target.String())
		setup = time.Since(start)
		return err
	})
	if err != nil {
		return dialFailed(err, setup)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(timeout))
	got, err := io.ReadAll(io.LimitReader(conn, int64(len(Response))+1))
	r := result{setup: setup}
	if bytes.Equal(got, Response) {
		// The whole response came after the crafted segment: the
		// connection survived it. A late FIN on a starved machine is no
		// reset.
		return r
	}
	switch {
	case errors.Is(err, syscall.ECONNRESET):
		r.kind, r.err = resultRST, err
	case errors.Is(err, os.ErrDeadlineExceeded):
		r.kind, r.err = resultTimeout, fmt.Errorf("%d of %d response bytes, then nothing for %s", len(got), len(Response), timeout)
	case err != nil:
		r.kind, r.err = resultShort, err
	default:
		r.kind, r.err = resultShort, fmt.Errorf("%d response bytes, want %d", len(got), len(Response))
	}
	return r
}

// dialFailed classifies a failed connect. ECONNRESET and EPIPE mean the
// kernel completed the handshake (a reset in SYN_SENT is ECONNREFUSED) and
// the connection was reset before connect saw it established (EPIPE: after
// the server's FIN): a reset, which a slow machine (an emulated CPU) lets
// connect report. Anything else never connected.
func dialFailed(err error, setup time.Duration) result {
	if errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE) {
		return result{kind: resultRST, setup: setup, err: fmt.Errorf("reset before connect returned: %w", err)}
	}
	return result{kind: resultConnectFailed, err: fmt.Errorf("connect: %w", err)}
}

// percentile returns the p-th percentile (nearest rank) of ds, which it
// sorts; zero for none.
func percentile(ds []time.Duration, p int) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	slices.Sort(ds)
	i := (len(ds)*p + 99) / 100
	return ds[max(i-1, 0)]
}
