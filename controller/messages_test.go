package controller

import (
	"context"
	"errors"
	"os"
	"strings"
	"testing"

	"github.com/ctguard/ctguard/controller/journal"
)

// TestDamagedJournalLeavesStatusWorking is part of finding 8 of issue 13:
// an empty or truncated journal.json broke every command, status included,
// with "unexpected end of JSON input" and no hint.
func TestDamagedJournalLeavesStatusWorking(t *testing.T) {
	for name, content := range map[string]string{"empty": "", "truncated": `{"version": 1, "revisions": [{"num`} {
		t.Run(name, func(t *testing.T) {
			f := newFixture(t)
			ctx := context.Background()
			if _, err := f.c.Apply(ctx, mustParse(t, dropDoc)); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(f.store.Path(), []byte(content), 0o600); err != nil {
				t.Fatal(err)
			}
			st, err := f.c.Status(ctx)
			if err != nil {
				t.Fatalf("status with a damaged journal: %v", err)
			}
			if !strings.Contains(st.JournalError, "mv journal.json") {
				t.Errorf("status does not say the way out: %q", st.JournalError)
			}
			if _, err := f.c.Apply(ctx, mustParse(t, dropDoc)); !errors.Is(err, journal.ErrDamaged) {
				t.Errorf("apply over a damaged journal: %v, want ErrDamaged", err)
			}
		})
	}
}
