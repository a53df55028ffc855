package reencrypt

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/rs/zerolog"

	"github.com/pgcloak/pgcloak/catalog"
	"github.com/pgcloak/pgcloak/crypto/envelope"
	"github.com/pgcloak/pgcloak/keycache"
	"github.com/pgcloak/pgcloak/keyring"
)

// Defaults for the zero fields of Opts.
const (
	// DefaultBatchSize rows per transaction: short row locks, few round
	// trips.
	DefaultBatchSize = 500
	// DefaultRate in rows per second: one re-encrypted row costs about as
	// much as a single-row UPDATE of the application, so 500/s is a small
	// share of what a PostgreSQL server sustains; measure with your
	// workload and raise it for maintenance windows.
	DefaultRate = 500
	// DefaultBackoffFactor: a batch taking more than this many times the
	// moving baseline makes the run pause.
	DefaultBackoffFactor = 3
	// DefaultMaxBackoff bounds one pause.
	DefaultMaxBackoff = 10 * time.Second
	// DefaultStaleAfter: a running job whose heartbeat is older may be
	// claimed by another run.
	DefaultStaleAfter = time.Minute
	// DefaultMaxPasses bounds the passes over one table in one run.
	DefaultMaxPasses = 5
	// MaxBatchSize bounds Opts.BatchSize.
	MaxBatchSize = 10000
)

// Timings that are not options.
const (
	keyTTL        = 5 * time.Minute // how long a loaded key is used before it is loaded again
	flushEvery    = 5 * time.Second // encryption counters
	finalTimeout  = 15 * time.Second
	idleRetry     = time.Second // between passes that made no progress
	maxIdlePasses = 3
	maxRestarts   = 5 // rotations during one column's run
	maxReported   = 100
)

var (
	// ErrInterrupted: the context ended; the jobs in progress are paused
	// and a later run resumes them.
	ErrInterrupted = errors.New("reencrypt: interrupted")
)

// Opts configures an Engine.
type Opts struct {
	// Store is the key store: keys, job records, audit. Required. Its KEKs
	// must include those of the key rings involved.
	Store *keyring.Store
	// DB is a session on the application database, used by one Run at a
	// time. Run sets DateStyle, IntervalStyle and extra_float_digits on it
	// so that primary-key values round-trip exactly as text. Required.
	DB *pgx.Conn
	// Columns are the encrypted columns to process, in this order.
	Columns []catalog.Column
	// BatchSize is the number of rows per transaction. Zero:
	// DefaultBatchSize; at most MaxBatchSize.
	BatchSize int
	// Rate caps rows per second. Zero: DefaultRate; negative: no cap.
	Rate float64
	// BackoffFactor and MaxBackoff: see the package documentation. Zero:
	// the defaults.
	BackoffFactor float64
	MaxBackoff    time.Duration
	// StaleAfter: see DefaultStaleAfter. Heartbeat is how often a running
	// job's heartbeat is refreshed; zero: StaleAfter / 6.
	StaleAfter time.Duration
	Heartbeat  time.Duration
	// Owner identifies this run in job records. Default host:pid.
	Owner string
	// Force takes over jobs held by a run whose heartbeat is fresh
	// (audited as reencrypt.force).
	Force bool
	// Compromise restricts the run to one version of one ring and allows
	// it to be disabled (the compromise procedure); it also takes over
	// live jobs of the affected columns.
	Compromise *Compromise
	// SettleUntil: a column is not declared done before this time; the
	// run waits and looks again for rows written with an old version by
	// proxies that had not yet seen a rotation (the compromise procedure
	// passes the disable time plus the proxies' active-version TTL).
	SettleUntil time.Time
	// MaxPasses bounds the passes over one table. Zero: DefaultMaxPasses.
	MaxPasses int
	// Progress, when set, is called after every batch and at the end of
	// every column, from Run's goroutine.
	Progress func(Progress)
	// Log receives one line per row left unchanged (named by primary key,
	// never by value), per job start and end, and warnings.
	Log zerolog.Logger
}

// Engine re-encrypts; see the package documentation.
type Engine struct {
	o         Opts
	heartbeat time.Duration
	keys      *keycache.Cache[*envelope.Key]
	now       func() time.Time
	sleep     func(ctx context.Context, d time.Duration) error
}

