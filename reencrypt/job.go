package reencrypt

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgcloak/pgcloak/crypto/envelope"
	"github.com/pgcloak/pgcloak/hsm"
	"github.com/pgcloak/pgcloak/keycache"
	"github.com/pgcloak/pgcloak/keyring"
)

// columnRun is one column's processing within a Run, across the jobs a
// rotation may make it start.
type columnRun struct {
	e   *Engine
	res *ColumnResult
	// failedRows holds the primary keys (joined) of rows already reported
	// as left unchanged, so each is reported once.
	failedRows map[string]bool
}

// jobRun is one job held by this run.
type jobRun struct {
	*columnRun
	plan     *ColumnPlan
	job      keyring.Job
	stmts    statements
	versions []uint32 // versions still re-encrypted (shrinks when one becomes unloadable)
	target   *envelope.Key
	context  string
	cursor   []string
	th       *throttle
	lost     atomic.Bool
	started  time.Time
	runDone  int64 // rows re-encrypted by this job in this run
	flushed  time.Time
	plain    []byte
}

// run claims the column's job and works through it. superseded means the
// key ring's active version changed: the job was cancelled and the caller
// plans again.
func (c *columnRun) run(ctx context.Context, plan *ColumnPlan) (superseded bool, err error) {
	e := c.e
	res := c.res
	if e.o.Compromise != nil && plan.FromVersion == 0 {
		// Another key ring: the compromised version cannot be in this
		// column's scope, and its routine job is left alone.
		res.Outcome = OutcomeNothing
		return false, nil
	}
	_, hasOpen, err := e.o.Store.OpenJob(ctx, plan.Column.Schema+"."+plan.Column.Table, plan.Column.Column)
	if err != nil {
		return false, err
	}
	if plan.Remaining == 0 && !hasOpen {
		if wait := e.o.SettleUntil.Sub(e.now()); wait > 0 {
			// Nothing now, but proxies may still be writing with an old
			// version: look again once they cannot.
			if err := e.sleep(ctx, wait); err != nil {
				return false, ErrInterrupted
			}
			return true, nil
		}
		if res.Job.ID == 0 {
			res.Outcome = OutcomeNothing
		} else {
			res.Outcome = OutcomeDone
		}
		return false, nil
	}
	spec := keyring.JobSpec{
		Keyring: plan.Keyring.Name, FromVersion: plan.FromVersion, ToVersion: plan.Active,
		Table: plan.Column.Schema + "." + plan.Column.Table, Column: plan.Column.Column,
		PKColumns: plan.PKColumns, BatchSize: e.o.BatchSize, Remaining: plan.Remaining,
	}
	copts := keyring.ClaimOpts{Owner: e.o.Owner, StaleAfter: e.o.StaleAfter, Takeover: e.o.Force || e.o.Compromise != nil}
	switch {
	case e.o.Compromise != nil:
		copts.Reason = fmt.Sprintf("compromise response for %s version %d", e.o.Compromise.Keyring, e.o.Compromise.Version)
	case e.o.Force:
		copts.Reason = "pgcloak reencrypt --force"
	}
	job, resumed, err := e.o.Store.ClaimJob(ctx, spec, copts)
	if errors.Is(err, keyring.ErrJobBusy) {
		res.Outcome, res.Message = OutcomeRefused, err.Error()+" (wait for it, or take it over with --force)"
		return false, nil
	}
	if err != nil {
		return false, err
	}
	if res.Job.ID == 0 {
		res.Resumed = resumed
	}
	res.Job = job
	e.o.Log.Info().Int64("job", job.ID).Str("column", plan.Column.QualifiedName()).Str("keyring", plan.Keyring.Name).
		Uint32("to_version", plan.Active).Bool("resumed", resumed).Int64("rows", plan.Remaining).Msg("re-encryption job started")
	for _, x := range plan.Excluded() {
		e.o.Log.Warn().Str("column", plan.Column.QualifiedName()).Str("keyring", plan.Keyring.Name).Uint32("version", x.Version).
			Str("state", string(x.State)).Int64("rows", x.Rows).Msg("rows under a key version that cannot be used are left unchanged")
	}

	j := &jobRun{columnRun: c, plan: plan, job: job, stmts: buildStatements(plan.ref), versions: plan.eligible(),
		context: plan.Column.ContextString(), cursor: job.LastPK,
		th:      newThrottle(e.o.Rate, e.o.BatchSize, e.o.BackoffFactor, e.o.MaxBackoff),
		started: e.now(), flushed: e.now()}
	hbCtx, stopHB := context.WithCancel(context.WithoutCancel(ctx))
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		j.heartbeat(hbCtx)
	}()
	state, msg, superseded, err := j.work(ctx)
	stopHB()
	wg.Wait()
	return superseded, j.finish(ctx, state, msg, err)
}

