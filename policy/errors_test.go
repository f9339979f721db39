package policy

import (
	"errors"
	"io/fs"
	"testing"
)

func TestFieldErrorFormat(t *testing.T) {
	tests := []struct {
		name string
		err  FieldError
		want string
	}{
		{"everything", FieldError{File: "p.yaml", Line: 14, Policy: "egress", Field: "spec.match.destinations[1]", Msg: `invalid CIDR "10.0.0.300/8"`},
			`p.yaml:14: policy "egress": spec.match.destinations[1]: invalid CIDR "10.0.0.300/8"`},
		{"no line", FieldError{File: "p.yaml", Policy: "egress", Field: "spec", Msg: "required"},
			`p.yaml: policy "egress": spec: required`},
		{"no policy", FieldError{File: "p.yaml", Line: 3, Msg: "invalid YAML: did not find expected key"},
			`p.yaml:3: invalid YAML: did not find expected key`},
		{"no field", FieldError{File: "p.yaml", Line: 1, Policy: "x", Msg: "m"},
			`p.yaml:1: policy "x": m`},
		{"no file", FieldError{Field: "kind", Msg: "m"}, `kind: m`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.err.Error(); got != tt.want {
				t.Errorf("Error() = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestErrorListJoinsAndUnwraps(t *testing.T) {
	l := ErrorList{
		{File: "a.yaml", Line: 1, Msg: "first"},
		{File: "b.yaml", Msg: "no such file or directory", Err: fs.ErrNotExist},
	}
	if got, want := l.Error(), "a.yaml:1: first\nb.yaml: no such file or directory"; got != want {
		t.Errorf("Error() = %q, want %q", got, want)
	}
	if !errors.Is(l, fs.ErrNotExist) {
		t.Error("errors.Is(list, fs.ErrNotExist) = false, want true")
	}
	var fe *FieldError
	if !errors.As(error(l), &fe) || fe.File != "a.yaml" {
		t.Errorf("errors.As found %v, want the first FieldError", fe)
	}
	if ErrorList(nil).orNil() != nil {
		t.Error("empty list must convert to a nil error")
	}
}
