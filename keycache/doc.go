// Package keycache keeps unwrapped data-encryption keys (DEKs), prepared
// for use, in a bounded LRU (golang-lru/v2) keyed by (key ring id, key
// version), so that the proxy's hot path never waits on the key store or
// the HSM/KMS.
//
// # Loading
//
// On a miss the cache asks its Loader (declared here; the keyring package
// implements it by fetching the wrapped DEK and calling hsm.KEK.Unwrap).
// Concurrent misses for one key share a single load (singleflight). A load
// runs detached from the cancellation of the Get that started it, bounded
// by Opts.LoadTimeout, so one impatient caller cannot fail the others; each
// waiting Get still returns as soon as its own ctx is done.
//
// # Freshness and the outage budget
//
// An entry is fresh for Opts.TTL after it was loaded; after that the next
// Get reloads it. If that reload fails with an error wrapping
// hsm.ErrUnavailable (HSM/KMS or key store unreachable, or the load timed
// out), the expired entry keeps serving until TTL+OutageBudget after its
// load time, retrying the loader at most once per Opts.RetryInterval; past
// that, Get fails with an error wrapping ErrKeyUnavailable (SQLSTATE 58000
// at the client boundary). Any other load failure (version disabled or
// deleted, hsm.ErrUnwrap, …) is definitive: the entry is evicted and Get
// fails. The next successful load restores service; no restart is needed.
// Within its TTL an entry is served without asking the loader: use
// Invalidate to make a state change (disable, delete) take effect at once.
//
// # Ownership and zeroisation
//
// The cache never holds raw key bytes beyond one load. The secret.Bytes a
// Loader returns belongs to the cache, which passes it to Opts.Prepare
// (which must not retain it; envelope.NewKey expands it into the AES key
// schedule) and zeroes it as soon as Prepare returns, whether Prepare
// succeeded or not; a failed load's bytes are zeroed too.
//
// The cache stores and hands out only the prepared value K (typically an
// *envelope.Key). A K returned by Get belongs to the caller for as long as
// the caller holds it: eviction, invalidation, refresh and Close only drop
// the cache's reference and never modify or zero a K, so a key in use can
// never be wiped under its user, and there is nothing to release. The
// expanded key schedule inside a K becomes garbage once the last reference
// is gone (Go's crypto/aes offers no way to wipe it). Callers should not
// keep a K beyond the operation at hand: call Get per statement or value (a
// hit costs about 100 ns and allocates nothing) so that invalidation and
// TTL take effect.
//
// No method logs, and no error carries key material.
package keycache