// heartbeat refreshes the job's heartbeat until ctx ends; it notes when the
// job was taken away.
func (j *jobRun) heartbeat(ctx context.Context) {
	t := time.NewTicker(j.e.heartbeat)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		err := j.e.o.Store.HeartbeatJob(ctx, j.job.ID, j.e.o.Owner)
		switch {
		case errors.Is(err, keyring.ErrJobLost):
			j.lost.Store(true)
			return
		case err != nil && ctx.Err() == nil:
			j.e.o.Log.Warn().Err(err).Int64("job", j.job.ID).Msg("re-encryption job heartbeat failed")
		}
	}
}

// errLost: the job was taken away; nothing is written to it any more.
var errLost = errors.New("job lost")

// work runs passes until the column is done or the run must stop. state
// and msg are the job's final state; err a reason to stop the whole run.
func (j *jobRun) work(ctx context.Context) (state keyring.JobState, msg string, superseded bool, err error) {
	e := j.e
	key, err := e.keys.Get(ctx, j.plan.Keyring.ID, j.plan.Active)
	if err != nil {
		return keyring.JobPaused, "", false, fmt.Errorf("reencrypt: %s: key ring %s version %d (the active version): %w",
			j.plan.Column.QualifiedName(), j.plan.Keyring.Name, j.plan.Active, err)
	}
	j.target = key
	j.report(1, 0) // the job's start, before the first batch
	idle := 0
	for pass := 1; ; pass++ {
		j.res.Passes++
		passStart := j.res.Reencrypted + j.res.Skipped
		for {
			if ctx.Err() != nil {
				return keyring.JobPaused, "", false, ErrInterrupted
			}
			if j.lost.Load() {
				return "", "", false, errLost
			}
			active, err := e.o.Store.ActiveVersion(ctx, j.plan.Keyring.Name)
			if err != nil {
				return keyring.JobPaused, "", false, err
			}
			if active.Version != j.plan.Active {
				return keyring.JobCancelled, fmt.Sprintf("superseded: key ring %s rotated to version %d during the run", j.plan.Keyring.Name, active.Version), true, nil
			}
			if len(j.versions) == 0 {
				break
			}
			b, err := j.batch(ctx)
			if err != nil {
				return keyring.JobPaused, "", false, err
			}
			if err := j.record(ctx, b, pass); err != nil {
				return keyring.JobPaused, "", false, err
			}
			if b.rows < e.o.BatchSize {
				break // end of the table
			}
			if err := j.throttle(ctx, b); err != nil {
				return keyring.JobPaused, "", false, ErrInterrupted
			}
		}
		remaining, err := j.count(ctx)
		if err != nil {
			return keyring.JobPaused, "", false, err
		}
		if remaining == 0 {
			if wait := e.o.SettleUntil.Sub(e.now()); wait > 0 {
				if err := e.sleep(ctx, wait); err != nil {
					return keyring.JobPaused, "", false, ErrInterrupted
				}
				if remaining, err = j.count(ctx); err != nil {
					return keyring.JobPaused, "", false, err
				}
			}
			if remaining == 0 {
				return keyring.JobDone, "", false, nil
			}
		}
		progress := j.res.Reencrypted+j.res.Skipped > passStart
		if !progress {
			idle++
		}
		known := int64(len(j.failedRows))
		switch {
		case len(j.versions) == 0 || (!progress && known >= remaining):
			return keyring.JobFailed, j.leftMessage(remaining), false, nil
		case pass >= e.o.MaxPasses || idle > maxIdlePasses:
			return keyring.JobFailed, j.leftMessage(remaining), false, nil
		case !progress:
			if err := e.sleep(ctx, idleRetry); err != nil {
				return keyring.JobPaused, "", false, ErrInterrupted
			}
		}
		// Another pass from the first row: rows skipped, locked, or
		// written with an old version meanwhile.
		j.cursor = nil
		total := j.job.RowsDone + remaining
		if err := j.update(ctx, keyring.JobProgress{Total: total}); err != nil {
			return keyring.JobPaused, "", false, err
		}
		j.job.RowsTotal = total
	}
}

