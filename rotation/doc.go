// Package rotation runs scheduled key rotation inside `pgcloak serve`
// (DESIGN.md §5): the active version of every encryption key ring is
// rotated once it is older than its classification's rotate_after, or once
// it has sealed rotate_after_encryptions values, by exactly one proxy of
// all those sharing the key store.
//
// # Deciding
//
// Policy.Due is a pure function of a ring's policy, its active version
// (keyring.Version: activation time and flushed encryption count), the
// encryptions this process counted but has not flushed yet, and the key
// store's clock. It names the trigger (TriggerEncryptions before
// TriggerAge when both apply) and the reason recorded in the audit log:
//
//	scheduled rotation: encryptions: 1073741830 values sealed, rotate_after_encryptions = 1073741824
//	scheduled rotation: age: active for 90d0h1m, rotate_after = 90d
//
// Counts are approximate: each proxy counts in memory and flushes to
// key_versions.encryptions every few seconds (keys.Opts.FlushInterval;
// pgcloak serve flushes at least once per check interval), so the elected
// proxy sees the others' counts with that delay, plus its own at once.
// The default limit, 2^30, leaves a factor of four to the AES-GCM bound of
// 2^32 for that delay, for the interval between checks and for proxies
// that keep sealing with the old version until they hear of the new one.
//
// # Acting: one elected proxy
//
// Every Scheduler whose key-store role may rotate (keyring.Store.MayRotate;
// one that may not would hold the leadership without being able to act,
// so it stays out and says so once) competes for one session-level
// advisory lock in the key store (pg_try_advisory_lock(LockKey)) on a
// connection of its own, taken out of the key store's pool and held for
// as long as it leads. Only the
// holder checks and rotates. Each check starts with a query on that
// connection (which also reads the key store's clock): if it fails, the
// Scheduler has lost its connection, and with it the lock, and stops
// acting at once. PostgreSQL releases the lock when the holder's session
// ends, whether it stopped cleanly (Close), crashed or was cut off, so
// another Scheduler takes over at its next attempt; the others try every
// CheckInterval. Leadership changes are logged at info level ("rotation
// leadership acquired", "… released"; "… lost" at warn level, with the
// error).
//
// An advisory lock needs a session: the key store must be reached
// directly or through session pooling, not through transaction pooling.
// A holder whose network vanishes without a reset keeps the lock until
// the server notices (TCP keepalive settings of the key store).
//
// Leadership only avoids duplicate work; it is not what keeps a rotation
// from happening twice. Each rotation is keyring.Store.RotateIfActive
// with the version the decision was made on, under the ring's row lock:
// if two Schedulers ever act at once (a leader that has not noticed yet
// that its session ended), the second finds the version no longer active
// and does nothing.
//
// # Scope
//
// Only encryption-purpose rings are rotated. Search (blind index) rings
// are not: their key derives the stored blind indexes, so a new version
// would break equality lookups of existing rows; audit rings have their
// own life. Nothing in this package logs key material or values.
package rotation
