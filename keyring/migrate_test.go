package keyring

import (
	"errors"
	"slices"
	"sync"
	"testing"
)

func TestMigrationsEmbedded(t *testing.T) {
	ms, err := Migrations()
	if err != nil {
		t.Fatal(err)
	}
	if len(ms) < 3 {
		t.Fatalf("%d migrations", len(ms))
	}
	for i, m := range ms {
		if m.Version != i+1 || m.Name == "" || m.SQL == "" {
			t.Errorf("migration %d = %d %q", i, m.Version, m.Name)
		}
	}
}

func TestMigrateIdempotentAndConcurrent(t *testing.T) {
	t.Parallel()
	e := newEnv(t) // migrated once already
	ms, _ := Migrations()

	// Again: nothing to do, nothing lost.
	e.ring("confidential")
	applied, err := e.store.Migrate(e.ctx)
	if err != nil || len(applied) != 0 {
		t.Fatalf("second Migrate = %v, %v", applied, err)
	}
	if v, err := e.store.SchemaVersion(e.ctx); err != nil || v != len(ms) {
		t.Fatalf("SchemaVersion = %d, %v; want %d", v, err, len(ms))
	}
	if _, err := e.store.ActiveVersion(e.ctx, "confidential"); err != nil {
		t.Fatalf("data lost by a second Migrate: %v", err)
	}

	// A fresh database migrated by four processes at once: every migration
	// applied exactly once.
	e2 := newEnvUnmigrated(t)
	stores := e2.separateStores(4)
	var wg sync.WaitGroup
	results := make([][]int, len(stores))
	errs := make([]error, len(stores))
	for i, s := range stores {
		wg.Add(1)
		go func() {
			defer wg.Done()
			results[i], errs[i] = s.Migrate(e2.ctx)
		}()
	}
	wg.Wait()
	var all []int
	for i := range stores {
		if errs[i] != nil {
			t.Fatalf("concurrent Migrate %d: %v", i, errs[i])
		}
		all = append(all, results[i]...)
	}
	slices.Sort(all)
	want := make([]int, len(ms))
	for i := range want {
		want[i] = i + 1
	}
	if !slices.Equal(all, want) {
		t.Fatalf("migrations applied across 4 processes: %v, want each of %v once", all, want)
	}
	var rows int
	if err := e2.pool.QueryRow(e2.ctx, "SELECT count(*) FROM pgcloak.schema_migrations").Scan(&rows); err != nil || rows != len(ms) {
		t.Fatalf("schema_migrations has %d rows, %v", rows, err)
	}

	// A key store migrated by a newer pgcloak, or with an edited migration,
	// is refused.
	e2.exec("INSERT INTO pgcloak.schema_migrations (version, name, sha256, applied_by) VALUES (999, 'future', '\\x00', 'x')")
	if _, err := e2.store.Migrate(e2.ctx); !errors.Is(err, ErrSchemaTooNew) {
		t.Fatalf("Migrate on a newer schema = %v", err)
	}
	e2.exec("DELETE FROM pgcloak.schema_migrations WHERE version = 999")
	e2.exec("UPDATE pgcloak.schema_migrations SET sha256 = '\\x00' WHERE version = 2")
	if _, err := e2.store.Migrate(e2.ctx); !errors.Is(err, ErrMigrationChanged) {
		t.Fatalf("Migrate with a changed migration = %v", err)
	}
}

// newEnvUnmigrated is newEnv without Migrate.
func newEnvUnmigrated(t *testing.T) *env {
	t.Helper()
	e := newEnv(t)
	// Drop what newEnv made, to start from an empty database.
	e.exec("DROP SCHEMA pgcloak CASCADE")
	if v, err := e.store.SchemaVersion(e.ctx); err != nil || v != 0 {
		t.Fatalf("SchemaVersion on an empty database = %d, %v", v, err)
	}
	return e
}
