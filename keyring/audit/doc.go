// Package audit is pgcloak's tamper-evident audit log: a hash chain in
// pgcloak.audit_log (created by the keyring migrations), MACed checkpoints
// in pgcloak.audit_checkpoints, a verifier, and a JSON-lines sink for a
// SIEM. The keyring package appends to it in the same transaction as every
// key change it records; other packages append through keyring.Store
// Audit, AuditBatch or an AuditQueue (batched, for the proxy's
// restricted-data reads).
//
// # The chain
//
// Entry n stores seq = n (gapless from 1), the key store's clock, the
// actor (as the application says), the database user (as PostgreSQL
// says), the event, the key ring and version concerned, string details,
// prev_hash = hash of entry n-1 (32 zero bytes for entry 1) and
// hash = SHA-256 over a canonical, versioned, length-prefixed encoding of
// all of that (Entry.Encode). Appends take a transaction-scoped advisory
// lock (LockKey), so concurrent appenders queue and the chain never forks;
// a trigger additionally refuses any insert that does not extend the chain
// head (pgcloak.audit_head), and other triggers refuse UPDATE, DELETE and
// TRUNCATE. Those triggers stop mistakes; the owner of the schema or a
// superuser can disable them, and that is what the hash chain and the
// checkpoints detect.
//
// # Checkpoints
//
// A checkpoint stores HMAC-SHA-256 over (audit key ring id, key version,
// seq, hash of entry seq) under a DEK of the audit key ring. That DEK is
// only ever stored wrapped by the KEK, so only a holder of the KEK (a
// pgcloak process with HSM/KMS access) can produce a valid checkpoint;
// someone with write access to the database alone cannot.
//
// # What Verify detects, and what it cannot
//
// Verify (ideally in one REPEATABLE READ snapshot) recomputes every hash
// and link and reports each finding with the seq it concerns: an edited
// entry (content does not match its hash), a reordered or renumbered
// entry (its hash matches another seq), deleted entries (a gap in seq, or a
// tail shorter than the chain head or a checkpoint), an inserted entry (its
// successor links past it, or it lies beyond the head), a replaced entry
// (its hash recomputed: its successor no longer links to it), a rewritten
// prefix (a checkpoint's hash differs from the entry at its seq), and a
// forged or altered checkpoint (its MAC does not verify).
//
// The hash chain holds no secret. An attacker with write access to the
// key store who rewrites the log from some entry to the end, recomputing
// every hash and updating the head row consistently, or who deletes the
// tail and the head row with it, is detected only up to the last valid
// checkpoint: entries after it (Report.Uncovered) are protected against
// clumsy tampering, not against a careful one. Checkpoint often (StoreOpts
// in keyring), keep the SIEM copy of every entry, and compare its last seq
// with the log's. Deleting checkpoint rows is noticed only through the
// (unauthenticated) head row.
package audit
