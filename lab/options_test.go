package lab

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/ctguard/ctguard/lab/topo"
)

type namedMitigation string

func (m namedMitigation) Name() string { return string(m) }
func (namedMitigation) Apply(context.Context, Namespace) (func() error, error) {
	return func() error { return nil }, nil
}

func TestOptionsDefaults(t *testing.T) {
	o, err := Options{}.withDefaults()
	if err != nil {
		t.Fatal(err)
	}
	if len(o.Families) != 2 || len(o.Cases) != 3 || len(o.Topologies) != 2 || o.Connections != 40 || o.BodySize != DefaultBodySize || o.Rate != DefaultRate || o.Logger == nil {
		t.Errorf("defaults: %+v", o)
	}
	for _, tc := range []struct {
		name string
		opts Options
		want error
	}{
		{"unknown case", Options{Cases: []Case{"sideways"}}, ErrUnknownCase},
		{"unknown family", Options{Families: []Family{"ipx"}}, topo.ErrUnknownFamily},
		{"unknown topology", Options{Topologies: []NAT{"masq"}}, topo.ErrUnknownNAT},
	} {
		if _, err := tc.opts.withDefaults(); !errors.Is(err, tc.want) {
			t.Errorf("%s: err %v, want %v", tc.name, err, tc.want)
		}
	}
}

func TestSelectedSkipsBaseline(t *testing.T) {
	got := selected([]Mitigation{nil, namedMitigation(Baseline), namedMitigation("liberal"), namedMitigation("dropInvalid")})
	if len(got) != 2 || got[0].Name() != "liberal" || got[1].Name() != "dropInvalid" {
		t.Errorf("selected: %v", got)
	}
}

// TestOptionsWgetMustBeGNU keeps busybox's wget (or anything else that is
// not GNU wget) away from the lab's downloads: it takes none of GNU's
// options, and every control run would fail (issue 10).
func TestOptionsWgetMustBeGNU(t *testing.T) {
	dir := t.TempDir()
	fake := filepath.Join(dir, "wget")
	script := "#!/bin/sh\necho 'wget: unrecognized option: version' >&2\nexit 1\n"
	if err := os.WriteFile(fake, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	o, err := Options{WgetPath: fake}.withDefaults()
	if err != nil {
		t.Fatal(err)
	}
	if o.WgetPath != "" {
		t.Errorf("a wget that is not GNU wget was kept: %q", o.WgetPath)
	}
	gnu := filepath.Join(dir, "gnu-wget")
	if err := os.WriteFile(gnu, []byte("#!/bin/sh\necho 'GNU Wget 1.21.3 built on linux-gnu.'\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	if o, err := (Options{WgetPath: gnu}).withDefaults(); err != nil || o.WgetPath != gnu {
		t.Errorf("GNU wget dropped: %q, %v", o.WgetPath, err)
	}
}
