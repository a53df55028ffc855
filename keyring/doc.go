// Package keyring is pgcloak's key store: key rings, key versions and
// their lifecycle, wrapped DEKs, encryption counters, re-encryption job
// records and the hash-chained audit log (subpackage audit), all in the
// PostgreSQL schema pgcloak of the key-store database (DESIGN.md §5, §8).
//
// # Schema
//
// Created and upgraded by the numbered SQL files in migrations/, embedded
// in the binary and applied by Store.Migrate, each in one transaction
// under an advisory lock, recorded with its SHA-256 in
// pgcloak.schema_migrations (idempotent; several proxies may start at
// once; a key store migrated by a newer pgcloak is refused).
//
//	keyrings          id (identity; in every ciphertext header), name (unique,
//	                  "confidential", "confidential:search", "audit"), purpose
//	                  (encryption | search | audit), classification, environment,
//	                  kek_name (wraps new versions), created/updated at/by
//	key_versions      (keyring_id, version) primary key, state, wrapped_dek
//	                  (NULL once deleted), dek_format, kek_name + kek_key_id that
//	                  wrapped it, created_at/by, activated_at, state_changed_at/by/
//	                  role, state_reason, prior_state, deletion_after, deleted_at,
//	                  rewrapped_at, encryptions (approximate)
//	reencrypt_jobs    re-encryption job records: one column, key ring, versions,
//	                  state, cursor (last_pk), counters, owner and heartbeat; at
//	                  most one open job per column (jobs.go, package reencrypt)
//	audit_log         the hash chain; audit_head its head; audit_checkpoints
//	schema_migrations applied migrations
//
// The database enforces the lifecycle for every writer, not only this
// package: a partial unique index allows at most one active version per
// ring; a trigger refuses transitions outside the table below, a deletion
// window outside 7–30 days, destroying a version before its window ends,
// changing or resurrecting a deleted version, deleting version or ring
// rows, editing creation data and lowering counters; a deferred trigger
// refuses a commit that leaves a ring without an active version; another
// trigger sends NOTIFY pgcloak_keys '<ring>:<version>:<state>' for every
// new version and state change, in the same transaction. Times are the
// key store's clock (now()).
//
// # States
//
//	active ─rotate─► decrypt_only ⇄ retired ⇄ pending_deletion ─window ended─► deleted
//	  │                   │            │          │ (7–30 days, cancellable)
//	  └───────────────────┴─────┬──────┴──────────┘
//	                            ▼ compromise
//	                        disabled ─re-enable─► decrypt_only | retired
//	                            └─schedule deletion─► pending_deletion
//
//	from              to                        how
//	(new)             active                    EnsureKeyring (version 1), Rotate
//	active            decrypt_only              Rotate: a new version becomes active
//	active            disabled                  Disable: a new version becomes active
//	decrypt_only      retired, disabled         SetState, Disable
//	retired           decrypt_only              SetState (re-enable)
//	retired           pending_deletion          ScheduleDeletion (7–30 days)
//	retired           disabled                  SetState, Disable
//	pending_deletion  retired or disabled       CancelDeletion (back to the prior state)
//	pending_deletion  disabled                  Disable (cancels the deletion)
//	pending_deletion  deleted                   DestroyDue, once the window has ended
//	disabled          decrypt_only, retired     SetState (explicit re-enable)
//	disabled          pending_deletion          ScheduleDeletion
//	deleted           —                         final: the wrapped DEK is gone
//
// Nothing ever becomes active again and version numbers are never reused.
// Only active and decrypt_only versions load (LoadDEK); the others fail
// with ErrKeyRetired, ErrKeyDisabled or ErrKeyDestroyed.
//
// Every change is attributed (StoreOpts.Actor and the database role),
// timestamped, and appended to the audit log in the same transaction.
// RetireForced and ScheduleDeletionForced are the same changes made
// although the caller counted rows still referencing the version (or did
// not count): they add a key.forced entry with the counts.
//
// # Re-encryption jobs
//
// ClaimJob gives a run the open job of a column (creating it, resuming a
// paused or abandoned one, superseding one for other versions, or taking
// over a live one when asked); UpdateJob records the cursor and counters
// after each batch, HeartbeatJob keeps the claim alive, FinishJob ends it.
// A run that lost its job gets ErrJobLost. Starts, ends and takeovers are
// audited (reencrypt.start, reencrypt.finish, reencrypt.force).
//
// # DEKs
//
// 32 bytes from crypto/rand per version, wrapped at once by the ring's KEK
// (hsm.KEK) with associated data DEKAssociatedData(ring id, ring name,
// purpose, version), so a wrapped DEK moved to another version or ring
// fails to unwrap. Plaintext DEKs exist only in memory, in secret.Bytes
// owned by the caller of LoadDEK (keycache).
//
// # Crypto-shredding, and its limits
//
// DestroyDue sets the wrapped DEK to NULL. Copies can outlive that: dead
// tuples until VACUUM reuses the space, WAL and its archive, replicas,
// key-store backups, ExportWrapped files, and proxies' caches until they
// invalidate. Destruction is final once none of those remain together
// with the KEK; re-wrap under a new KEK (RewrapAll) and destroy the old
// one to shred old backups (docs/keys.md §2, §6).
package keyring
