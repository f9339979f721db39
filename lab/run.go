package lab

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"time"

	"github.com/ctguard/ctguard/lab/handshake"
	"github.com/ctguard/ctguard/lab/topo"
	"golang.org/x/sys/unix"
)

// Run reproduces every selected case on every selected family (the
// handshake case also on every selected topology): first without any
// workaround (the baseline), then, if the baseline reproduced the reset,
// once with each mitigation. Every run has a fresh topology, removed when
// the run ends, also when ctx is cancelled. Run returns an error, with the
// results gathered so far, only when the lab itself fails (a namespace
// cannot be built, ctx ends); the failed run is in the report as an error
// with its cause, and so is the report's Error, so it is never OK. What a
// run observed, including a mitigation that fails to apply, is in the
// report.
func Run(ctx context.Context, opts Options) (rep Report, err error) {
	start := time.Now()
	rep = Report{Kernel: kernelRelease()}
	defer func() {
		if err != nil {
			rep.Error = err.Error()
		}
		rep = rep.finish(start)
	}()
	opts, err = opts.withDefaults()
	if err != nil {
		return rep, err
	}
	body := topo.NewBody(opts.BodySize)
	mitigations := selected(opts.Mitigations)
	for _, f := range opts.Families {
		for _, c := range opts.Cases {
			for _, kind := range topologies(c, opts.Topologies) {
				base, err := runCase(ctx, opts, body, f, c, kind, nil)
				base = rep.add(base)
				if err != nil {
					return rep, err
				}
				for _, m := range mitigations {
					r := Result{Family: f, Case: c, Topology: kind, Workaround: m.Name()}
					if base.Reproducible {
						r, err = runCase(ctx, opts, body, f, c, kind, m)
					}
					rep.add(r)
					if err != nil {
						return rep, err
					}
				}
			}
		}
	}
	return rep, nil
}

// topologies returns the topologies case c runs on: the selected ones for
// the handshake case, SNAT (if selected) for the mid-transfer cases, whose
// capture follows a masqueraded flow.
func topologies(c Case, selected []NAT) []NAT {
	if c == Handshake {
		return selected
	}
	if slices.Contains(selected, SNAT) {
		return []NAT{SNAT}
	}
	return nil
}

// selected drops nil and "none" entries: the baseline always runs.
func selected(ms []Mitigation) []Mitigation {
	var out []Mitigation
	for _, m := range ms {
		if m != nil && m.Name() != Baseline {
			out = append(out, m)
		}
	}
	return out
}

// runCase reproduces case c on family f on a fresh topology of the given
// kind, with mitigation m applied in the NAT namespace (none when m is
// nil). A returned error is also in r.Error.
func runCase(ctx context.Context, o Options, body topo.Body, f Family, c Case, kind NAT, m Mitigation) (r Result, err error) {
	start := time.Now()
	r = Result{Family: f, Case: c, Topology: kind, Workaround: Baseline}
	if m != nil {
		r.Workaround = m.Name()
	}
	log := o.Logger.With("family", f, "case", c, "topology", kind, "workaround", r.Workaround)
	log.Info("lab run starting")
	defer func() {
		if err != nil && r.Error == "" {
			r.Error = err.Error()
		}
		r.Seconds = time.Since(start).Seconds()
		if h := r.Handshake; h != nil {
			log.Info("lab run done", "reset", h.Reset, "connections", h.Conns, "invalidDelta", r.InvalidDelta,
				"error", r.Error, "seconds", r.Seconds)
			return
		}
		log.Info("lab run done", "rstFromNAT", r.RSTFromNAT, "invalidDelta", r.InvalidDelta,
			"downloadOK", r.DownloadOK, "download", r.DownloadError, "error", r.Error, "seconds", r.Seconds)
	}()

	t, err := topo.Build(ctx, kind, f)
	if err != nil {
		return r, fmt.Errorf("build the lab's namespaces: %w", err)
	}
	defer func() { err = errors.Join(err, t.Close()) }()
	log.Debug("lab topology ready", "client", t.Client.Name, "nat", t.NAT.Name, "server", t.Server.Name)
	if err := topo.WriteSysctl(t.Client, "net.ipv4.tcp_rmem", clientRmem); err != nil {
		return r, err
	}
	// What "ctguard detect" would print on the NAT box during the run.
	det, err := startDetector(t.NAT)
	if err != nil {
		return r, fmt.Errorf("ctguard detect: %w", err)
	}
	defer func() {
		incs, derr := det.stop()
		r.Incidents = incs
		if derr != nil && err == nil && r.Error == "" {
			r.Error = fmt.Sprintf("ctguard detect: %v", derr)
		}
	}()
	if m != nil {
		stop, err := apply(ctx, m, t)
		if err != nil {
			r.Error = fmt.Sprintf("apply %s: %v", m.Name(), err)
			return r, nil
		}
		defer func() {
			if err := stop(); err != nil {
				r.Error = fmt.Sprintf("remove %s: %v", m.Name(), err)
			}
		}()
	}
	if c == Handshake {
		return r, reproduceHandshake(ctx, t, o, &r)
	}
	return r, reproduce(ctx, t, o, body, c, &r)
}

