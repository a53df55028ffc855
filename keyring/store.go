package keyring

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"os"
	"os/user"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/pgcloak/pgcloak/hsm"
	"github.com/pgcloak/pgcloak/keycache"
	"github.com/pgcloak/pgcloak/keyring/audit"
)

// StoreOpts configures a Store.
type StoreOpts struct {
	// Pool is the key-store connection pool. The Store does not close it.
	// Either Pool or DSN is required.
	Pool *pgxpool.Pool
	// DSN opens a pool owned by the Store (closed by Close). The password
	// comes from PGPASSWORD / PGPASSFILE, never from the DSN in config.
	DSN string
	// KEKs maps KEK names (config [kek.NAME]) to providers. Operations
	// that wrap or unwrap need the KEK they name; state changes need none.
	KEKs map[string]hsm.KEK
	// Actor is recorded as who did every change and audit entry (CLI
	// --actor). Default: DefaultActor().
	Actor string
	// Rand is the source of DEK bytes. Default crypto/rand.Reader.
	Rand io.Reader
	// AuditKeyring names the audit-purpose key ring whose active version
	// MACs checkpoints. Default "audit".
	AuditKeyring string
	// CheckpointEvery writes a checkpoint after a commit once this many
	// entries follow the last one. Default 100; negative: only on demand
	// (Checkpoint). Needs the audit key ring and its KEK; when either is
	// missing the automatic checkpoint is skipped and OnError told.
	CheckpointEvery int64
	// AuditSink, when set, receives every entry this Store appends, as
	// JSON lines, after the transaction commits.
	AuditSink io.Writer
	// DenialAuditInterval rate-limits access-denial entries per key
	// version (LoadDEK of a disabled, retired or deleted version).
	// Default one minute.
	DenialAuditInterval time.Duration
	// OnError is told about failures that do not fail the operation that
	// caused them: sink writes, automatic checkpoints, denial audits.
	// Default: ignore. Messages never contain key material.
	OnError func(error)
}

// Store is the key store: key rings, key versions, their lifecycle, the
// wrapped DEKs and the audit log, in schema pgcloak. It is safe for
// concurrent use. Every method that changes something runs one
// transaction that also appends the audit entries describing the change.
type Store struct {
	pool     *pgxpool.Pool
	ownsPool bool
	keks     map[string]hsm.KEK
	actor    string
	rand     io.Reader

	auditRing       string
	checkpointEvery int64
	sink            *audit.JSONSink
	onError         func(error)

	counters counters
	// cpRetryAt: after a failed automatic checkpoint, the next attempt
	// waits until the chain reaches this seq (one attempt per
	// CheckpointEvery entries, not one per commit).
	cpRetryAt atomic.Int64

	denialEvery time.Duration
	denialMu    sync.Mutex
	denials     map[denialKey]time.Time
}

var _ keycache.Loader = (*Store)(nil)

// New validates opts and returns a Store. With opts.DSN it opens a pool
// (no round trip until first use). It does not touch the schema: call
// Migrate.
func New(ctx context.Context, opts StoreOpts) (*Store, error) {
	s := &Store{
		pool:            opts.Pool,
		keks:            make(map[string]hsm.KEK, len(opts.KEKs)),
		actor:           opts.Actor,
		rand:            opts.Rand,
		auditRing:       opts.AuditKeyring,
		checkpointEvery: opts.CheckpointEvery,
		onError:         opts.OnError,
		denialEvery:     opts.DenialAuditInterval,
		denials:         map[denialKey]time.Time{},
	}
	for name, k := range opts.KEKs {
		if name == "" || k == nil {
			return nil, errors.New("keyring: KEKs: empty name or nil KEK")
		}
		s.keks[name] = k
	}
	if s.actor == "" {
		s.actor = DefaultActor()
	}
	if s.rand == nil {
		s.rand = rand.Reader
	}
	if s.auditRing == "" {
		s.auditRing = DefaultAuditKeyring
	}
	if s.checkpointEvery == 0 {
		s.checkpointEvery = 100
	}
	if s.denialEvery <= 0 {
		s.denialEvery = time.Minute
	}
	if s.onError == nil {
		s.onError = func(error) {}
	}
	if opts.AuditSink != nil {
		s.sink = audit.NewJSONSink(opts.AuditSink)
	}
	switch {
	case opts.Pool != nil && opts.DSN != "":
		return nil, errors.New("keyring: set Pool or DSN, not both")
	case opts.Pool == nil && opts.DSN == "":
		return nil, errors.New("keyring: Pool or DSN is required")
	case opts.Pool == nil:
		cfg, err := pgxpool.ParseConfig(opts.DSN)
		if err != nil {
			return nil, fmt.Errorf("keyring: key store DSN: %w", err)
		}
		pool, err := pgxpool.NewWithConfig(ctx, cfg)
		if err != nil {
			return nil, fmt.Errorf("keyring: key store: %w", err)
		}
		s.pool, s.ownsPool = pool, true
	}
	return s, nil
}

