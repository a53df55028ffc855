// Package secret holds key bytes in a wrapper that never prints them, copies
// them out only on purpose and compares them in constant time.
package secret

import (
	"crypto/subtle"
	"fmt"
)

// Bytes owns a copy of secret key material. The zero value is empty.
// It formats as "[REDACTED n bytes]" under every fmt verb, so a key that
// slips into a log line or an error message shows nothing.
type Bytes struct {
	b []byte
}

// New copies p into a new Bytes. The caller may zero p afterwards.
func New(p []byte) Bytes {
	c := make([]byte, len(p))
	copy(c, p)
	return Bytes{b: c}
}

// Len reports the number of key bytes.
func (s Bytes) Len() int { return len(s.b) }

// Expose returns the key bytes themselves (not a copy). The slice is owned by
// s and valid until s.Zero is called; callers must not retain or modify it.
func (s Bytes) Expose() []byte { return s.b }

// Equal compares two secrets in constant time (for equal lengths).
func (s Bytes) Equal(o Bytes) bool {
	return len(s.b) == len(o.b) && subtle.ConstantTimeCompare(s.b, o.b) == 1
}

// Zero overwrites the key bytes. Every copy of s shares the same backing
// array, so all of them read zeros afterwards.
func (s Bytes) Zero() {
	clear(s.b)
}

// String implements fmt.Stringer without revealing anything.
func (s Bytes) String() string { return fmt.Sprintf("[REDACTED %d bytes]", len(s.b)) }

// GoString implements fmt.GoStringer for %#v.
func (s Bytes) GoString() string { return s.String() }

// Format implements fmt.Formatter so that %x, %q, %v and friends all redact.
func (s Bytes) Format(f fmt.State, _ rune) { _, _ = f.Write([]byte(s.String())) }

// MarshalText makes encoders (JSON, zerolog) redact as well.
func (s Bytes) MarshalText() ([]byte, error) { return []byte(s.String()), nil }
