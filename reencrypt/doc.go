// Package reencrypt rewrites the ciphertext of encrypted columns from
// older key versions to a key ring's active version, behind live traffic
// (DESIGN.md §5, issue 6): `pgcloak reencrypt`, and the re-encryption step
// of `pgcloak keys compromise`. It also counts, per column, the rows that
// still reference a key version, which is what keeps a version from being
// retired or scheduled for deletion while data needs it.
//
// # Finding the rows
//
// The envelope header sits at a fixed offset (DESIGN.md §4: bytes 0–2
// magic and format version, 5–8 key ring id, 9–12 key version, big
// endian), so "this row needs re-encryption" is a SQL predicate over the
// stored bytea, evaluated by the server without any key:
//
//	substring(col from 1 for 3)  = '\xc10a01'      -- an envelope, format v1
//	substring(col from 6 for 4)  = <ring id, 4 bytes big endian>
//	substring(col from 10 for 4) = ANY(<versions, 4 bytes big endian each>)
//
// substring (1-based) rather than get_byte (0-based) because it never
// raises an error on a value shorter than a header; fixed-width big-endian
// bytes compare like the unsigned numbers they encode. The versions listed
// are the ones a run may use: older than the active one and loadable
// (decrypt_only; a disabled version only in the compromise procedure,
// keyring.LoaderOpts.AllowDisabled, each load audited). Rows under
// versions that cannot be loaded (retired, pending_deletion, deleted, or
// disabled outside the compromise procedure) are counted and reported,
// never touched.
//
// # Batches
//
// One job per column (keyring.Store.ClaimJob, the record in
// pgcloak.reencrypt_jobs), processed in primary-key order. Tables without
// a primary key are refused. Each batch is one READ COMMITTED transaction
// in the application database:
//
//	SELECT pk::text…, col FROM t WHERE <predicate> AND (pk…) > (<cursor>)
//	 ORDER BY pk… LIMIT n FOR UPDATE SKIP LOCKED
//
// then, for every row, open with the version the header names (with the
// column context, catalog.Column.ContextString) and seal with the active
// version (keeping a blind index, which does not depend on the encryption
// key), and one compare-and-swap UPDATE for the whole batch:
//
//	UPDATE t SET col = u.new FROM unnest(…) u WHERE t.pk = u.pk AND t.col = u.old
//
// A row whose value changed meanwhile is not overwritten (rows_skipped); a
// row locked by an application transaction is skipped by SKIP LOCKED. A
// value that fails to open (XX001: tampered, moved from another column,
// malformed) is reported by primary key and left unchanged. After the
// commit the cursor (last_pk, a JSON array of text) and the counters are
// written to the job record, so an interrupted run loses at most one
// uncommitted batch and the next run resumes after the cursor.
//
// When a pass reaches the end of the table, the rows still matching the
// predicate are counted; skipped rows, rows written with an old version by
// a proxy that had not yet seen the rotation, and rows behind the cursor
// that were locked are picked up by another pass from the start, until none
// is left or a pass makes no progress (then the job fails, naming the
// count). Before each batch the ring's active version is read again: if
// the ring rotated (or its active version was disabled), the job is
// cancelled as superseded and a new one re-encrypts to the new active
// version.
//
// # Throttling
//
// A token bucket (golang.org/x/time/rate) caps the rate in rows per second
// (Opts.Rate). In addition, each batch's duration is compared with a
// moving baseline: when it exceeds Opts.BackoffFactor times the baseline
// (the database is busier), the run pauses for as long as the batch took,
// longer for consecutive slow batches, at most Opts.MaxBackoff.
//
// # Jobs and interruption
//
// A running job carries its owner (host:pid) and a heartbeat refreshed by
// a goroutine every Opts.Heartbeat; a job whose heartbeat is older than
// Opts.StaleAfter may be claimed by another run, which resumes it. When the
// context is cancelled (Ctrl-C), the batch in flight is rolled back and the
// job is left paused with its cursor. Starts, ends and takeovers are
// audited (reencrypt.start, reencrypt.finish, reencrypt.force); values
// sealed are counted (keyring.Store.CountEncryptions) and flushed.
//
// No plaintext value and no key material ever reaches a log line, an error
// or an audit entry; rows are named by table, column and primary key.
package reencrypt
