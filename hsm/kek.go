// Package hsm defines the key-encryption key (KEK) interface and hosts its
// providers: hsm/pkcs11 (a real HSM through PKCS#11; SoftHSM2 in tests),
// hsm/awskms and hsm/local (a dev-only key file).
//
// A KEK never leaves its HSM or KMS: pgcloak only asks it to wrap and unwrap
// data-encryption keys (DEKs), always with associated data that binds the
// wrapped DEK to its key ring and version.
package hsm

import (
	"context"
	"errors"

	"github.com/pgcloak/pgcloak/crypto/secret"
)

// KEK wraps and unwraps DEKs. Implementations are safe for concurrent use.
type KEK interface {
	// Wrap encrypts dek under the KEK, authenticating aad. The returned
	// bytes are owned by the caller.
	Wrap(ctx context.Context, dek secret.Bytes, aad []byte) ([]byte, error)
	// Unwrap reverses Wrap. It fails with ErrUnwrap when wrapped or aad
	// were altered, and with an error wrapping ErrUnavailable when the
	// HSM/KMS cannot be reached.
	Unwrap(ctx context.Context, wrapped, aad []byte) (secret.Bytes, error)
}

var (
	// ErrUnwrap: the wrapped key failed authentication (tampered, wrong
	// associated data, or wrapped by another KEK).
	ErrUnwrap = errors.New("hsm: wrapped key failed authentication")
	// ErrUnavailable: the HSM or KMS could not be reached or refused the
	// session; retrying later may succeed.
	ErrUnavailable = errors.New("hsm: key-encryption key unavailable")
)
