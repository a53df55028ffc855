package envelope

import (
	"errors"
	"fmt"
)

var (
	// ErrAuth means the ciphertext did not authenticate: wrong key, wrong
	// column context, or altered bytes. It deliberately says nothing more.
	ErrAuth = errors.New("envelope: message authentication failed")
	// ErrMalformed means the bytes are not a well-formed v1 envelope (bad
	// magic, truncated field, reserved flag bits set). Errors.As a
	// *MalformedError for the field.
	ErrMalformed = errors.New("envelope: malformed ciphertext")
	// ErrUnsupported means a well-formed prefix names a format version or
	// algorithm this build cannot open. Errors.As an *UnsupportedError.
	ErrUnsupported = errors.New("envelope: unsupported ciphertext format")
)

// MalformedError says which field of an envelope is wrong. It never holds
// bytes of the value. It unwraps to ErrMalformed.
type MalformedError struct {
	Field  string // "magic", "version", "algorithm", "flags", "key id", "blind index", "nonce", "tag"
	Reason string // "truncated", "bad magic", "reserved bits set"
}

func (e *MalformedError) Error() string {
	return "envelope: malformed ciphertext: " + e.Field + ": " + e.Reason
}

// Unwrap returns ErrMalformed.
func (e *MalformedError) Unwrap() error { return ErrMalformed }

// UnsupportedError names the header field (format version or algorithm)
// whose value this build does not know. It unwraps to ErrUnsupported.
type UnsupportedError struct {
	Field string // "version" or "algorithm"
	Value byte
}

func (e *UnsupportedError) Error() string {
	return fmt.Sprintf("envelope: unsupported ciphertext format: %s %d", e.Field, e.Value)
}

// Unwrap returns ErrUnsupported.
func (e *UnsupportedError) Unwrap() error { return ErrUnsupported }

// KeyMismatchError is returned by Key.Open when the envelope names another
// key ring or key version than the key's. Such a ciphertext cannot
// authenticate under the key, so it unwraps to ErrAuth; the ids are header
// metadata, not secrets.
type KeyMismatchError struct {
	KeyringID, KeyVersion       uint32 // named by the envelope
	KeyKeyringID, KeyKeyVersion uint32 // of the key used
}

func (e *KeyMismatchError) Error() string {
	return fmt.Sprintf("envelope: message authentication failed: ciphertext names key ring %d version %d, key is key ring %d version %d",
		e.KeyringID, e.KeyVersion, e.KeyKeyringID, e.KeyKeyVersion)
}

// Unwrap returns ErrAuth.
func (e *KeyMismatchError) Unwrap() error { return ErrAuth }

// Malformed errors are static values: parsing hostile input allocates
// nothing on the error path.
var (
	errMagic      = &MalformedError{Field: "magic", Reason: "bad magic"}
	errVersion    = &MalformedError{Field: "version", Reason: "truncated"}
	errAlgorithm  = &MalformedError{Field: "algorithm", Reason: "truncated"}
	errFlags      = &MalformedError{Field: "flags", Reason: "truncated"}
	errFlagBits   = &MalformedError{Field: "flags", Reason: "reserved bits set"}
	errKeyID      = &MalformedError{Field: "key id", Reason: "truncated"}
	errBlindIndex = &MalformedError{Field: "blind index", Reason: "truncated"}
	errNonce      = &MalformedError{Field: "nonce", Reason: "truncated"}
	errTag        = &MalformedError{Field: "tag", Reason: "truncated"}
)
