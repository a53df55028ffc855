package blob

import (
	"crypto/cipher"
	"crypto/rand"
	"fmt"

	"github.com/pgcloak/pgcloak/hsm"
)

// Format version bytes of wrapped DEKs, for every provider (one registry so
// that two providers never reuse a number). Written out: they are stored
// forever.
const (
	// VersionGCM is AES-256-GCM with a 12-byte IV and a 16-byte tag
	// (hsm/pkcs11, hsm/local, hsm/hsmfake).
	VersionGCM byte = 0x01
	// VersionKMS prefixes an AWS KMS CiphertextBlob (hsm/awskms).
	VersionKMS byte = 0x02
)

const (
	// IVSize is the GCM IV length of VersionGCM.
	IVSize = 12
	// TagSize is the GCM tag length of VersionGCM in bytes.
	TagSize = 16
	// HeaderSize is version byte + IV.
	HeaderSize = 1 + IVSize
	// MinDEK and MaxDEK bound the wrapped plaintext: pgcloak's DEKs are 32
	// bytes; anything outside these bounds is refused before allocation.
	MinDEK = 16
	MaxDEK = 64
)

// CheckDEK validates the length of a key about to be wrapped.
func CheckDEK(n int) error {
	if n < MinDEK || n > MaxDEK {
		return fmt.Errorf("DEK must be %d to %d bytes, got %d", MinDEK, MaxDEK, n)
	}
	return nil
}

// NewIV returns a fresh random IV.
func NewIV() ([]byte, error) {
	iv := make([]byte, IVSize)
	if _, err := rand.Read(iv); err != nil {
		return nil, fmt.Errorf("read random IV: %w", err)
	}
	return iv, nil
}

// AAD returns the GCM associated data for version v: v || aad. The result is
// a new slice owned by the caller.
func AAD(v byte, aad []byte) []byte {
	out := make([]byte, 0, 1+len(aad))
	out = append(out, v)
	return append(out, aad...)
}

// Append appends a VersionGCM blob (header, then ct, which already carries
// the tag) to dst and returns the extended slice.
func Append(dst, iv, ct []byte) []byte {
	dst = append(dst, VersionGCM)
	dst = append(dst, iv...)
	return append(dst, ct...)
}

// Parsed is a VersionGCM blob split into its fields. Its slices alias the
// input passed to Parse.
type Parsed struct {
	Version byte
	IV      []byte
	CT      []byte // ciphertext || tag
}

// Parse splits a blob. Every malformed input (empty, unknown version, too
// short, too long) fails with hsm.ErrUnwrap: to a caller, a blob that cannot
// be parsed is a blob that failed authentication.
func Parse(b []byte) (Parsed, error) {
	if len(b) == 0 {
		return Parsed{}, hsm.ErrUnwrap
	}
	if b[0] != VersionGCM {
		return Parsed{}, hsm.ErrUnwrap
	}
	n := len(b) - HeaderSize - TagSize
	if n < MinDEK || n > MaxDEK {
		return Parsed{}, hsm.ErrUnwrap
	}
	return Parsed{Version: b[0], IV: b[1:HeaderSize], CT: b[HeaderSize:]}, nil
}

// Seal wraps dek with a software AEAD (AES-256-GCM with a 12-byte nonce),
// producing a VersionGCM blob.
func Seal(aead cipher.AEAD, dek, aad []byte) ([]byte, error) {
	if err := CheckDEK(len(dek)); err != nil {
		return nil, err
	}
	if aead.NonceSize() != IVSize || aead.Overhead() != TagSize {
		return nil, fmt.Errorf("AEAD must use a %d-byte nonce and a %d-byte tag", IVSize, TagSize)
	}
	iv, err := NewIV()
	if err != nil {
		return nil, err
	}
	out := make([]byte, 0, HeaderSize+len(dek)+TagSize)
	out = append(out, VersionGCM)
	out = append(out, iv...)
	return aead.Seal(out, iv, dek, AAD(VersionGCM, aad)), nil
}

// Open reverses Seal. Any failure is hsm.ErrUnwrap. The returned slice is
// newly allocated; the caller moves it into a secret.Bytes and zeroes it.
func Open(aead cipher.AEAD, b, aad []byte) ([]byte, error) {
	p, err := Parse(b)
	if err != nil {
		return nil, err
	}
	pt, err := aead.Open(nil, p.IV, p.CT, AAD(p.Version, aad))
	if err != nil {
		return nil, hsm.ErrUnwrap
	}
	return pt, nil
}
