// Package blob is the versioned layout of a wrapped DEK shared by the
// AES-GCM providers (hsm/pkcs11, hsm/local, hsm/hsmfake):
//
//	offset size  field
//	0      1     format version: 0x01 = AES-256-GCM, 96-bit IV, 128-bit tag
//	1      12    IV (random, from crypto/rand)
//	13     n+16  GCM ciphertext || tag
//
// The GCM associated data is the version byte followed by the caller's
// associated data, so the header is authenticated as well. A future format
// gets a new version byte; parsers keep accepting the old ones.
package blob
