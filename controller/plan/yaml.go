package plan

import (
	"bytes"
	"io"

	"sigs.k8s.io/yaml"
)

// WriteYAML renders the plan as one YAML document: WriteJSON's object,
// field for field (the same names and values, keys sorted), as kubectl's
// -o yaml renders what -o json shows.
func WriteYAML(w io.Writer, p Plan) error {
	var js bytes.Buffer
	if err := WriteJSON(&js, p); err != nil {
		return err
	}
	return jsonToYAML(w, js.Bytes())
}

// jsonToYAML writes the JSON document js as YAML (sigs.k8s.io/yaml: the
// Kubernetes conversion, which keeps every field and value).
func jsonToYAML(w io.Writer, js []byte) error {
	y, err := yaml.JSONToYAML(js)
	if err != nil {
		return err
	}
	_, err = w.Write(y)
	return err
}
