package controller

// Benchmarks of the nftables rows of issue 9, each beside its anchor (the
// nft tool doing the same job, measured in the same run). hack/bench runs
// them and prints the README's table. They need root; each builds its own
// network namespace.

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/ctguard/ctguard/controller/flows"
	"github.com/ctguard/ctguard/controller/ruleset"
	"github.com/ctguard/ctguard/internal/netnstest"
	"github.com/ctguard/ctguard/internal/policytest"
	"github.com/ctguard/ctguard/policy"
	"golang.org/x/sys/unix"
)

// hostsPolicy is a dropInvalid policy whose n destinations are single
// IPv4 addresses two apart (so none merge); edit >= 0 replaces the one at
// that index by 10.200.0.1.
func hostsPolicy(n, edit int) policy.Policy {
	dst := make([]netip.Prefix, n)
	for i := range dst {
		v := 2 * i
		dst[i] = netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(v >> 16), byte(v >> 8), byte(v)}), 32)
	}
	if edit >= 0 {
		dst[edit] = netip.MustParsePrefix("10.200.0.1/32")
	}
	return dropPolicyTo("big", dst)
}

// cidrPolicy is a dropInvalid policy of n /28s, 32 addresses apart.
func cidrPolicy(n int) policy.Policy {
	dst := make([]netip.Prefix, n)
	for i := range dst {
		v := 32 * i
		dst[i] = netip.PrefixFrom(netip.AddrFrom4([4]byte{byte(10 + v>>24), byte(v >> 16), byte(v >> 8), byte(v)}), 28)
	}
	return dropPolicyTo("big", dst)
}

func dropPolicyTo(name string, dst []netip.Prefix) policy.Policy {
	return policytest.New(policy.Document{
		APIVersion: policy.APIVersion, Kind: policy.Kind,
		Metadata: policy.Metadata{Name: name},
		Spec: policy.Spec{
			Workaround:  policy.WorkaroundDropInvalid,
			DropInvalid: &policy.DropInvalid{Hooks: []policy.Hook{policy.HookInput}},
			Match:       policy.Match{Family: policy.FamilyIPv4, Destinations: dst},
		},
	})
}

// cpuMeter sums the CPU time (user and system) of this process over the
// timed parts of a benchmark, and of the child processes it runs.
type cpuMeter struct {
	total, at time.Duration
}