// DefaultAuditKeyring is the default name of the audit-purpose key ring.
const DefaultAuditKeyring = "audit"

// DefaultActor returns "OSUSER@HOST" for attribution when no actor is
// given.
func DefaultActor() string {
	name := "unknown"
	if u, err := user.Current(); err == nil && u.Username != "" {
		name = u.Username
	}
	host, err := os.Hostname()
	if err != nil || host == "" {
		host = "unknown-host"
	}
	return name + "@" + host
}

// Close closes the pool if the Store opened it. It does not flush
// encryption counters: call Flush first.
func (s *Store) Close() {
	if s.ownsPool {
		s.pool.Close()
	}
}

// Pool returns the key-store pool (for LISTEN connections and tests).
func (s *Store) Pool() *pgxpool.Pool { return s.pool }

// Actor returns the name changes are attributed to.
func (s *Store) Actor() string { return s.actor }

// txn is one key-store transaction and the audit entries it appended.
type txn struct {
	pgx.Tx
	s       *Store
	entries []audit.Entry
	pending int64 // entries after the last checkpoint, as of the last append
}

// audit appends an entry to the chain inside the transaction.
func (t *txn) audit(ctx context.Context, event, ring string, version uint32, details map[string]string) error {
	e, since, err := audit.Append(ctx, t.Tx, audit.Record{
		Actor: t.s.actor, Event: event, Keyring: ring, Version: version, Details: details,
	})
	if err != nil {
		return err
	}
	t.entries = append(t.entries, e)
	t.pending = since
	return nil
}

// inTx runs fn in a READ COMMITTED transaction (row locks then see the
// latest committed rows), commits, then hands the appended entries to the
// sink and writes a checkpoint when one is due.
func (s *Store) inTx(ctx context.Context, fn func(t *txn) error) error {
	tx, err := s.pool.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.ReadCommitted, AccessMode: pgx.ReadWrite})
	if err != nil {
		return err
	}
	defer func() { _ = tx.Rollback(context.WithoutCancel(ctx)) }()
	t := &txn{Tx: tx, s: s}
	if err := fn(t); err != nil {
		return mapDBError(err)
	}
	if err := tx.Commit(ctx); err != nil {
		return mapDBError(err)
	}
	s.afterCommit(ctx, t.entries, t.pending)
	return nil
}

func (s *Store) afterCommit(ctx context.Context, entries []audit.Entry, pending int64) {
	if len(entries) == 0 {
		return
	}
	if s.sink != nil {
		for _, e := range entries {
			if err := s.sink.Write(e); err != nil {
				s.onError(err)
			}
		}
	}
	last := entries[len(entries)-1].Seq
	if s.checkpointEvery > 0 && pending >= s.checkpointEvery && last >= s.cpRetryAt.Load() {
		if _, err := s.Checkpoint(ctx); err != nil {
			s.cpRetryAt.Store(last + s.checkpointEvery)
			s.onError(fmt.Errorf("keyring: automatic audit checkpoint: %w", err))
		}
	}
}

// lockRing locks the key ring's row (FOR UPDATE) until the transaction
// ends. Every change to a ring's versions holds it, so they serialise.
func (t *txn) lockRing(ctx context.Context, name string) (Keyring, error) {
	rows, err := t.Query(ctx, "SELECT "+keyringColumns+" FROM pgcloak.keyrings WHERE name = $1 FOR UPDATE", name)
	if err != nil {
		return Keyring{}, err
	}
	rings, err := collectKeyrings(rows)
	if err != nil {
		return Keyring{}, err
	}
	if len(rings) == 0 {
		return Keyring{}, fmt.Errorf("%w: key ring %q", ErrNotFound, name)
	}
	return rings[0], nil
}

func wrapIf(prefix string, err error) error {
	if err == nil {
		return nil
	}
	return fmt.Errorf("%s: %w", prefix, err)
}
