package keyring

import (
	"context"
	"crypto/sha256"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"path"
	"sort"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5"
)

//go:embed migrations/*.sql
var migrationFiles embed.FS

// migrateLockKey is the pg_advisory_xact_lock key that serialises
// migrations of one key store ("pgcloak\x01" as a big-endian int64), so
// two proxies starting together never apply the same migration twice.
const migrateLockKey int64 = 0x7067636c6f616b01

// Schema is the PostgreSQL schema of the key store.
const Schema = "pgcloak"

// Migration is one embedded, numbered schema change.
type Migration struct {
	Version int    // from the file name: 0001_keys.sql → 1
	Name    string // "keys"
	SQL     string
	Sum     [32]byte // SHA-256 of SQL; an applied migration must not change
}

// Migrations returns the embedded migrations in order.
func Migrations() ([]Migration, error) {
	entries, err := fs.ReadDir(migrationFiles, "migrations")
	if err != nil {
		return nil, fmt.Errorf("keyring: migrations: %w", err)
	}
	var ms []Migration
	for _, e := range entries {
		base := e.Name()
		num, name, ok := strings.Cut(strings.TrimSuffix(base, ".sql"), "_")
		v, err := strconv.Atoi(num)
		if !ok || err != nil || v < 1 || len(num) != 4 {
			return nil, fmt.Errorf("keyring: migration file %q: want NNNN_name.sql", base)
		}
		b, err := migrationFiles.ReadFile(path.Join("migrations", base))
		if err != nil {
			return nil, fmt.Errorf("keyring: migration %s: %w", base, err)
		}
		ms = append(ms, Migration{Version: v, Name: name, SQL: string(b), Sum: sha256.Sum256(b)})
	}
	sort.Slice(ms, func(i, j int) bool { return ms[i].Version < ms[j].Version })
	for i, m := range ms {
		if m.Version != i+1 {
			return nil, fmt.Errorf("keyring: migrations are not numbered 1, 2, 3…: found %04d at position %d", m.Version, i+1)
		}
	}
	return ms, nil
}

// Migrate creates or upgrades schema pgcloak. Each pending migration runs
// in its own transaction under pg_advisory_xact_lock(migrateLockKey) and
// is recorded in pgcloak.schema_migrations with its checksum. Migrate is
// idempotent and safe to call from several processes at once. It fails
// with ErrSchemaTooNew when the key store was migrated by a newer pgcloak
// and with ErrMigrationChanged when an applied migration differs from the
// embedded one. It returns the versions it applied.
func (s *Store) Migrate(ctx context.Context) ([]int, error) {
	ms, err := Migrations()
	if err != nil {
		return nil, err
	}
	var applied []int
	for _, m := range ms {
		did, err := s.applyMigration(ctx, m, len(ms))
		if err != nil {
			return applied, err
		}
		if did {
			applied = append(applied, m.Version)
		}
	}
	return applied, nil
}

func (s *Store) applyMigration(ctx context.Context, m Migration, latest int) (bool, error) {
	tx, err := s.pool.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.ReadCommitted})
	if err != nil {
		return false, fmt.Errorf("keyring: migrate: %w", err)
	}
	defer func() { _ = tx.Rollback(context.WithoutCancel(ctx)) }()

	// The schema may have been created by an administrator (docs/keys.md
	// §5); CREATE SCHEMA IF NOT EXISTS would still need CREATE on the
	// database, so look first.
	setup := []string{
		"SELECT pg_advisory_xact_lock($1)",
		`DO $$ BEGIN
			IF to_regnamespace('pgcloak') IS NULL THEN CREATE SCHEMA pgcloak; END IF;
		END $$`,
		`CREATE TABLE IF NOT EXISTS pgcloak.schema_migrations (
			version    integer PRIMARY KEY,
			name       text NOT NULL,
			sha256     bytea NOT NULL,
			applied_at timestamptz NOT NULL DEFAULT now(),
			applied_by text NOT NULL
		)`,
	}
	if _, err := tx.Exec(ctx, setup[0], migrateLockKey); err != nil {
		return false, fmt.Errorf("keyring: migrate: lock: %w", err)
	}
	for _, q := range setup[1:] {
		if _, err := tx.Exec(ctx, q); err != nil {
			return false, fmt.Errorf("keyring: migrate: %w", err)
		}
	}
	var newest int
	if err := tx.QueryRow(ctx, "SELECT coalesce(max(version), 0) FROM pgcloak.schema_migrations").Scan(&newest); err != nil {
		return false, fmt.Errorf("keyring: migrate: %w", err)
	}
	if newest > latest {
		return false, fmt.Errorf("%w: key store at migration %d, this pgcloak knows %d; upgrade pgcloak", ErrSchemaTooNew, newest, latest)
	}
	var sum []byte
	err = tx.QueryRow(ctx, "SELECT sha256 FROM pgcloak.schema_migrations WHERE version = $1", m.Version).Scan(&sum)
	switch {
	case err == nil:
		if string(sum) != string(m.Sum[:]) {
			return false, fmt.Errorf("%w: %04d_%s", ErrMigrationChanged, m.Version, m.Name)
		}
		return false, nil
	case !errors.Is(err, pgx.ErrNoRows):
		return false, fmt.Errorf("keyring: migrate: %w", err)
	}
	// Simple protocol: a migration file holds several statements.
	if _, err := tx.Exec(ctx, m.SQL, pgx.QueryExecModeSimpleProtocol); err != nil {
		return false, fmt.Errorf("keyring: migration %04d_%s: %w", m.Version, m.Name, err)
	}
	if _, err := tx.Exec(ctx,
		"INSERT INTO pgcloak.schema_migrations (version, name, sha256, applied_by) VALUES ($1, $2, $3, $4)",
		m.Version, m.Name, m.Sum[:], s.actor); err != nil {
		return false, fmt.Errorf("keyring: migration %04d_%s: %w", m.Version, m.Name, err)
	}
	if err := tx.Commit(ctx); err != nil {
		return false, fmt.Errorf("keyring: migration %04d_%s: commit: %w", m.Version, m.Name, err)
	}
	return true, nil
}

// SchemaVersion returns the newest applied migration (0 before the first).
func (s *Store) SchemaVersion(ctx context.Context) (int, error) {
	var exists bool
	err := s.pool.QueryRow(ctx, "SELECT to_regclass('pgcloak.schema_migrations') IS NOT NULL").Scan(&exists)
	if err != nil || !exists {
		return 0, wrapIf("keyring: schema version", err)
	}
	var v int
	err = s.pool.QueryRow(ctx, "SELECT coalesce(max(version), 0) FROM pgcloak.schema_migrations").Scan(&v)
	return v, wrapIf("keyring: schema version", err)
}
