package journal

import (
	"fmt"
	"os"
	"strconv"
	"strings"
)

// CurrentNetNS returns the identity of the process's network namespace,
// e.g. "net:[4026531840]".
func CurrentNetNS() (string, error) {
	return readNetNS("/proc/self/ns/net")
}

// NetNSOfFd returns the identity of the network namespace open as fd, or of
// the process's namespace when fd < 0.
func NetNSOfFd(fd int) (string, error) {
	if fd < 0 {
		return CurrentNetNS()
	}
	return readNetNS("/proc/self/fd/" + strconv.Itoa(fd))
}

// readNetNS reads the nsfs link at path and checks that it names a network
// namespace.
func readNetNS(path string) (string, error) {
	id, err := os.Readlink(path)
	if err != nil {
		return "", fmt.Errorf("network namespace identity: %w", err)
	}
	if !strings.HasPrefix(id, "net:[") {
		return "", fmt.Errorf("network namespace identity: %s is %q, not a network namespace", path, id)
	}
	return id, nil
}