// leftMessage explains the rows a failed job leaves behind.
func (j *jobRun) leftMessage(remaining int64) string {
	known := int64(len(j.failedRows))
	switch {
	case len(j.versions) == 0:
		return fmt.Sprintf("%d row(s) still reference older versions whose keys became unavailable during the run", remaining)
	case known >= remaining:
		return fmt.Sprintf("%d row(s) could not be decrypted and were left unchanged", remaining)
	}
	return fmt.Sprintf("%d row(s) still reference older versions (%d could not be decrypted; the others were locked by other transactions or written meanwhile); run again",
		remaining, min(known, remaining))
}

// batchResult is one committed batch.
type batchResult struct {
	rows          int // rows selected
	done, skipped int64
	failures      []RowFailure
	unavailable   map[uint32]error
	last          []string
	dur           time.Duration
}

// batch re-encrypts the next rows after the cursor in one transaction.
func (j *jobRun) batch(ctx context.Context) (b batchResult, err error) {
	e := j.e
	start := e.now()
	tx, err := e.o.DB.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.ReadCommitted, AccessMode: pgx.ReadWrite})
	if err != nil {
		return b, fmt.Errorf("reencrypt: %s: begin: %w", j.plan.Column.QualifiedName(), err)
	}
	defer func() { _ = tx.Rollback(context.WithoutCancel(ctx)) }()

	args := []any{envelopePrefix, be4(j.plan.Keyring.ID), versionArgs(j.versions), e.o.BatchSize}
	sql := j.stmts.batchFirst
	if j.cursor != nil {
		sql = j.stmts.batch
		for _, v := range j.cursor {
			args = append(args, v)
		}
	}
	rows, err := tx.Query(ctx, sql, args...)
	if err != nil {
		return b, fmt.Errorf("reencrypt: %s: select batch: %w", j.plan.Column.QualifiedName(), err)
	}
	type row struct {
		pk  []string
		val []byte
	}
	var got []row
	n := len(j.plan.PKColumns)
	for rows.Next() {
		r := row{pk: make([]string, n)}
		dest := make([]any, n+1)
		for i := range r.pk {
			dest[i] = &r.pk[i]
		}
		dest[n] = &r.val
		if err := rows.Scan(dest...); err != nil {
			rows.Close()
			return b, fmt.Errorf("reencrypt: %s: read batch: %w", j.plan.Column.QualifiedName(), err)
		}
		got = append(got, r)
	}
	if err := rows.Err(); err != nil {
		return b, fmt.Errorf("reencrypt: %s: select batch: %w", j.plan.Column.QualifiedName(), err)
	}
	b.rows = len(got)
	if b.rows == 0 {
		b.dur = e.now().Sub(start)
		return b, tx.Commit(ctx)
	}
	b.last = got[len(got)-1].pk

	keyCols := make([][]string, n)
	var olds, news [][]byte
	for _, r := range got {
		nv, h, fail, err := j.reseal(ctx, r.val, &b)
		if err != nil {
			return b, err
		}
		if fail != "" {
			b.failures = append(b.failures, RowFailure{PK: r.pk, KeyringID: h.KeyringID, Version: h.KeyVersion, Reason: fail})
			continue
		}
		if nv == nil {
			continue // its version became unavailable: left unchanged
		}
		for i := range keyCols {
			keyCols[i] = append(keyCols[i], r.pk[i])
		}
		olds, news = append(olds, r.val), append(news, nv)
	}
	if len(news) > 0 {
		uargs := make([]any, 0, n+2)
		for _, k := range keyCols {
			uargs = append(uargs, k)
		}
		uargs = append(uargs, olds, news)
		tag, err := tx.Exec(ctx, j.stmts.update, uargs...)
		if err != nil {
			return b, fmt.Errorf("reencrypt: %s: update batch: %w", j.plan.Column.QualifiedName(), err)
		}
		b.done = tag.RowsAffected()
		b.skipped = int64(len(news)) - b.done
	}
	if err := tx.Commit(ctx); err != nil {
		return b, fmt.Errorf("reencrypt: %s: commit batch: %w", j.plan.Column.QualifiedName(), err)
	}
	b.dur = e.now().Sub(start)
	return b, nil
}

