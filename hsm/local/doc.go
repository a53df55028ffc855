// Package local is a development-only KEK kept in a file: 32 random bytes
// written as 64 hexadecimal characters (a trailing newline is allowed).
//
// The key sits in process memory and on disk, so it protects nothing against
// whoever can read that file; config check refuses it for the confidential
// and restricted classifications. It exists so that `pgcloak dev` and tests
// run without an HSM.
//
// Wrapped DEKs use the same versioned layout as hsm/pkcs11 (version byte ||
// 12-byte IV || AES-256-GCM ciphertext || 16-byte tag, the GCM associated
// data being the version byte followed by the caller's associated data), so a
// blob from one provider simply fails authentication under another.
//
// The key file must be a regular file that neither its group nor others can
// read, write or execute (mode 0600 or stricter); New refuses anything else.
package local
