package lab

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"time"

	"github.com/ctguard/ctguard/lab/topo"
	"golang.org/x/sys/unix"
)

// Run reproduces every selected case on every selected family: first
// without any workaround (the baseline), then, if the baseline reproduced
// the NAT's RST, once with each mitigation. Every run has a fresh topology,
// removed when the run ends, also when ctx is cancelled. Run returns an
// error, with the results gathered so far, only when the lab itself fails
// (a namespace cannot be built, ctx ends); what a run observed, including a
// mitigation that fails to apply, is in the report.
func Run(ctx context.Context, opts Options) (Report, error) {
	start := time.Now()
	rep := Report{Kernel: kernelRelease()}
	opts, err := opts.withDefaults()
	if err != nil {
		return rep, err
	}
	body := topo.NewBody(opts.BodySize)
	mitigations := selected(opts.Mitigations)
	for _, f := range opts.Families {
		for _, c := range opts.Cases {
			base, err := runCase(ctx, opts, body, f, c, nil)
			base = rep.add(base)
			if err != nil {
				return rep.finish(start), err
			}
			for _, m := range mitigations {
				r := Result{Family: f, Case: c, Workaround: m.Name()}
				if base.Reproducible {
					r, err = runCase(ctx, opts, body, f, c, m)
				}
				rep.add(r)
				if err != nil {
					return rep.finish(start), err
				}
			}
		}
	}
	return rep.finish(start), nil
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

// runCase reproduces case c on family f on a fresh topology, with mitigation
// m applied in the NAT namespace (none when m is nil).
func runCase(ctx context.Context, o Options, body topo.Body, f Family, c Case, m Mitigation) (r Result, err error) {
	start := time.Now()
	r = Result{Family: f, Case: c, Workaround: Baseline}
	if m != nil {
		r.Workaround = m.Name()
	}
	log := o.Logger.With("family", f, "case", c, "workaround", r.Workaround)
	log.Info("lab run starting")
	defer func() {
		r.Seconds = time.Since(start).Seconds()
		log.Info("lab run done", "rstFromNAT", r.RSTFromNAT, "invalidDelta", r.InvalidDelta,
			"downloadOK", r.DownloadOK, "download", r.DownloadError, "error", r.Error, "seconds", r.Seconds)
	}()

	t, err := topo.New(ctx, f)
	if err != nil {
		return r, err
	}
	defer func() { err = errors.Join(err, t.Close()) }()
	log.Debug("lab topology ready", "client", t.Client.Name, "nat", t.NAT.Name, "server", t.Server.Name)
	if err := topo.WriteSysctl(t.Client, "net.ipv4.tcp_rmem", clientRmem); err != nil {
		return r, err
	}
	if m != nil {
		stop, err := m.Apply(ctx, t.NAT)
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
	return r, reproduce(ctx, t, o, body, c, &r)
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