// New validates opts and returns an Engine.
func New(opts Opts) (*Engine, error) {
	switch {
	case opts.Store == nil:
		return nil, errors.New("reencrypt: Store is required")
	case opts.DB == nil:
		return nil, errors.New("reencrypt: DB is required")
	case opts.BatchSize < 0 || opts.BatchSize > MaxBatchSize:
		return nil, fmt.Errorf("reencrypt: BatchSize must be 1 to %d, got %d", MaxBatchSize, opts.BatchSize)
	case opts.BackoffFactor < 0 || (opts.BackoffFactor > 0 && opts.BackoffFactor < 1):
		return nil, fmt.Errorf("reencrypt: BackoffFactor must be at least 1, got %v", opts.BackoffFactor)
	case opts.MaxBackoff < 0 || opts.StaleAfter < 0 || opts.Heartbeat < 0 || opts.MaxPasses < 0:
		return nil, errors.New("reencrypt: durations and MaxPasses must not be negative")
	case opts.Compromise != nil && (opts.Compromise.Keyring == "" || opts.Compromise.Version == 0):
		return nil, errors.New("reencrypt: Compromise needs a key ring and a version")
	}
	if opts.BatchSize == 0 {
		opts.BatchSize = DefaultBatchSize
	}
	if opts.Rate == 0 {
		opts.Rate = DefaultRate
	}
	if opts.BackoffFactor == 0 {
		opts.BackoffFactor = DefaultBackoffFactor
	}
	if opts.MaxBackoff == 0 {
		opts.MaxBackoff = DefaultMaxBackoff
	}
	if opts.StaleAfter == 0 {
		opts.StaleAfter = DefaultStaleAfter
	}
	if opts.MaxPasses == 0 {
		opts.MaxPasses = DefaultMaxPasses
	}
	if opts.Owner == "" {
		host, err := os.Hostname()
		if err != nil || host == "" {
			host = "unknown-host"
		}
		opts.Owner = fmt.Sprintf("%s:%d", host, os.Getpid())
	}
	if opts.Progress == nil {
		opts.Progress = func(Progress) {}
	}
	hb := opts.Heartbeat
	if hb == 0 {
		hb = opts.StaleAfter / 6
	}
	return &Engine{o: opts, heartbeat: hb, now: time.Now, sleep: sleepCtx}, nil
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Outcome is how a column's run ended. The zero value is invalid.
type Outcome int

const (
	// OutcomeDone: no row references a version the run re-encrypts.
	OutcomeDone Outcome = 1
	// OutcomeNothing: no row needed re-encryption; no job was created.
	OutcomeNothing Outcome = 2
	// OutcomeSkipped: the column is not in this database, or not bytea.
	OutcomeSkipped Outcome = 3
	// OutcomeRefused: no primary key, key ring missing, or the job is held
	// by another live run.
	OutcomeRefused Outcome = 4
	// OutcomeFailed: rows were left that could not be re-encrypted.
	OutcomeFailed Outcome = 5
	// OutcomePaused: interrupted or stopped by a runtime error; resumable.
	OutcomePaused Outcome = 6
	// OutcomeLost: another run took the job over (or cancelled it).
	OutcomeLost Outcome = 7
	// OutcomeNotRun: the run stopped before reaching the column.
	OutcomeNotRun Outcome = 8
)

// String names the outcome.
func (o Outcome) String() string {
	switch o {
	case OutcomeDone:
		return "done"
	case OutcomeNothing:
		return "nothing to do"
	case OutcomeSkipped:
		return "skipped"
	case OutcomeRefused:
		return "refused"
	case OutcomeFailed:
		return "failed"
	case OutcomePaused:
		return "paused"
	case OutcomeLost:
		return "lost"
	case OutcomeNotRun:
		return "not run"
	}
	return "(invalid outcome)"
}

// MarshalText encodes the outcome as its String.
func (o Outcome) MarshalText() ([]byte, error) { return []byte(o.String()), nil }

// UnmarshalText decodes what MarshalText wrote.
func (o *Outcome) UnmarshalText(b []byte) error {
	for x := OutcomeDone; x <= OutcomeNotRun; x++ {
		if x.String() == string(b) {
			*o = x
			return nil
		}
	}
	return fmt.Errorf("reencrypt: unknown outcome %q", b)
}

// RowFailure is a row left unchanged because its value could not be
// decrypted (XX001 semantics) or its key version could not be loaded.
type RowFailure struct {
	PK        []string `json:"pk"` // primary-key values as text, in key order
	KeyringID uint32   `json:"keyring_id"`
	Version   uint32   `json:"version"`
	Reason    string   `json:"reason"` // never a value
}

// ColumnResult is what a run did to one column.
type ColumnResult struct {
	Plan        ColumnPlan
	Outcome     Outcome
	Message     string      // why, for every outcome but done and nothing to do
	Job         keyring.Job // the last job record (zero when none)
	Resumed     bool        // the first job was resumed from a previous run
	Passes      int
	Reencrypted int64 // rows re-encrypted by this run
	Skipped     int64 // compare-and-swap lost (changed concurrently) in this run
	// Failures are the first rows left unchanged (at most 100); Failed
	// counts them all (each row once).
	Failures []RowFailure
	Failed   int64
}

// Report is what a run did, column by column.
type Report struct {
	Columns []ColumnResult
}

// Progress is a snapshot of one column's job, for progress displays.
type Progress struct {
	Column      string // schema.table.column
	Keyring     string
	FromVersion uint32 // 0: every older version
	ToVersion   uint32
	Job         int64
	Pass        int
	Done        int64 // rows re-encrypted by the job, over all its runs
	Skipped     int64
	Failed      int64         // rows left unchanged by this run
	Total       int64         // estimate of Done + rows left; -1 unknown
	Rate        float64       // rows per second re-encrypted by this run
	Elapsed     time.Duration // since this run started the column
	Pause       time.Duration // back-off before the next batch
	Final       bool          // the column's last report
	Outcome     Outcome       // when Final
}

// ETA estimates the time left from Rate; 0 when unknown.
func (p Progress) ETA() time.Duration {
	left := p.Total - p.Done
	if p.Rate <= 0 || left <= 0 {
		return 0
	}
	return time.Duration(float64(left) / p.Rate * float64(time.Second))
}

// sessionSQL makes text forms of primary-key values canonical for the
// session, whatever the role's defaults.
const sessionSQL = `SET DateStyle = 'ISO, MDY'; SET IntervalStyle = 'postgres'; SET extra_float_digits = 3`

// Run processes every column of Opts.Columns in order and reports what it
// did. It returns an error, with the report so far, when it stopped before
// the end: ErrInterrupted (with the context's cause) when ctx ended, the
// jobs in progress then being paused; or a runtime error (key store, KEK or
// database unreachable), the job in progress paused with the error
// recorded. Columns that were refused or that failed do not stop the run:
// the report says which.
func (e *Engine) Run(ctx context.Context) (*Report, error) {
	rep := &Report{}
	if _, err := e.o.DB.Exec(ctx, sessionSQL, pgx.QueryExecModeSimpleProtocol); err != nil {
		return rep, e.stopErr(ctx, fmt.Errorf("reencrypt: prepare the session: %w", err))
	}
	cache, err := keycache.New(keycache.Opts[*envelope.Key]{
		Loader: e.o.Store.Loader(keyring.LoaderOpts{
			Purpose:       keyring.PurposeEncryption,
			AllowDisabled: e.o.Compromise != nil,
		}),
		Prepare:    envelope.NewKey,
		MaxEntries: 64,
		TTL:        keyTTL,
	})
	if err != nil {
		return rep, fmt.Errorf("reencrypt: %w", err)
	}
	e.keys = cache
	defer func() { _ = cache.Close() }()
	defer e.flush(ctx)

	plans, err := resolvePlans(ctx, e.o.DB, e.o.Columns)
	if err != nil {
		return rep, e.stopErr(ctx, err)
	}
	for i, p := range plans {
		res, err := e.runColumn(ctx, p)
		rep.Columns = append(rep.Columns, res)
		if err != nil {
			for _, rest := range plans[i+1:] {
				rep.Columns = append(rep.Columns, ColumnResult{Plan: rest, Outcome: OutcomeNotRun})
			}
			return rep, e.stopErr(ctx, err)
		}
	}
	return rep, nil
}

// stopErr is err, or ErrInterrupted when ctx has ended.
func (e *Engine) stopErr(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return fmt.Errorf("%w: %w", ErrInterrupted, context.Cause(ctx))
	}
	return err
}

