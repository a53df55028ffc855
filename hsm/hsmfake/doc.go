// Package hsmfake is an in-memory hsm.KEK for the unit tests of other
// packages (keycache, keyring, proxy): no files, no token, no network.
//
// It wraps with real AES-256-GCM under a random key held in memory, in the
// same blob layout as hsm/pkcs11 and hsm/local, so tampering and wrong
// associated data fail with hsm.ErrUnwrap exactly as with a real provider.
// Switches simulate an outage (every call fails with an error wrapping
// hsm.ErrUnavailable), a slow HSM (a delay that honours ctx) or a stalled
// one (Block until released), and counters report how often each method was
// called. Never use it outside tests.
package hsmfake