func processCPU() time.Duration {
	var ru unix.Rusage
	if err := unix.Getrusage(unix.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func (m *cpuMeter) start() { m.at = processCPU() }
func (m *cpuMeter) stop()  { m.total += processCPU() - m.at }

// child adds a finished child process's CPU time.
func (m *cpuMeter) child(cmd *exec.Cmd) {
	m.total += cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()
}

// report sets the cpu-ms/op metric.
func (m *cpuMeter) report(b *testing.B, n int) {
	b.ReportMetric(float64(m.total.Microseconds())/1000/float64(n), "cpu-ms/op")
}

// benchKernel opens a controller on a fresh namespace.
func benchKernel(b *testing.B, prefix string) (*Kernel, *netnstest.NS) {
	b.Helper()
	ns := netnstest.NewNetNS(b, prefix)
	k, err := Open(ns.Fd(), b.TempDir(), flows.DefaultMarkBit, nil)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { k.Close() })
	return k, ns
}

// runNft runs nft in the namespace and adds its CPU time to m.
func runNft(b *testing.B, ns *netnstest.NS, m *cpuMeter, args ...string) {
	b.Helper()
	cmd := exec.Command("ip", append([]string{"netns", "exec", ns.Name, "nft"}, args...)...)
	if out, err := cmd.CombinedOutput(); err != nil {
		b.Fatalf("nft %v: %v\n%.500s", args, err, out)
	}
	m.child(cmd)
}

// nftFile writes the table of the policies as an nft script; replace
// makes it delete and re-create the table, as a whole-table reload does.
func nftFile(b *testing.B, ps []policy.Policy, replace bool) string {
	b.Helper()
	text := ruleset.Build(ps, ruleset.Options{}).String()
	if replace {
		text = "table inet ctguard\ndelete table inet ctguard\n" + text
	}
	f := filepath.Join(b.TempDir(), "ctguard.nft")
	if err := os.WriteFile(f, []byte(text), 0o600); err != nil {
		b.Fatal(err)
	}
	return f
}

// BenchmarkPrivilegedDropInvalid100k: a 100,000-address dropInvalid
// policy, first applied to a namespace without it, then re-applied after
// editing one address (as "ctguard run" does on a reload: the controller
// and its netlink connections are warm); anchors: "nft -f" of the whole
// table and "nft add element" of one address.
func BenchmarkPrivilegedDropInvalid100k(b *testing.B) {
	ctx := context.Background()
	policies := [2][]policy.Policy{{hostsPolicy(100000, -1)}, {hostsPolicy(100000, 50000)}}
	b.Run("first-apply/ctguard", func(b *testing.B) {
		k, _ := benchKernel(b, "n9b1")
		var m cpuMeter
		n := 0
		for b.Loop() {
			b.StopTimer()
			if err := k.Tables.Delete(); err != nil {
				b.Fatal(err)
			}
			if err := k.Store.Remove(); err != nil {
				b.Fatal(err)
			}
			b.StartTimer()
			m.start()
			if _, err := k.Apply(ctx, PolicySet{Source: "bench", Policies: policies[0]}); err != nil {
				b.Fatal(err)
			}
			m.stop()
			n++
		}
		m.report(b, n)
	})
	b.Run("first-apply/nft-f", func(b *testing.B) {
		ns := netnstest.NewNetNS(b, "n9b2")
		file := nftFile(b, policies[0], false)
		del := filepath.Join(b.TempDir(), "delete.nft")
		if err := os.WriteFile(del, []byte("table inet ctguard\ndelete table inet ctguard\n"), 0o600); err != nil {
			b.Fatal(err)
		}
		var m, discard cpuMeter
		n := 0
		for b.Loop() {
			b.StopTimer()
			runNft(b, ns, &discard, "-f", del)
			b.StartTimer()
			runNft(b, ns, &m, "-f", file)
			n++
		}
		m.report(b, n)
	})
	b.Run("edit-one/ctguard", func(b *testing.B) {
		k, ns := benchKernel(b, "n9b3")
		if _, err := k.Apply(ctx, PolicySet{Source: "bench", Policies: policies[0]}); err != nil {
			b.Fatal(err)
		}
		// A running controller has read the table once already.
		if _, err := k.Apply(ctx, PolicySet{Source: "bench", Policies: policies[0]}); err != nil {
			b.Fatal(err)
		}
		handle := tableHandle(b, ns)
		var m cpuMeter
		n := 0
		for b.Loop() {
			m.start()
			res, err := k.Apply(ctx, PolicySet{Source: "bench", Policies: policies[(n+1)%2]})
			m.stop()
			if err != nil {
				b.Fatal(err)
			}
			if s := res.Plan.Table; s == nil || len(s.Sets) != 1 || len(s.Sets[0].ElementsAdded) != 1 || len(s.Sets[0].ElementsRemoved) != 1 {
				b.Fatalf("plan of one edit: %+v", s)
			}
			n++
		}
		m.report(b, n)
		b.StopTimer()
		// The same table (handle): its counters kept counting.
		kept := 0.0
		if tableHandle(b, ns) == handle {
			kept = 1
		}
		b.ReportMetric(kept, "table-kept")
	})
	b.Run("edit-one/nft-f", func(b *testing.B) {
		ns := netnstest.NewNetNS(b, "n9b4")
		files := [2]string{nftFile(b, policies[0], true), nftFile(b, policies[1], true)}
		var m cpuMeter
		runNft(b, ns, &cpuMeter{}, "-f", files[0])
		n := 0
		for b.Loop() {
			runNft(b, ns, &m, "-f", files[(n+1)%2])
			n++
		}
		m.report(b, n)
	})
	b.Run("edit-one/nft-add-element", func(b *testing.B) {
		ns := netnstest.NewNetNS(b, "n9b5")
		var m cpuMeter
		runNft(b, ns, &cpuMeter{}, "-f", nftFile(b, policies[0], false))
		set := ruleset.ObjectName("big", "-", "dst4")
		n := 0
		for b.Loop() {
			verb := [2]string{"add", "delete"}[n%2]
			runNft(b, ns, &m, verb, "element", "inet", "ctguard", set, "{ 10.200.0.1 }")
			n++
		}
		m.report(b, n)
	})
}

// tableHandle is the kernel's handle of table inet ctguard: a table
// deleted and created again (its counters with it) gets a new one.
func tableHandle(b *testing.B, ns *netnstest.NS) float64 {
	b.Helper()
	v := ns.NftJSON(b, "list", "tables", "inet")
	items, _ := v["nftables"].([]any)
	for _, it := range items {
		if t, ok := it.(map[string]any)["table"].(map[string]any); ok && t["name"] == ruleset.TableName {
			h, _ := t["handle"].(float64)
			return h
		}
	}
	b.Fatal("no table inet ctguard")
	return 0
}

// BenchmarkPrivilegedNoop200k: a 200,000-CIDR dropInvalid policy already
// applied. apply, plan and status are one-shot commands: each opens its
// own connections (as the CLI does; parsing the YAML is not included), so
// each reads the whole table; resync is "ctguard run"'s periodic
// reconcile with nothing changed (its idle cost: the %cpu@30s metric is
// its CPU time over the default 30 s resync period). Anchor: "nft list
// table".
func BenchmarkPrivilegedNoop200k(b *testing.B) {
	ctx := context.Background()
	ps := []policy.Policy{cidrPolicy(200000)}
	set := PolicySet{Source: "bench", Policies: ps}
	k, ns := benchKernel(b, "n9b6")
	if _, err := k.Apply(ctx, set); err != nil {
		b.Fatal(err)
	}
	oneShot := func(name string, fn func(k *Kernel) error) {
		b.Run(name+"/ctguard", func(b *testing.B) {
			var m cpuMeter
			n := 0
			for b.Loop() {
				m.start()
				one, err := Open(ns.Fd(), filepath.Dir(k.Store.Path()), flows.DefaultMarkBit, nil)
				if err == nil {
					err = fn(one)
					one.Close()
				}
				m.stop()
				if err != nil {
					b.Fatal(err)
				}
				n++
			}
			m.report(b, n)
		})
	}
	oneShot("apply", func(k *Kernel) error {
		res, err := k.Apply(ctx, set)
		if err == nil && !res.Plan.Empty() {
			err = fmt.Errorf("a no-op apply planned changes")
		}
		return err
	})
	oneShot("plan", func(k *Kernel) error {
		p, err := k.Plan(ctx, set)
		if err == nil && !p.Empty() {
			err = fmt.Errorf("a no-op plan has changes")
		}
		return err
	})
	oneShot("status", func(k *Kernel) error {
		st, err := k.Status(ctx)
		if err == nil && st.Drift {
			err = fmt.Errorf("status reports drift")
		}
		return err
	})
	b.Run("list/nft", func(b *testing.B) {
		var m cpuMeter
		n := 0
		for b.Loop() {
			runNft(b, ns, &m, "list", "table", "inet", "ctguard")
			n++
		}
		m.report(b, n)
	})
	b.Run("resync/ctguard", func(b *testing.B) {
		if _, err := k.apply(ctx, set, applyOptions{}); err != nil { // the full read the first resync makes
			b.Fatal(err)
		}
		var m cpuMeter
		n := 0
		for b.Loop() {
			m.start()
			res, err := k.apply(ctx, set, applyOptions{})
			m.stop()
			if err != nil || !res.Plan.Empty() {
				b.Fatalf("resync: %v (plan empty %v)", err, res.Plan.Empty())
			}
			n++
		}
		m.report(b, n)
		b.ReportMetric(float64(m.total)/float64(n)/float64(30*time.Second)*100, "%cpu@30s")
	})
}