// apply applies m in t's NAT namespace, configured for t's kind of NAT.
func apply(ctx context.Context, m Mitigation, t *topo.Topology) (func() error, error) {
	if nm, ok := m.(NATMitigation); ok {
		return nm.ApplyNAT(ctx, t.NAT, t.Kind)
	}
	if t.Kind != SNAT {
		return nil, fmt.Errorf("%s runs on SNAT boxes only", m.Name())
	}
	return m.Apply(ctx, t.NAT)
}

// reproduceHandshake runs the adversarial server in t's server namespace
// and o.Connections connections from the client namespace, and records in
// r how many were reset, what the server saw and how conntrack's invalid
// counter moved.
func reproduceHandshake(ctx context.Context, t *topo.Topology, o Options, r *Result) error {
	srv, err := handshake.Listen(t.Server, t.ListenAddr(r.Family))
	if err != nil {
		return err
	}
	defer srv.Close()
	before, err := invalidCount(t.NAT)
	if err != nil {
		return err
	}
	out, err := handshake.Run(ctx, t.Client, t.ServiceAddr(r.Family), handshake.Load{Conns: o.Connections, Rate: o.ConnRate})
	if err != nil {
		return err
	}
	if err := srv.Close(); err != nil {
		return err
	}
	after, err := invalidCount(t.NAT)
	if err != nil {
		return err
	}
	st := srv.Stats()
	r.InvalidDelta = after - before
	r.Handshake = &HandshakeResult{Outcome: out, Injected: st.Injected, ServerResets: st.Resets}
	r.Injected = st.Injected > 0
	r.Segment = fmt.Sprintf("seq snd_nxt+%d ack rcv_nxt len %d, the instant each of %d connections (%.0f/s) was accepted",
		handshake.BeyondWindowOffset, handshake.CraftedPayload, out.Conns, out.Rate)
	switch {
	case st.InjectErr != nil:
		r.Error = fmt.Sprintf("adversarial server: %d of %d segments sent: %v", st.Injected, st.Accepted, st.InjectErr)
	case out.ConnectFailed > 0 && r.Workaround == Baseline:
		r.Error = fmt.Sprintf("control run: %d of %d connections never connected: %s", out.ConnectFailed, out.Conns, out.FirstError)
	case out.Reset > 0 || out.ConnectFailed > 0:
		r.Note = fmt.Sprintf("%d reset (%d RST, %d short, %d no response in time), %d never connected; the server saw %d resets; first: %s",
			out.Reset, out.ResetByRST, out.ResetShort, out.ResetTimeout, out.ConnectFailed, st.Resets, out.FirstError)
	}
	return nil
}

