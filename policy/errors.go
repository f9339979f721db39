package policy

import (
	"errors"
	"fmt"
	"strings"
)

// ErrNoPolicies is wrapped by the error Load returns when a file or
// directory holds no policy document.
var ErrNoPolicies = errors.New("no policies found")

// FieldError is one problem found in a policy file. Error formats it as
//
//	FILE:LINE: policy "NAME": FIELD.PATH: message
//
// leaving out ":LINE", `policy "NAME": ` and "FIELD.PATH: " when unknown.
type FieldError struct {
	File   string // file the problem is in ("<default>" for the embedded policy)
	Line   int    // 1-based line, 0 when unknown
	Policy string // metadata.name of the policy, "" when unknown
	Field  string // field path such as spec.match.destinations[1], "" for the whole file
	Msg    string // what is wrong, and where possible how to fix it
	Err    error  // underlying cause (an I/O error, ErrNoPolicies), if any
}

// Error returns the one-line form described on FieldError.
func (e *FieldError) Error() string {
	var b strings.Builder
	b.WriteString(e.File)
	if e.Line > 0 {
		fmt.Fprintf(&b, ":%d", e.Line)
	}
	if b.Len() > 0 {
		b.WriteString(": ")
	}
	if e.Policy != "" {
		fmt.Fprintf(&b, "policy %q: ", clip(e.Policy))
	}
	if e.Field != "" {
		b.WriteString(clip(e.Field))
		b.WriteString(": ")
	}
	b.WriteString(e.Msg)
	return b.String()
}

// Unwrap returns the underlying cause, if any.
func (e *FieldError) Unwrap() error { return e.Err }

// ErrorList collects every problem found while loading policies.
type ErrorList []*FieldError

// Error returns one line per problem, newline-joined.
func (l ErrorList) Error() string {
	lines := make([]string, len(l))
	for i, e := range l {
		lines[i] = e.Error()
	}
	return strings.Join(lines, "\n")
}

// Unwrap lets errors.Is and errors.As look into every problem.
func (l ErrorList) Unwrap() []error {
	errs := make([]error, len(l))
	for i, e := range l {
		errs[i] = e
	}
	return errs
}

// orNil returns l as an error, or a true nil when l is empty.
func (l ErrorList) orNil() error {
	if len(l) == 0 {
		return nil
	}
	return l
}
