package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strings"

	"github.com/spf13/cobra"
	"sigs.k8s.io/yaml"
)

// The -o formats. A new one is a constant, a case in writeView and its
// name in the addOutputFlag calls of the commands that offer it.
const (
	outputText = "text"
	outputJSON = "json"
	outputYAML = "yaml"
)

// outputFlag is a command's -o: the format chosen and those it offers.
type outputFlag struct {
	format  string
	formats []string
}

// addOutputFlag adds -o (default: the first format) to cmd, offering
// formats; note, if any, is added to the flag's help.
func addOutputFlag(cmd *cobra.Command, note string, formats ...string) *outputFlag {
	o := &outputFlag{formats: formats}
	usage := "output format: " + strings.Join(formats, ", ")
	if note != "" {
		usage += " (" + note + ")"
	}
	cmd.Flags().StringVarP(&o.format, "output", "o", formats[0], usage)
	return o
}

// check validates -o before anything is read.
func (o *outputFlag) check() error {
	if !slices.Contains(o.formats, o.format) {
		return fmt.Errorf("-o: %q is not one of %s", o.format, strings.Join(o.formats, ", "))
	}
	return nil
}

// view is what a command prints: text for people, a value for machines.
type view struct {
	// text renders for people.
	text func(io.Writer) error
	// value is what the structured formats encode.
	value any
	// json, when set, writes the JSON form instead of encoding value (a
	// document of its own, like the plan's).
	json func(io.Writer) error
}

// writeView renders v to w in format (checked by outputFlag.check). Every
// structured format derives from the JSON form: YAML is writeJSON's
// document converted (sigs.k8s.io/yaml), field for field.
func writeView(w io.Writer, format string, v view) error {
	switch format {
	case outputJSON:
		return v.writeJSON(w)
	case outputYAML:
		var js bytes.Buffer
		if err := v.writeJSON(&js); err != nil {
			return err
		}
		y, err := yaml.JSONToYAML(js.Bytes())
		if err != nil {
			return err
		}
		_, err = w.Write(y)
		return err
	}
	return v.text(w)
}

// writeJSON writes the JSON form: v.json, or value indented.
func (v view) writeJSON(w io.Writer) error {
	if v.json != nil {
		return v.json(w)
	}
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v.value)
}