// reseal opens val with the version its header names and seals the
// plaintext with the target key, keeping any blind index. fail (non-empty)
// says why the row is left unchanged (XX001 semantics); nv is nil and fail
// empty when the row's version became unavailable (recorded in b); err
// stops the run (an outage).
func (j *jobRun) reseal(ctx context.Context, val []byte, b *batchResult) (nv []byte, h envelope.Header, fail string, err error) {
	h, err = envelope.ParseHeader(val)
	if err != nil {
		if len(val) >= 13 { // the predicate matched: name the version anyway
			h.KeyringID, h.KeyVersion = binary.BigEndian.Uint32(val[5:9]), binary.BigEndian.Uint32(val[9:13])
		}
		return nil, h, "malformed envelope", nil
	}
	if _, gone := b.unavailable[h.KeyVersion]; gone {
		return nil, h, "", nil
	}
	key, err := j.e.keys.Get(ctx, h.KeyringID, h.KeyVersion)
	if err != nil {
		if transientKeyError(ctx, err) {
			return nil, h, "", fmt.Errorf("reencrypt: %s: key ring %s version %d: %w", j.plan.Column.QualifiedName(), j.plan.Keyring.Name, h.KeyVersion, err)
		}
		if b.unavailable == nil {
			b.unavailable = map[uint32]error{}
		}
		b.unavailable[h.KeyVersion] = err
		return nil, h, "", nil
	}
	j.plain, err = key.Open(j.plain[:0], val, j.context)
	if err != nil {
		if errors.Is(err, envelope.ErrAuth) {
			return nil, h, "failed authentication (tampered, or copied from another column)", nil
		}
		return nil, h, "malformed envelope", nil
	}
	var bi []byte
	if h.HasBlindIndex {
		bi = h.BlindIndex[:]
	}
	nv, err = j.target.Seal(nil, bi, j.context, j.plain)
	clear(j.plain)
	if err != nil {
		return nil, h, "", fmt.Errorf("reencrypt: %s: seal: %w", j.plan.Column.QualifiedName(), err)
	}
	return nv, h, "", nil
}

// transientKeyError reports whether a key load failed for a reason that
// may pass (an outage, the context) rather than the version's state.
func transientKeyError(ctx context.Context, err error) bool {
	return ctx.Err() != nil || errors.Is(err, hsm.ErrUnavailable) || errors.Is(err, keycache.ErrClosed) ||
		errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded)
}

// record writes a committed batch to the job record and reports it.
func (j *jobRun) record(ctx context.Context, b batchResult, pass int) error {
	e := j.e
	if b.rows > 0 {
		j.cursor = b.last
	}
	if b.done > 0 {
		e.o.Store.CountEncryptions(j.plan.Keyring.ID, j.plan.Active, b.done)
	}
	for v, err := range b.unavailable {
		j.versions = slices.DeleteFunc(j.versions, func(x uint32) bool { return x == v })
		e.o.Log.Warn().Err(err).Str("column", j.plan.Column.QualifiedName()).Str("keyring", j.plan.Keyring.Name).Uint32("version", v).
			Msg("key version became unavailable during the run: its rows are left unchanged")
	}
	for _, f := range b.failures {
		k := strings.Join(f.PK, "\x00")
		if j.failedRows[k] {
			continue
		}
		j.failedRows[k] = true
		j.res.Failed++
		if len(j.res.Failures) < maxReported {
			j.res.Failures = append(j.res.Failures, f)
		}
		e.o.Log.Warn().Str("column", j.plan.Column.QualifiedName()).Strs("pk", f.PK).Uint32("keyring_id", f.KeyringID).
			Uint32("version", f.Version).Str("reason", f.Reason).Msg("row left unchanged: its value cannot be decrypted")
	}
	j.res.Reencrypted += b.done
	j.res.Skipped += b.skipped
	j.runDone += b.done
	if b.rows > 0 {
		if err := j.update(ctx, keyring.JobProgress{LastPK: b.last, Done: b.done, Skipped: b.skipped, Total: -1}); err != nil {
			return err
		}
		j.job.RowsDone += b.done
		j.job.RowsSkipped += b.skipped
		j.job.LastPK = b.last
	}
	if e.now().Sub(j.flushed) >= flushEvery {
		e.flush(ctx)
		j.flushed = e.now()
	}
	j.res.Job = j.job
	j.report(pass, 0)
	return nil
}

// update writes progress, also after ctx ended (the batch is committed).
func (j *jobRun) update(ctx context.Context, p keyring.JobProgress) error {
	uctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), finalTimeout)
	defer cancel()
	err := j.e.o.Store.UpdateJob(uctx, j.job.ID, j.e.o.Owner, p)
	if errors.Is(err, keyring.ErrJobLost) {
		j.lost.Store(true)
		return errLost
	}
	return err
}

