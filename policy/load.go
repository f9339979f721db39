package policy

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"
)

// Load reads the policies at path: a file of YAML documents separated by
// "---", or a directory whose *.yaml and *.yml entries are read in name
// order (not recursively, following symlinks, skipping names that start
// with "." such as a Kubernetes ConfigMap mount's ..data, and
// subdirectories). Only regular files are read, never more than MaxFileSize
// bytes each, and a FIFO or device never blocks: a path, or a *.yaml/*.yml
// entry, of another type (FIFO, device, socket) is an error wrapping
// ErrNotRegular. Finding no policy at all is an error
// wrapping ErrNoPolicies. Names must be unique across all files. On any
// problem Load returns no policies and an ErrorList of the problems found,
// at most MaxErrors of them.
func Load(path string) ([]Policy, error) {
	info, err := os.Stat(path)
	if err != nil {
		return nil, ErrorList{ioError(path, err)}
	}
	if !info.IsDir() && !info.Mode().IsRegular() {
		err := fmt.Errorf("%w (%s): give a policy file or directory", ErrNotRegular, kindOf(info.Mode()))
		return nil, ErrorList{&FieldError{File: path, Msg: err.Error(), Err: err}}
	}
	files := []string{path}
	var l loader
	if info.IsDir() {
		files = l.listDir(path)
	}
	for _, f := range files {
		if l.full() {
			break
		}
		data, err := readFile(f)
		if err != nil {
			l.errs = append(l.errs, ioError(f, err))
			continue
		}
		l.parse(f, data)
	}
	if len(l.policies) == 0 && len(l.errs) == 0 {
		msg := ErrNoPolicies.Error()
		if info.IsDir() && len(files) == 0 {
			msg += " (no *.yaml or *.yml files)"
		}
		l.errs = append(l.errs, &FieldError{File: path, Msg: msg, Err: ErrNoPolicies})
	}
	return l.result()
}

// Parse decodes and validates the policy documents of one file's contents;
// file is used in messages and as Policy.Source. Empty documents are
// skipped, so empty data yields no policies and no error. On any problem
// Parse returns no policies and an ErrorList of every problem found.
func Parse(file string, data []byte) ([]Policy, error) {
	var l loader
	l.parse(file, data)
	return l.result()
}

// loader collects policies and problems across files.
type loader struct {
	policies []Policy
	errs     ErrorList
	names    map[string]string // metadata.name -> "file:line" of its first definition
	perFlow  int               // perFlow policies so far
}

// MaxPerFlowPolicies is how many perFlow liberal policies one ctguard runs:
// its flow matcher tests them all at once, as the bits of a 64-bit mask.
const MaxPerFlowPolicies = 64

// ErrTooManyPerFlow is the problem of a set of more than MaxPerFlowPolicies
// perFlow liberal policies, for Load, Parse and the flow matcher alike.
var ErrTooManyPerFlow = fmt.Errorf("more than %d perFlow liberal policies in all (merge their matches: list items are OR-ed)", MaxPerFlowPolicies)

func (l *loader) result() ([]Policy, error) {
	if l.full() {
		l.errs = append(l.errs[:MaxErrors:MaxErrors], &FieldError{Msg: fmt.Sprintf("stopped after %d problems: fix these first", MaxErrors)})
	}
	if len(l.errs) > 0 {
		return nil, l.errs
	}
	return l.policies, nil
}

// full reports whether the loader has found as many problems as it reports.
func (l *loader) full() bool { return len(l.errs) >= MaxErrors }

