// Package keys hands the proxy its data keys: the active version of a
// classification's encryption key ring for writes, any readable version
// named by a ciphertext header for reads, and the encryption counters
// (DESIGN.md §5, §8).
//
// A Source sits between the key store (keyring.Store) and the proxy. It
// does not import the proxy: *Source has the method set of
// proxy.KeySource, and cmd/pgcloak wires the two (mapping
// keyring.ErrKeyDestroyed onto proxy.ErrKeyDestroyed).
//
// # Keys
//
// Unwrapped keys live in a keycache.Cache[*envelope.Key] owned by the
// Source, loaded through the key store with keyring.LoaderOpts{Purpose:
// keyring.PurposeEncryption}: search and audit rings are refused, and only
// active and decrypt_only versions load (disabled, retired, pending
// deletion and deleted versions fail with the keyring sentinels, wrapped
// in keycache.ErrKeyUnavailable). The cache applies its TTL and outage
// budget (see keycache).
//
// # The active version
//
// Key rings are named after their classification (DESIGN.md §3), so the
// encryption ring of classification "confidential" is "confidential".
// The Source remembers, per ring, which version is active (ring id and
// version) for Opts.ActiveTTL (5 s) and then asks the key store again.
// When the key it took for active fails to load for a definitive reason
// (the version was disabled or retired meanwhile), it re-reads the active
// version at once. While the key store is unreachable it keeps using the
// version it last saw active, for at most Opts.OutageBudget past
// ActiveTTL, retrying at most once per second; then writes fail.
//
// # Staying current
//
// Run listens on keyring.NotifyChannel on a connection of its own, taken
// from the key store's pool. A notification is only a hint (any role can
// NOTIFY): the Source invalidates the named version in the key cache,
// forgets the ring's active version, and re-reads that ring's versions
// from the key store, invalidating every version whose state changed.
// A state change such as disabling a version thus takes effect within
// about a second on every proxy. As a fallback for lost notifications
// (listener reconnecting, a proxy partitioned from the key store) Run
// re-reads every version's state every Opts.PollInterval (30 s) and after
// every (re)connection of the listener.
//
// Run also flushes the encryption counters (keyring.Store.Flush) every
// Opts.FlushInterval; Close flushes them one last time.
//
// No method logs key material, and no error carries any.
package keys