func (j *jobRun) report(pass int, pause time.Duration) {
	el := j.e.now().Sub(j.started)
	var rate float64
	if el > 0 {
		rate = float64(j.runDone) / el.Seconds()
	}
	j.e.o.Progress(Progress{Column: j.plan.Column.QualifiedName(), Keyring: j.plan.Keyring.Name, FromVersion: j.plan.FromVersion,
		ToVersion: j.plan.Active, Job: j.job.ID, Pass: pass, Done: j.job.RowsDone, Skipped: j.job.RowsSkipped,
		Failed: j.res.Failed, Total: j.job.RowsTotal, Rate: rate, Elapsed: el, Pause: pause})
}

// throttle waits for the rate limit and backs off after a slow batch.
func (j *jobRun) throttle(ctx context.Context, b batchResult) error {
	if pause := j.th.observe(b.dur); pause > 0 {
		j.report(j.res.Passes, pause)
		if err := j.e.sleep(ctx, pause); err != nil {
			return err
		}
	}
	return j.th.wait(ctx, b.rows)
}

// count counts the rows the job still has to re-encrypt.
func (j *jobRun) count(ctx context.Context) (int64, error) {
	if len(j.versions) == 0 {
		var n int64
		for _, v := range j.plan.eligible() {
			c, err := j.countVersions(ctx, []uint32{v})
			if err != nil {
				return 0, err
			}
			n += c
		}
		return n, nil
	}
	return j.countVersions(ctx, j.versions)
}

func (j *jobRun) countVersions(ctx context.Context, versions []uint32) (int64, error) {
	var n int64
	err := j.e.o.DB.QueryRow(ctx, j.stmts.count, envelopePrefix, be4(j.plan.Keyring.ID), versionArgs(versions)).Scan(&n)
	if err != nil {
		return 0, fmt.Errorf("reencrypt: %s: count rows left: %w", j.plan.Column.QualifiedName(), err)
	}
	return n, nil
}

// finish records the job's end: state with msg, or, when the run stops
// with err, paused (interrupted) with err's text. A lost job is left to
// whoever holds it now.
func (j *jobRun) finish(ctx context.Context, state keyring.JobState, msg string, err error) error {
	res := j.res
	if err != nil && ctx.Err() != nil && !errors.Is(err, errLost) {
		state, err = keyring.JobPaused, ErrInterrupted // the query in flight failed because of the interruption
	}
	if errors.Is(err, errLost) {
		res.Outcome, res.Message = OutcomeLost, fmt.Sprintf("job %d was taken over or cancelled by another run", j.job.ID)
		if cur, gerr := j.e.o.Store.Job(context.WithoutCancel(ctx), j.job.ID); gerr == nil {
			res.Job = cur
			if cur.Owner != j.e.o.Owner {
				res.Message = fmt.Sprintf("job %d was taken over by %s", cur.ID, cur.Owner)
			}
		}
		return nil
	}
	recorded := msg
	if err != nil && !errors.Is(err, ErrInterrupted) {
		recorded = err.Error()
	}
	fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), finalTimeout)
	defer cancel()
	job, ferr := j.e.o.Store.FinishJob(fctx, j.job.ID, j.e.o.Owner, state, recorded)
	switch {
	case errors.Is(ferr, keyring.ErrJobLost):
		res.Outcome, res.Message = OutcomeLost, fmt.Sprintf("job %d was taken over or cancelled by another run", j.job.ID)
		return nil
	case ferr != nil && err == nil:
		return ferr
	case ferr != nil:
		j.e.o.Log.Warn().Err(ferr).Int64("job", j.job.ID).Msg("could not record the end of the re-encryption job")
	default:
		res.Job = job
	}
	switch state {
	case keyring.JobDone:
		res.Outcome, res.Message = OutcomeDone, ""
	case keyring.JobFailed:
		res.Outcome, res.Message = OutcomeFailed, msg
	case keyring.JobPaused:
		res.Outcome, res.Message = OutcomePaused, recorded
	case keyring.JobCancelled:
		res.Message = msg
	}
	j.e.o.Log.Info().Int64("job", j.job.ID).Str("column", j.plan.Column.QualifiedName()).Str("state", string(state)).
		Int64("rows_done", res.Job.RowsDone).Int64("rows_skipped", res.Job.RowsSkipped).Str("error", recorded).Msg("re-encryption job ended")
	return err
}
