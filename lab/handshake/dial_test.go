package handshake

import (
	"net"
	"os"
	"syscall"
	"testing"
	"time"
)

// TestDialFailed: a connect that fails with a reset after the handshake
// completed counts as a reset, not as never connected.
func TestDialFailed(t *testing.T) {
	for _, tc := range []struct {
		errno syscall.Errno
		want  resultKind
	}{
		{syscall.EPIPE, resultRST},
		{syscall.ECONNRESET, resultRST},
		{syscall.ECONNREFUSED, resultConnectFailed},
		{syscall.ETIMEDOUT, resultConnectFailed},
	} {
		err := &net.OpError{Op: "dial", Net: "tcp", Err: os.NewSyscallError("connect", tc.errno)}
		if got := dialFailed(err, time.Millisecond); got.kind != tc.want || got.err == nil {
			t.Errorf("%v: kind %v (err %v), want %v", tc.errno, got.kind, got.err, tc.want)
		}
	}
}
