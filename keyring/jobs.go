package keyring

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/pgcloak/pgcloak/keyring/audit"
)

// JobState is the state of a re-encryption job
// (pgcloak.reencrypt_jobs.state). The zero value is invalid; the strings
// are stored and never change meaning.
type JobState string

// Job states. pending, running and paused are open: at most one open job
// per column (unique index reencrypt_jobs_one_open).
const (
	// JobPending: created, not started yet.
	JobPending JobState = "pending"
	// JobRunning: a run holds it (owner) and keeps its heartbeat fresh.
	JobRunning JobState = "running"
	// JobPaused: stopped before the end (interrupted, or a runtime error
	// recorded in Error); a later run resumes it from LastPK.
	JobPaused JobState = "paused"
	// JobDone: no row of the column references an older version any more.
	JobDone JobState = "done"
	// JobFailed: ended with rows that could not be re-encrypted (Error
	// says why); a later run starts a new job.
	JobFailed JobState = "failed"
	// JobCancelled: superseded (the key ring rotated, a compromise
	// response took the column over) or cancelled by an operator.
	JobCancelled JobState = "cancelled"
)

// String returns the stored spelling.
func (s JobState) String() string {
	if s == "" {
		return "(invalid job state)"
	}
	return string(s)
}

// Open reports whether a job in state s still holds its column's slot.
func (s JobState) Open() bool { return s == JobPending || s == JobRunning || s == JobPaused }

// Job is one re-encryption job record: one column of one table, from the
// older versions of a key ring (or one of them) to ToVersion, in primary-key
// order.
type Job struct {
	ID          int64
	KeyringID   uint32
	Keyring     string
	FromVersion uint32 // 0: every version older than ToVersion
	ToVersion   uint32
	Table       string   // schema.table, unquoted
	Column      string   // unquoted
	PKColumns   []string // primary-key columns, in key order
	State       JobState
	DryRun      bool
	Forced      bool // taken over from a run that was still alive (audited)
	// LastPK is the cursor: the primary key of the last row done, as text
	// values in PKColumns order; nil before the first batch of a pass.
	LastPK      []string
	RowsTotal   int64 // estimate (rows done + rows left when last counted); -1 when never counted
	RowsDone    int64 // rows re-encrypted
	RowsSkipped int64 // rows changed concurrently (compare-and-swap lost) or left unchanged
	BatchSize   int
	Owner       string // the run that holds (or last held) it: host:pid
	HeartbeatAt time.Time
	Error       string
	CreatedAt   time.Time
	CreatedBy   string
	StartedAt   time.Time
	UpdatedAt   time.Time
	FinishedAt  time.Time
}

// QualifiedColumn returns "schema.table.column".
func (j Job) QualifiedColumn() string { return j.Table + "." + j.Column }

// JobSpec describes the job a run wants for one column.
type JobSpec struct {
	Keyring     string // required: the key ring whose versions are replaced
	FromVersion uint32 // 0: every version older than ToVersion
	ToVersion   uint32 // required: the ring's active version
	Table       string // required: schema.table
	Column      string // required
	PKColumns   []string
	BatchSize   int
	// Remaining is the number of rows left to re-encrypt, counted by the
	// caller; rows_total becomes rows done + Remaining.
	Remaining int64
}

// ClaimOpts says who claims and on what terms.
type ClaimOpts struct {
	// Owner identifies the run (host:pid); required.
	Owner string
	// StaleAfter: a running job whose heartbeat is older than this (key
	// store clock) is considered abandoned and may be claimed. Required.
	StaleAfter time.Duration
	// Takeover claims even a job whose heartbeat is fresh; the run that
	// held it gets ErrJobLost at its next heartbeat. Audited
	// (reencrypt.force). For --force and the compromise response.
	Takeover bool
	// Reason is recorded with a takeover or a superseded job.
	Reason string
}

var (
	// ErrJobBusy: another run holds the column's open job and its
	// heartbeat is fresh (a *JobBusyError says who).
	ErrJobBusy = errors.New("keyring: re-encryption job held by another run")
	// ErrJobLost: the job is no longer held by this run (taken over,
	// cancelled, or finished by someone else); the run must stop.
	ErrJobLost = errors.New("keyring: re-encryption job no longer held by this run")
)

// JobBusyError names the job and run holding a column. It unwraps to
// ErrJobBusy.
type JobBusyError struct {
	Table, Column string
	JobID         int64     // 0 when unknown (two runs raced for a new job)
	Owner         string    // "" when unknown
	HeartbeatAt   time.Time // zero when unknown
}