// listDir returns the policy files of dir in name order.
func (l *loader) listDir(dir string) []string {
	entries, err := os.ReadDir(dir)
	if err != nil {
		l.errs = append(l.errs, ioError(dir, err))
		return nil
	}
	var files []string
	for _, e := range entries {
		name := e.Name()
		if strings.HasPrefix(name, ".") || (filepath.Ext(name) != ".yaml" && filepath.Ext(name) != ".yml") {
			continue
		}
		path := filepath.Join(dir, name)
		info, err := os.Stat(path) // follows the symlinks of a ConfigMap mount
		if err != nil {
			l.errs = append(l.errs, ioError(path, err))
			continue
		}
		if info.IsDir() {
			continue // not recursive
		}
		if !info.Mode().IsRegular() {
			err := fmt.Errorf("%w (%s): ctguard reads regular files only; remove it or rename it to end other than .yaml/.yml", ErrNotRegular, kindOf(info.Mode()))
			l.errs = append(l.errs, &FieldError{File: path, Msg: err.Error(), Err: err})
			continue
		}
		files = append(files, path)
	}
	return files
}

// parse adds the policies of one file, and its problems in file order.
func (l *loader) parse(file string, data []byte) {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	for !l.full() {
		var node yaml.Node
		err := dec.Decode(&node)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			l.errs = append(l.errs, syntaxError(file, data, err))
			return
		}
		d := newDocument(file)
		doc, ok := d.run(&node)
		if !ok {
			continue
		}
		l.checkUnique(d)
		l.checkPerFlowLimit(d, &doc.Spec)
		if len(d.errs) == 0 {
			l.policies = append(l.policies, seal(doc, file))
		}
		l.errs = append(l.errs, d.errors()...)
	}
}

// checkUnique reports a document whose name an earlier one already has.
func (l *loader) checkUnique(d *document) {
	name := d.name
	if name == "" || !d.ok("metadata.name") {
		return
	}
	at := d.pos["metadata.name"]
	if first, dup := l.names[name]; dup {
		d.errorf(at, "metadata.name", "duplicate name %q (also defined at %s)", name, first)
		return
	}
	if l.names == nil {
		l.names = map[string]string{}
	}
	l.names[name] = fmt.Sprintf("%s:%d", d.file, at.line)
}

// checkPerFlowLimit reports the perFlow policy beyond MaxPerFlowPolicies.
func (l *loader) checkPerFlowLimit(d *document, s *Spec) {
	if len(d.errs) > 0 || s.Workaround != WorkaroundLiberal || s.Liberal.Scope != ScopePerFlow {
		return
	}
	l.perFlow++
	if l.perFlow > MaxPerFlowPolicies {
		d.errorf(d.pos["spec.workaround"], "spec.workaround", "%s", ErrTooManyPerFlow)
	}
}

// run decodes and validates one document. It reports false for an empty
// document.
func (d *document) run(doc *yaml.Node) (Document, bool) {
	if len(doc.Content) == 0 {
		return Document{}, false
	}
	root := resolve(doc.Content[0])
	if isNull(root) {
		return Document{}, false
	}
	d.start = at(root)
	d.name = peekName(root)
	p, ok := d.decode(root)
	if ok {
		d.validate(&p)
	}
	return p, true
}

var yamlErrLine = regexp.MustCompile(`^yaml: line (\d+): `)

// syntaxError turns a yaml.v3 syntax error in data into a FieldError with
// its line, found in data when the error does not say.
func syntaxError(file string, data []byte, err error) *FieldError {
	msg := strings.TrimPrefix(err.Error(), "yaml: ")
	line := 0
	if m := yamlErrLine.FindStringSubmatch(err.Error()); m != nil {
		line, _ = strconv.Atoi(m[1])
		msg = err.Error()[len(m[0]):]
	} else {
		line = yamlLine(data, msg)
	}
	return &FieldError{File: file, Line: line, Msg: "invalid YAML: " + clip(msg), Err: err}
}

// ioError reports a file that cannot be read, keeping the cause for
// errors.Is (fs.ErrNotExist, fs.ErrPermission).
func ioError(path string, err error) *FieldError {
	msg := err.Error()
	var pe *fs.PathError
	if errors.As(err, &pe) {
		msg = pe.Err.Error()
	}
	return &FieldError{File: path, Msg: msg, Err: err}
}
