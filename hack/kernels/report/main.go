// Command report turns the results hack/kernels/matrix collected (one
// directory per kernel: the kernel tests' verbose output and "ctguard lab -o
// json") into the matrix table, judges them and exits 1 on any failure.
//
// Usage: go run ./hack/kernels/report DIR
package main

import (
	"fmt"
	"os"
)

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: report DIR")
		os.Exit(2)
	}
	m, err := load(os.Args[1])
	if err != nil {
		fmt.Fprintln(os.Stderr, "report:", err)
		os.Exit(2)
	}
	if err := m.write(os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "report:", err)
		os.Exit(2)
	}
	if !m.ok() {
		os.Exit(1)
	}
}