func (e *JobBusyError) Error() string {
	if e.JobID == 0 {
		return fmt.Sprintf("keyring: re-encryption of %s.%s: another run created its job at the same moment", e.Table, e.Column)
	}
	return fmt.Sprintf("keyring: re-encryption of %s.%s is job %d, held by %s (last heartbeat %s)",
		e.Table, e.Column, e.JobID, e.Owner, e.HeartbeatAt.UTC().Format(time.RFC3339))
}

// Unwrap returns ErrJobBusy.
func (e *JobBusyError) Unwrap() error { return ErrJobBusy }

const jobColumns = `j.id, j.keyring_id, kr.name, coalesce(j.from_version, 0), j.to_version, j.table_name,
	j.column_name, j.pk_columns, j.state, j.dry_run, j.forced, j.last_pk, coalesce(j.rows_total, -1),
	j.rows_done, j.rows_skipped, coalesce(j.batch_size, 0), coalesce(j.owner, ''), j.heartbeat_at, j.error,
	j.created_at, j.created_by, j.started_at, j.updated_at, j.finished_at`

const jobFrom = " FROM pgcloak.reencrypt_jobs j JOIN pgcloak.keyrings kr ON kr.id = j.keyring_id "

func scanJob(row pgx.Row, extra ...any) (Job, error) {
	var (
		j                      Job
		ringID, from, to       int32
		state                  string
		lastPK                 []byte
		batch                  int32
		hb, started, fin       *time.Time
		created, updated       time.Time
		rowsTotal, done, skipd int64
	)
	dest := []any{&j.ID, &ringID, &j.Keyring, &from, &to, &j.Table, &j.Column, &j.PKColumns, &state,
		&j.DryRun, &j.Forced, &lastPK, &rowsTotal, &done, &skipd, &batch, &j.Owner, &hb, &j.Error,
		&created, &j.CreatedBy, &started, &updated, &fin}
	if err := row.Scan(append(dest, extra...)...); err != nil {
		return Job{}, err
	}
	if lastPK != nil {
		if err := json.Unmarshal(lastPK, &j.LastPK); err != nil {
			return Job{}, fmt.Errorf("job %d: last_pk is not a JSON array of text: %w", j.ID, err)
		}
	}
	j.KeyringID, j.FromVersion, j.ToVersion = uint32(ringID), uint32(from), uint32(to)
	j.State, j.BatchSize = JobState(state), int(batch)
	j.RowsTotal, j.RowsDone, j.RowsSkipped = rowsTotal, done, skipd
	j.HeartbeatAt, j.StartedAt, j.FinishedAt = utc(hb), utc(started), utc(fin)
	j.CreatedAt, j.UpdatedAt = created.UTC(), updated.UTC()
	return j, nil
}

