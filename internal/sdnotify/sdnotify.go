// Package sdnotify speaks systemd's service notification protocol
// (sd_notify(3)): one datagram of newline-separated KEY=VALUE assignments
// to the unix socket $NOTIFY_SOCKET names. It tells systemd when the
// service is ready (Type=notify), feeds its watchdog (WatchdogSec=), and
// says what the service is doing (STATUS=).
package sdnotify

import (
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"time"
)

// Notifier sends notifications to one socket. A nil Notifier (no
// $NOTIFY_SOCKET: not run by systemd, or not Type=notify) sends nothing.
type Notifier struct {
	addr     *net.UnixAddr
	watchdog time.Duration
}

// FromEnv returns the Notifier $NOTIFY_SOCKET names, with the watchdog
// interval of $WATCHDOG_USEC when $WATCHDOG_PID is unset or this process's
// pid; nil when $NOTIFY_SOCKET is unset. A socket that is neither a path
// nor an abstract name ("@name") is an error.
func FromEnv() (*Notifier, error) {
	path := os.Getenv("NOTIFY_SOCKET")
	if path == "" {
		return nil, nil
	}
	if (path[0] != '/' && path[0] != '@') || len(path) > 107 {
		return nil, fmt.Errorf("NOTIFY_SOCKET=%q: not a unix socket path or abstract name", path)
	}
	n := &Notifier{addr: &net.UnixAddr{Name: path, Net: "unixgram"}}
	if pid := os.Getenv("WATCHDOG_PID"); pid != "" && pid != strconv.Itoa(os.Getpid()) {
		return n, nil // the watchdog is another process's
	}
	if us := os.Getenv("WATCHDOG_USEC"); us != "" {
		v, err := strconv.ParseUint(us, 10, 63)
		if err != nil || v == 0 {
			return nil, fmt.Errorf("WATCHDOG_USEC=%q: not a positive number of microseconds", us)
		}
		n.watchdog = time.Duration(v) * time.Microsecond
	}
	return n, nil
}

// Notification assignments ctguard sends.
const (
	// Ready: start-up finished (Type=notify units become active).
	Ready = "READY=1"
	// Stopping: the service is shutting down.
	Stopping = "STOPPING=1"
	// Watchdog: the service is alive and well (WatchdogSec=).
	Watchdog = "WATCHDOG=1"
)

// Status is the STATUS= assignment: a line "systemctl status" shows.
func Status(s string) string {
	return "STATUS=" + strings.ReplaceAll(s, "\n", " ")
}

// Send sends the assignments in one datagram. A nil Notifier does nothing.
func (n *Notifier) Send(assignments ...string) error {
	if n == nil || len(assignments) == 0 {
		return nil
	}
	c, err := net.DialUnix("unixgram", nil, n.addr)
	if err != nil {
		return fmt.Errorf("sd_notify: %w", err)
	}
	defer c.Close()
	if _, err := c.Write([]byte(strings.Join(assignments, "\n"))); err != nil {
		return fmt.Errorf("sd_notify: %w", err)
	}
	return nil
}

// WatchdogInterval is how often systemd wants Watchdog sent; 0 when no
// watchdog is set for this process. Send it about twice as often.
func (n *Notifier) WatchdogInterval() time.Duration {
	if n == nil {
		return 0
	}
	return n.watchdog
}
