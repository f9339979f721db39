// Command ctguard keeps a Linux NAT box from resetting healthy TCP
// connections when conntrack marks a server segment invalid: see README.md.
package main

import (
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/ctguard/ctguard/policy"
)

// Exit codes: 0 success (plan: no changes; status: in force), 1 error,
// 2 plan has changes, 3 status drifted, 4 status failing.
const (
	exitError   = 1
	exitChanges = 2
	exitDrifted = 3
	exitFailing = 4
)

// exitCodeError ends the process with its code after printing nothing more.
type exitCodeError int

// Error implements error.
func (e exitCodeError) Error() string { return fmt.Sprintf("exit status %d", int(e)) }

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// run executes the command line, writing results to stdout and messages to
// stderr, and returns the process exit code.
func run(args []string, stdout, stderr io.Writer) int {
	root := newRootCommand(stdout, stderr)
	root.SetArgs(args)
	err := root.Execute()
	if err == nil {
		return 0
	}
	var code exitCodeError
	if errors.As(err, &code) {
		return int(code)
	}
	var list policy.ErrorList
	if errors.As(err, &list) {
		for _, e := range list {
			fmt.Fprintln(stderr, e.Error())
		}
		return exitError
	}
	fmt.Fprintln(stderr, "ctguard: "+userMessage(err))
	return exitError
}
