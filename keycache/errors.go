package keycache

import (
	"errors"
	"fmt"
)

var (
	// ErrKeyUnavailable is wrapped by every error Get returns when it could
	// not produce a key (outage past the budget, version disabled or
	// deleted, unwrap failure …). The proxy maps it to SQLSTATE 58000.
	ErrKeyUnavailable = errors.New("keycache: key unavailable")
	// ErrClosed is returned by Get after Close.
	ErrClosed = errors.New("keycache: closed")
)

// LoadError reports a key version Get could not provide. It unwraps to
// both ErrKeyUnavailable and the loader's (or Prepare's) error, so callers
// can branch on hsm.ErrUnavailable, hsm.ErrUnwrap or a keyring sentinel.
type LoadError struct {
	KeyringID uint32
	Version   uint32
	Err       error
}

func (e *LoadError) Error() string {
	return fmt.Sprintf("keycache: key ring %d version %d unavailable: %v", e.KeyringID, e.Version, e.Err)
}

// Unwrap returns ErrKeyUnavailable and the cause.
func (e *LoadError) Unwrap() []error { return []error{ErrKeyUnavailable, e.Err} }