// reproduce downloads body through t's NAT, sends case c's crafted segment
// from the server namespace mid-transfer, and records in r what the server
// namespace saw, how conntrack's invalid counter moved in the NAT
// namespace and how the download ended.
func reproduce(ctx context.Context, t *topo.Topology, o Options, body topo.Body, c Case, r *Result) error {
	srv, err := t.StartServer(r.Family, body, o.Rate)
	if err != nil {
		return err
	}
	defer srv.Close()
	a := t.Addrs(r.Family)
	server := netip.AddrPortFrom(a.Server.Addr(), topo.ServerPort)
	tracker := newFlowTracker(server, a.NATOutside.Addr(), readyToInject(c, uint32(o.BodySize/4)))
	sock, err := openPacketSocket(t.Server, topo.HostLink)
	if err != nil {
		return err
	}
	fed := make(chan struct{})
	go func() {
		sock.feed(tracker.observe)
		close(fed)
	}()
	defer func() {
		sock.Close()
		<-fed
	}()
	before, err := invalidCount(t.NAT)
	if err != nil {
		return err
	}

	dctx, cancel := context.WithTimeout(ctx, downloadTimeout(o))
	defer cancel()
	var dl topo.Download
	finished := make(chan struct{})
	go func() {
		dl = t.Fetch(dctx, srv.URL, o.WgetPath)
		close(finished)
	}()
	ack, injectErr := inject(tracker, sock, c, finished, r)
	<-finished
	if err := ctx.Err(); err != nil {
		return err
	}
	if injectErr != nil {
		r.Error = injectErr.Error()
		if dl.Err != nil {
			r.Error += ": " + dl.Err.Error()
		}
	}

	after, err := invalidCount(t.NAT)
	if err != nil {
		return err
	}
	lost, err := sock.drops()
	if err != nil {
		return err
	}
	s := tracker.snapshot()
	r.InvalidDelta = after - before
	r.RSTFromNAT = len(s.NATResets) > 0
	r.DownloadOK = dl.OK(body)
	r.DownloadBytes = dl.Bytes
	r.Tool = dl.Tool
	if dl.Err != nil {
		r.DownloadError = dl.Err.Error()
	}
	switch {
	case r.RSTFromNAT:
		rst := s.NATResets[0]
		r.Note = fmt.Sprintf("NAT RST seq %d (injected ACK %d), TTL %d", rst.Seq, ack, rst.TTL)
	case lost > 0:
		r.Error = fmt.Sprintf("capture lost %d frames: cannot tell whether the NAT sent a RST", lost)
	}
	return nil
}

// inject waits until the tracker is ready for case c, sends c's crafted
// segment out of the server namespace, records it in r and returns its ACK
// number. It gives up when the download finishes first.
func inject(tracker *flowTracker, sock *packetSocket, c Case, finished <-chan struct{}, r *Result) (uint32, error) {
	select {
	case <-finished:
		return 0, errors.New("download ended before the injection point")
	case <-tracker.reached:
	}
	s := tracker.snapshot()
	seg, err := plan(c, s)
	if err != nil {
		return 0, err
	}
	frame, err := craft(tracker.server, tracker.nat, s, seg)
	if err != nil {
		return 0, err
	}
	if err := sock.send(frame); err != nil {
		return 0, err
	}
	r.Injected = true
	r.Segment = fmt.Sprintf("seq snd_nxt%+d ack %d len %d after %d bytes sent; client window %d",
		int32(seg.Seq-s.ServerNext), seg.Ack, len(seg.Payload), s.Sent(), s.ClientWin)
	return seg.Ack, nil
}

// clientRmem caps the client's receive buffer (net.ipv4.tcp_rmem, also used
// by IPv6) so its window stays near 128 KiB instead of growing to
// megabytes: an old retransmission then falls behind the window early in
// every transfer, as over a real WAN.
const clientRmem = "4096 131072 262144"

// downloadTimeout bounds one download: twice the paced transfer time plus
// slack for a stalled, reset connection to be noticed.
func downloadTimeout(o Options) time.Duration {
	return 2*time.Duration(float64(o.BodySize)/float64(o.Rate)*float64(time.Second)) + 5*time.Second
}

// kernelRelease returns the running kernel's release ("6.18.44-...").
func kernelRelease() string {
	var u unix.Utsname
	if err := unix.Uname(&u); err != nil {
		return "unknown"
	}
	return unix.ByteSliceToString(u.Release[:])
}
