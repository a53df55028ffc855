package keyring

import (
	"context"
	"testing"
	"time"
)

func TestParseNotification(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want Notification
		ok   bool
	}{
		{"confidential:3:active", Notification{"confidential", 3, StateActive}, true},
		{"confidential:search:12:pending_deletion", Notification{"confidential:search", 12, StatePendingDeletion}, true},
		{"a:1:deleted", Notification{"a", 1, StateDeleted}, true},
		{"confidential:0:active", Notification{}, false},
		{"confidential:x:active", Notification{}, false},
		{"confidential:3:bogus", Notification{}, false},
		{":3:active", Notification{}, false},
		{"3:active", Notification{}, false},
		{"", Notification{}, false},
		{"BAD NAME:1:active", Notification{}, false},
	} {
		got, err := ParseNotification(tc.in)
		if (err == nil) != tc.ok || got != tc.want {
			t.Errorf("ParseNotification(%q) = %+v, %v", tc.in, got, err)
		}
		if tc.ok && got.String() != tc.in {
			t.Errorf("String() = %q, want %q", got.String(), tc.in)
		}
	}
}

func TestNotifyOnStateChange(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	listener := e.conn()
	if _, err := listener.Exec(e.ctx, "LISTEN "+NotifyChannel); err != nil {
		t.Fatal(err)
	}
	next := func() Notification {
		t.Helper()
		ctx, cancel := context.WithTimeout(e.ctx, 5*time.Second)
		defer cancel()
		n, err := listener.WaitForNotification(ctx)
		if err != nil {
			t.Fatalf("no notification: %v", err)
		}
		p, err := ParseNotification(n.Payload)
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	e.ring("confidential:search")
	if got := next(); got != (Notification{"confidential:search", 1, StateActive}) {
		t.Fatalf("after create: %+v", got)
	}
	e.must(e.store.Rotate(e.ctx, "confidential:search", "r"))
	// Both changes of the rotation arrive, in order, at commit.
	if got := next(); got != (Notification{"confidential:search", 1, StateDecryptOnly}) {
		t.Fatalf("rotate, first: %+v", got)
	}
	if got := next(); got != (Notification{"confidential:search", 2, StateActive}) {
		t.Fatalf("rotate, second: %+v", got)
	}
	e.must(e.store.SetState(e.ctx, "confidential:search", 1, StateDisabled, "leak"))
	if got := next(); got != (Notification{"confidential:search", 1, StateDisabled}) {
		t.Fatalf("disable: %+v", got)
	}
	// A direct SQL change is announced too.
	e.exec("UPDATE pgcloak.key_versions SET state = 'retired', state_changed_by = 'dba' WHERE version = 1 AND keyring_id = (SELECT id FROM pgcloak.keyrings WHERE name = 'confidential:search')")
	if got := next(); got != (Notification{"confidential:search", 1, StateRetired}) {
		t.Fatalf("SQL change: %+v", got)
	}
	// A rolled-back change announces nothing.
	tx, err := e.pool.Begin(e.ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(e.ctx, "UPDATE pgcloak.key_versions SET state = 'decrypt_only', state_changed_by = 'dba' WHERE version = 1 AND keyring_id = (SELECT id FROM pgcloak.keyrings WHERE name = 'confidential:search')"); err != nil {
		t.Fatal(err)
	}
	if err := tx.Rollback(e.ctx); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(e.ctx, 300*time.Millisecond)
	defer cancel()
	if n, err := listener.WaitForNotification(ctx); err == nil {
		t.Fatalf("notification for a rolled-back change: %q", n.Payload)
	}
}
