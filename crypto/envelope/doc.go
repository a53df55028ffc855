// Package envelope owns pgcloak's versioned ciphertext format: the bytes
// stored in an encrypted column's bytea, and sealing and opening them.
//
// Format v1 (DESIGN.md §4):
//
//	offset size field
//	0      2    magic 0xC1 0x0A
//	2      1    format version = 1
//	3      1    algorithm: 1 = AES-256-GCM
//	4      1    flags (bit 0: blind index present; bits 1-7 reserved, zero)
//	5      4    keyring id (big endian)
//	9      4    key version (big endian)
//	13     16   blind index (only if flag bit 0)
//	..     12   nonce (random)
//	..     n+16 ciphertext || GCM tag
//
// The associated data is the header (bytes 0 up to the nonce) followed by
// the column context string, so a ciphertext moved to another column, or
// with any header byte changed, fails to open.
//
// Use: build one [Key] per data-encryption key version with [NewKey] (the
// AES key schedule is expanded once), then call [Key.Seal] and [Key.Open]
// per value; both append to a caller-supplied buffer and allocate nothing
// else. [ParseHeader] reads and bounds-checks a header without a key, for
// finding the key version a value needs.
//
// Errors: [ErrAuth] (opaque: wrong key, wrong context, tampered bytes),
// [ErrMalformed] (a [*MalformedError] names the field, never value bytes)
// and [ErrUnsupported] (a format version or algorithm this build does not
// know). None of them carries plaintext or key material.
//
// Nonce bound: nonces are 96 random bits, so the probability of a repeat
// after n messages under one key is about n²/2⁹⁷. NIST SP 800-38D caps
// random-nonce GCM at 2³² invocations per key; pgcloak must rotate a key
// version far below that (the key store counts encryptions per version).
// A repeated nonce under one key reveals the XOR of two plaintexts and the
// GHASH key, i.e. lets an attacker forge ciphertexts for that key version.
package envelope
