package policy

import (
	"bytes"
	"fmt"

	"sigs.k8s.io/yaml"
)

// Marshal renders policies as YAML documents separated by "---", defaults
// included, in a form Parse reads back to the same policies (Source aside).
func Marshal(policies []Policy) ([]byte, error) {
	var b bytes.Buffer
	for i := range policies {
		out, err := yaml.Marshal(&policies[i])
		if err != nil {
			return nil, fmt.Errorf("policy %q: %w", policies[i].Name(), err)
		}
		if i > 0 {
			b.WriteString("---\n")
		}
		b.Write(out)
	}
	return b.Bytes(), nil
}