// flush writes the encryption counters (values sealed under the active
// versions), also after ctx ended.
func (e *Engine) flush(ctx context.Context) {
	fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), finalTimeout)
	defer cancel()
	if err := e.o.Store.Flush(fctx); err != nil {
		e.o.Log.Warn().Err(err).Msg("encryption counters not flushed")
	}
}

// runColumn plans one column right before processing it (fresh counts and
// key states) and runs its job; it plans again when the key ring rotates
// during the run.
func (e *Engine) runColumn(ctx context.Context, base ColumnPlan) (ColumnResult, error) {
	res := ColumnResult{Plan: base}
	if base.Skip != "" {
		res.Outcome, res.Message = OutcomeSkipped, base.Skip
		e.final(res)
		return res, nil
	}
	cr := &columnRun{e: e, res: &res, failedRows: map[string]bool{}}
	for restart := 0; ; restart++ {
		st, err := readKeyState(ctx, e.o.Store)
		if err != nil {
			return res, err
		}
		plan := ColumnPlan{Column: base.Column, entry: base.entry}
		if err := planColumn(ctx, e.o.DB, st, &plan, e.o.Compromise); err != nil {
			return res, err
		}
		res.Plan = plan
		if plan.Refusal != "" {
			res.Outcome, res.Message = OutcomeRefused, plan.Refusal
			e.final(res)
			return res, nil
		}
		superseded, err := cr.run(ctx, &plan)
		if err != nil || !superseded {
			e.final(res)
			return res, err
		}
		if restart >= maxRestarts {
			res.Outcome, res.Message = OutcomeFailed, fmt.Sprintf("key ring %s rotated %d times during the run", plan.Keyring.Name, restart+1)
			e.final(res)
			return res, nil
		}
	}
}

// final reports a column's end to the progress callback.
func (e *Engine) final(res ColumnResult) {
	p := Progress{Column: res.Plan.Column.QualifiedName(), Keyring: res.Plan.Keyring.Name, FromVersion: res.Plan.FromVersion,
		ToVersion: res.Plan.Active, Job: res.Job.ID, Pass: res.Passes, Done: res.Job.RowsDone, Skipped: res.Job.RowsSkipped,
		Failed: res.Failed, Total: res.Job.RowsTotal, Final: true, Outcome: res.Outcome}
	if res.Job.ID == 0 {
		p.Total = -1
	}
	e.o.Progress(p)
}