func (s *Store) queryJobs(ctx context.Context, q interface {
	Query(context.Context, string, ...any) (pgx.Rows, error)
}, where string, args ...any) ([]Job, error) {
	rows, err := q.Query(ctx, "SELECT "+jobColumns+jobFrom+where, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []Job
	for rows.Next() {
		j, err := scanJob(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, j)
	}
	return out, rows.Err()
}

// Jobs returns every re-encryption job, newest first.
func (s *Store) Jobs(ctx context.Context) ([]Job, error) {
	js, err := s.queryJobs(ctx, s.pool, "ORDER BY j.id DESC")
	return js, wrapIf("keyring: re-encryption jobs", err)
}

// Job returns one job (ErrNotFound if none).
func (s *Store) Job(ctx context.Context, id int64) (Job, error) {
	js, err := s.queryJobs(ctx, s.pool, "WHERE j.id = $1", id)
	if err != nil {
		return Job{}, fmt.Errorf("keyring: re-encryption job %d: %w", id, err)
	}
	if len(js) == 0 {
		return Job{}, fmt.Errorf("%w: re-encryption job %d", ErrNotFound, id)
	}
	return js[0], nil
}

// OpenJob returns the open (pending, running or paused) job of a column,
// if any.
func (s *Store) OpenJob(ctx context.Context, table, column string) (Job, bool, error) {
	js, err := s.queryJobs(ctx, s.pool, "WHERE j.table_name = $1 AND j.column_name = $2 AND j.state IN ('pending', 'running', 'paused')", table, column)
	if err != nil {
		return Job{}, false, fmt.Errorf("keyring: re-encryption job of %s.%s: %w", table, column, err)
	}
	if len(js) == 0 {
		return Job{}, false, nil
	}
	return js[0], true, nil
}

// ClaimJob gives the calling run the column's job, in one transaction:
//
//   - no open job: a new one is created, running, owned by opts.Owner;
//   - an open job for the same key ring, versions and primary key that no
//     live run holds (pending, paused, or running with a heartbeat older
//     than opts.StaleAfter): it is resumed from its LastPK (resumed = true);
//   - an open job with other parameters that no live run holds (the ring
//     rotated since, or a compromise response replaces a routine job): it
//     is cancelled as superseded and a new one created;
//   - a job a live run holds: ErrJobBusy (a *JobBusyError), unless
//     opts.Takeover, which claims it anyway (reencrypt.force).
//
// rows_total becomes rows done + spec.Remaining. Every start is audited
// (reencrypt.start), every superseded job as reencrypt.finish.
func (s *Store) ClaimJob(ctx context.Context, spec JobSpec, opts ClaimOpts) (job Job, resumed bool, err error) {
	switch {
	case spec.Keyring == "" || spec.Table == "" || spec.Column == "" || spec.ToVersion == 0:
		return Job{}, false, errors.New("keyring: claim job: key ring, table, column and to_version are required")
	case len(spec.PKColumns) == 0:
		return Job{}, false, fmt.Errorf("keyring: claim job %s.%s: no primary-key columns", spec.Table, spec.Column)
	case spec.FromVersion != 0 && spec.FromVersion >= spec.ToVersion:
		return Job{}, false, fmt.Errorf("keyring: claim job %s.%s: from_version %d is not older than to_version %d", spec.Table, spec.Column, spec.FromVersion, spec.ToVersion)
	case opts.Owner == "" || opts.StaleAfter <= 0:
		return Job{}, false, errors.New("keyring: claim job: owner and a positive StaleAfter are required")
	case spec.BatchSize < 0 || spec.Remaining < 0:
		return Job{}, false, errors.New("keyring: claim job: negative batch size or remaining count")
	}
	err = s.inTx(ctx, func(t *txn) error {
		ring, err := s.keyringIn(ctx, t, spec.Keyring)
		if err != nil {
			return err
		}
		var live bool
		js, err := t.queryLiveJob(ctx, spec.Table, spec.Column, opts.StaleAfter, &live)
		if err != nil {
			return err
		}
		if len(js) == 1 {
			cur := js[0]
			if live && !opts.Takeover {
				return &JobBusyError{Table: cur.Table, Column: cur.Column, JobID: cur.ID, Owner: cur.Owner, HeartbeatAt: cur.HeartbeatAt}
			}
			if live {
				if err := t.audit(ctx, audit.EventReencryptForce, ring.Name, cur.ToVersion, map[string]string{
					"job": strconv.FormatInt(cur.ID, 10), "table": cur.Table, "column": cur.Column,
					"previous_owner": cur.Owner, "reason": opts.Reason,
				}); err != nil {
					return err
				}
			}
			if cur.KeyringID == ring.ID && cur.FromVersion == spec.FromVersion && cur.ToVersion == spec.ToVersion &&
				slices.Equal(cur.PKColumns, spec.PKColumns) && !cur.DryRun {
				job, err = t.resumeJob(ctx, cur, ring, spec, opts, live)
				resumed = err == nil
				return err
			}
			why := fmt.Sprintf("superseded by a job from %s to version %d", versionsText(spec.FromVersion), spec.ToVersion)
			if opts.Reason != "" {
				why += " (" + opts.Reason + ")"
			}
			if _, err := t.Exec(ctx, `UPDATE pgcloak.reencrypt_jobs SET state = 'cancelled', error = $2,
				finished_at = now(), updated_at = now() WHERE id = $1`, cur.ID, why); err != nil {
				return err
			}
			if err := t.audit(ctx, audit.EventReencryptFinish, cur.Keyring, cur.ToVersion, finishDetails(cur, JobCancelled, why)); err != nil {
				return err
			}
		}
		job, err = t.createJob(ctx, ring, spec, opts, live)
		return err
	})
	var pe *pgconn.PgError
	if errors.As(err, &pe) && pe.Code == "23505" && pe.ConstraintName == "reencrypt_jobs_one_open" {
		return Job{}, false, &JobBusyError{Table: spec.Table, Column: spec.Column}
	}
	if err != nil {
		return Job{}, false, fmt.Errorf("keyring: claim re-encryption job of %s.%s: %w", spec.Table, spec.Column, err)
	}
	return job, resumed, nil
}

// versionsText describes a job's source versions.
func versionsText(from uint32) string {
	if from == 0 {
		return "every older version"
	}
	return "version " + strconv.FormatUint(uint64(from), 10)
}

// keyringIn reads one ring inside t without locking it.
func (s *Store) keyringIn(ctx context.Context, t *txn, name string) (Keyring, error) {
	rows, err := t.Query(ctx, "SELECT "+keyringColumns+" FROM pgcloak.keyrings WHERE name = $1", name)
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

// queryLiveJob locks the column's open job, if any; live says whether a
// run holds it with a fresh heartbeat (key store clock).
func (t *txn) queryLiveJob(ctx context.Context, table, column string, stale time.Duration, live *bool) ([]Job, error) {
	rows, err := t.Query(ctx, "SELECT "+jobColumns+`, (j.state = 'running' AND j.heartbeat_at > now() - $3::interval)`+jobFrom+
		`WHERE j.table_name = $1 AND j.column_name = $2 AND j.state IN ('pending', 'running', 'paused') FOR UPDATE OF j`,
		table, column, stale)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []Job
	for rows.Next() {
		j, err := scanJob(rows, live)
		if err != nil {
			return nil, err
		}
		out = append(out, j)
	}
	return out, rows.Err()
}

func (t *txn) createJob(ctx context.Context, ring Keyring, spec JobSpec, opts ClaimOpts, forced bool) (Job, error) {
	var from *int32
	if spec.FromVersion != 0 {
		f := int32(spec.FromVersion)
		from = &f
	}
	var batch *int32
	if spec.BatchSize > 0 {
		b := int32(spec.BatchSize)
		batch = &b
	}
	var id int64
	if err := t.QueryRow(ctx, `INSERT INTO pgcloak.reencrypt_jobs
		(keyring_id, from_version, to_version, table_name, column_name, pk_columns, state, forced,
		 rows_total, batch_size, owner, heartbeat_at, created_by, started_at)
		VALUES ($1, $2, $3, $4, $5, $6, 'running', $7, $8, $9, $10, now(), $11, now()) RETURNING id`,
		int32(ring.ID), from, int32(spec.ToVersion), spec.Table, spec.Column, spec.PKColumns, forced,
		spec.Remaining, batch, opts.Owner, t.s.actor).Scan(&id); err != nil {
		return Job{}, err
	}
	if err := t.audit(ctx, audit.EventReencryptStart, ring.Name, spec.ToVersion, map[string]string{
		"job": strconv.FormatInt(id, 10), "table": spec.Table, "column": spec.Column,
		"from_version": fromText(spec.FromVersion), "to_version": strconv.FormatUint(uint64(spec.ToVersion), 10),
		"resumed": "false", "owner": opts.Owner, "rows": strconv.FormatInt(spec.Remaining, 10),
	}); err != nil {
		return Job{}, err
	}
	return t.job(ctx, id)
}

func (t *txn) resumeJob(ctx context.Context, cur Job, ring Keyring, spec JobSpec, opts ClaimOpts, forced bool) (Job, error) {
	var batch *int32
	if spec.BatchSize > 0 {
		b := int32(spec.BatchSize)
		batch = &b
	}
	if _, err := t.Exec(ctx, `UPDATE pgcloak.reencrypt_jobs SET state = 'running', owner = $2, heartbeat_at = now(),
		updated_at = now(), started_at = coalesce(started_at, now()), batch_size = coalesce($3, batch_size),
		rows_total = rows_done + $4, error = '', forced = forced OR $5 WHERE id = $1`,
		cur.ID, opts.Owner, batch, spec.Remaining, forced); err != nil {
		return Job{}, err
	}
	if err := t.audit(ctx, audit.EventReencryptStart, ring.Name, spec.ToVersion, map[string]string{
		"job": strconv.FormatInt(cur.ID, 10), "table": spec.Table, "column": spec.Column,
		"from_version": fromText(spec.FromVersion), "to_version": strconv.FormatUint(uint64(spec.ToVersion), 10),
		"resumed": "true", "owner": opts.Owner, "previous_state": string(cur.State),
		"rows_done": strconv.FormatInt(cur.RowsDone, 10), "rows": strconv.FormatInt(spec.Remaining, 10),
	}); err != nil {
		return Job{}, err
	}
	return t.job(ctx, cur.ID)
}

func fromText(v uint32) string {
	if v == 0 {
		return ""
	}
	return strconv.FormatUint(uint64(v), 10)
}

func (t *txn) job(ctx context.Context, id int64) (Job, error) {
	js, err := t.s.queryJobs(ctx, t, "WHERE j.id = $1", id)
	if err != nil {
		return Job{}, err
	}
	if len(js) == 0 {
		return Job{}, fmt.Errorf("%w: re-encryption job %d", ErrNotFound, id)
	}
	return js[0], nil
}

// JobProgress is what a run reports after a batch (or at a pass boundary).
type JobProgress struct {
	// LastPK becomes the job's cursor; nil resets it (a new pass starts
	// from the first row).
	LastPK []string
	// Done and Skipped are added to rows_done and rows_skipped.
	Done, Skipped int64
	// Total, when not negative, replaces rows_total.
	Total int64
}

// UpdateJob records progress and refreshes the heartbeat of a job the run
// holds; ErrJobLost when it no longer does. One statement, not audited.
func (s *Store) UpdateJob(ctx context.Context, id int64, owner string, p JobProgress) error {
	var last any
	if p.LastPK != nil {
		b, err := json.Marshal(p.LastPK)
		if err != nil {
			return fmt.Errorf("keyring: update re-encryption job %d: %w", id, err)
		}
		last = string(b)
	}
	var total *int64
	if p.Total >= 0 {
		total = &p.Total
	}
	tag, err := s.pool.Exec(ctx, `UPDATE pgcloak.reencrypt_jobs SET last_pk = $3::jsonb, rows_done = rows_done + $4,
		rows_skipped = rows_skipped + $5, rows_total = coalesce($6, rows_total), heartbeat_at = now(), updated_at = now()
		WHERE id = $1 AND owner = $2 AND state = 'running'`, id, owner, last, p.Done, p.Skipped, total)
	if err != nil {
		return fmt.Errorf("keyring: update re-encryption job %d: %w", id, err)
	}
	if tag.RowsAffected() == 0 {
		return fmt.Errorf("%w: job %d", ErrJobLost, id)
	}
	return nil
}

// HeartbeatJob refreshes the heartbeat of a job the run holds; ErrJobLost
// when it no longer does.
func (s *Store) HeartbeatJob(ctx context.Context, id int64, owner string) error {
	tag, err := s.pool.Exec(ctx, `UPDATE pgcloak.reencrypt_jobs SET heartbeat_at = now()
		WHERE id = $1 AND owner = $2 AND state = 'running'`, id, owner)
	if err != nil {
		return fmt.Errorf("keyring: heartbeat of re-encryption job %d: %w", id, err)
	}
	if tag.RowsAffected() == 0 {
		return fmt.Errorf("%w: job %d", ErrJobLost, id)
	}
	return nil
}

// FinishJob ends the run's hold on a job: paused (resumable), done,
// failed or cancelled, with errText (never a value) recorded and audited
// (reencrypt.finish). ErrJobLost when the run no longer holds it.
func (s *Store) FinishJob(ctx context.Context, id int64, owner string, state JobState, errText string) (Job, error) {
	switch state {
	case JobPaused, JobDone, JobFailed, JobCancelled:
	default:
		return Job{}, fmt.Errorf("keyring: finish re-encryption job %d: invalid final state %q", id, state)
	}
	var out Job
	err := s.inTx(ctx, func(t *txn) error {
		tag, err := t.Exec(ctx, `UPDATE pgcloak.reencrypt_jobs SET state = $3, error = $4, updated_at = now(),
			finished_at = CASE WHEN $3 = 'paused' THEN NULL ELSE now() END
			WHERE id = $1 AND owner = $2 AND state = 'running'`, id, owner, string(state), errText)
		if err != nil {
			return err
		}
		if tag.RowsAffected() == 0 {
			return fmt.Errorf("%w: job %d", ErrJobLost, id)
		}
		if out, err = t.job(ctx, id); err != nil {
			return err
		}
		return t.audit(ctx, audit.EventReencryptFinish, out.Keyring, out.ToVersion, finishDetails(out, state, errText))
	})
	if err != nil {
		return Job{}, fmt.Errorf("keyring: finish re-encryption job %d: %w", id, err)
	}
	return out, nil
}

func finishDetails(j Job, state JobState, errText string) map[string]string {
	d := map[string]string{
		"job": strconv.FormatInt(j.ID, 10), "table": j.Table, "column": j.Column, "state": string(state),
		"from_version": fromText(j.FromVersion), "rows_done": strconv.FormatInt(j.RowsDone, 10),
		"rows_skipped": strconv.FormatInt(j.RowsSkipped, 10),
	}
	if errText != "" {
		d["error"] = errText
	}
	return d
}

// String describes a job in one line (no key material, no values).
func (j Job) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "job %d %s (%s: %s → %d) %s", j.ID, j.QualifiedColumn(), j.Keyring, versionsText(j.FromVersion), j.ToVersion, j.State)
	return b.String()
}
