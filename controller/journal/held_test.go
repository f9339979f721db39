package journal

import (
	"strings"
	"testing"
)

func TestFlockHeld(t *testing.T) {
	const locks = `1: POSIX  ADVISORY  WRITE 812 fe:00:42 0 EOF
2: FLOCK  ADVISORY  WRITE 913 fe:00:5309760 0 EOF
2: -> FLOCK  ADVISORY  WRITE 914 fe:00:777 0 EOF
3: FLOCK  ADVISORY  READ 0 103:02:99 0 EOF
`
	tests := []struct {
		major, minor uint32
		ino          uint64
		want         bool
	}{
		{0xfe, 0, 5309760, true},
		{0x103, 2, 99, true},  // a holder in another PID namespace shows pid 0
		{0xfe, 0, 42, false},  // a POSIX lock is not ctguard's flock
		{0xfe, 0, 777, false}, // a waiter does not hold it
		{0xfe, 1, 5309760, false},
		{0xfe, 0, 530976, false},
	}
	for _, tt := range tests {
		got, err := flockHeld(strings.NewReader(locks), tt.major, tt.minor, tt.ino)
		if err != nil || got != tt.want {
			t.Errorf("%x:%x:%d: %t, %v; want %t", tt.major, tt.minor, tt.ino, got, err, tt.want)
		}
	}
}

// TestControllerHeld checks against the kernel's own /proc/locks.
func TestControllerHeld(t *testing.T) {
	s := newStore(t)
	if held, err := s.ControllerHeld(); err != nil || held {
		t.Fatalf("before any holder: %t, %v", held, err)
	}
	release, err := s.HoldController("run")
	if err != nil {
		t.Fatal(err)
	}
	if held, err := s.ControllerHeld(); err != nil || !held {
		t.Fatalf("while held: %t, %v", held, err)
	}
	// The probe takes no lock: the holder's release and a new holder work.
	release()
	if held, err := s.ControllerHeld(); err != nil || held {
		t.Fatalf("after release: %t, %v", held, err)
	}
	release, err = s.HoldController("run")
	if err != nil {
		t.Fatal(err)
	}
	release()
}
