package lab

import (
	"context"
	"errors"
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
	if len(o.Families) != 2 || len(o.Cases) != 2 || o.BodySize != DefaultBodySize || o.Rate != DefaultRate || o.Logger == nil {
		t.Errorf("defaults: %+v", o)
	}
	for _, tc := range []struct {
		name string
		opts Options
		want error
	}{
		{"unknown case", Options{Cases: []Case{"sideways"}}, ErrUnknownCase},
		{"unknown family", Options{Families: []Family{"ipx"}}, topo.ErrUnknownFamily},
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
