package envelope

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"sync"

	"github.com/pgcloak/pgcloak/crypto/secret"
)

// MaxPlaintextSize bounds a sealed value: a PostgreSQL bytea holds at most
// 1 GiB, far below the AES-GCM limit of about 64 GiB per message.
const MaxPlaintextSize = 1<<30 - MaxHeaderSize - NonceSize - TagSize

var errBlindIndexSize = errors.New("envelope: blind index must be empty or exactly 16 bytes")

// Key is one data-encryption key version, prepared for sealing and opening:
// the AES-256 key schedule is expanded once, in NewKey. A Key is immutable
// and safe for concurrent use by any number of goroutines, and it stays
// valid for as long as the caller holds it (nothing zeroes it from under
// its users).
//
// A Key keeps no copy of the raw key bytes; the expanded schedule lives in
// crypto/aes, which offers no way to wipe it, so it is reclaimed by the
// garbage collector once the last reference to the Key is dropped.
type Key struct {
	keyringID uint32
	version   uint32
	aead      cipher.AEAD
}

// NewKey prepares dek, a 32-byte AES-256 key, as key version version of key
// ring keyringID. NewKey does not retain dek: the caller may, and should,
// call dek.Zero once NewKey returns.
func NewKey(keyringID, version uint32, dek secret.Bytes) (*Key, error) {
	if dek.Len() != KeySize {
		return nil, fmt.Errorf("envelope: key ring %d version %d: key is %d bytes, want %d", keyringID, version, dek.Len(), KeySize)
	}
	block, err := aes.NewCipher(dek.Expose())
	if err != nil {
		return nil, fmt.Errorf("envelope: key ring %d version %d: %w", keyringID, version, err)
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, fmt.Errorf("envelope: key ring %d version %d: %w", keyringID, version, err)
	}
	return &Key{keyringID: keyringID, version: version, aead: aead}, nil
}

// KeyringID returns the key ring id written into every envelope k seals.
func (k *Key) KeyringID() uint32 { return k.keyringID }

// Version returns the key version written into every envelope k seals.
func (k *Key) Version() uint32 { return k.version }

// String describes k without any key material.
func (k Key) String() string {
	return fmt.Sprintf("envelope.Key(key ring %d version %d)", k.keyringID, k.version)
}

// Format makes every fmt verb (%v, %+v, %#v, %x …) print String, so that
// the expanded key schedule can never be dumped by a log line.
func (k Key) Format(f fmt.State, _ rune) { _, _ = io.WriteString(f, k.String()) }

// Seal encrypts plaintext under k, appends the envelope to dst and returns
// the extended slice (dst is reallocated only if its capacity is short;
// nothing else is allocated). blindIndex is empty (no blind index) or
// exactly 16 bytes; context is the column context (e.g.
// "public.customers.ssn") that Open must be given again.
//
// The nonce comes from crypto/rand. plaintext must not overlap the spare
// capacity of dst. On error dst is returned unchanged.
func (k *Key) Seal(dst, blindIndex []byte, context string, plaintext []byte) ([]byte, error) {
	return k.seal(nil, dst, blindIndex, context, plaintext)
}

// seal is Seal with the nonce read from r (crypto/rand when r is nil).
// Only tests pass a reader: a caller-controlled nonce is a way to reuse one,
// so it is not exported.
func (k *Key) seal(r io.Reader, dst, blindIndex []byte, context string, plaintext []byte) ([]byte, error) {
	h := Header{KeyringID: k.keyringID, KeyVersion: k.version}
	switch len(blindIndex) {
	case 0:
	case BlindIndexSize:
		h.HasBlindIndex = true
		copy(h.BlindIndex[:], blindIndex)
	default:
		return dst, errBlindIndexSize
	}
	if len(plaintext) > MaxPlaintextSize {
		return dst, fmt.Errorf("envelope: plaintext of %d bytes exceeds the maximum of %d", len(plaintext), MaxPlaintextSize)
	}
	hl := h.Len()
	ret, out := sliceForAppend(dst, h.SealedLen(len(plaintext)))
	AppendHeader(out[:0], h)
	nonce := out[hl : hl+NonceSize]
	if r == nil {
		_, _ = rand.Read(nonce) // never fails (Go ≥ 1.24 crashes instead)
	} else if _, err := io.ReadFull(r, nonce); err != nil {
		return dst, fmt.Errorf("envelope: read nonce: %w", err)
	}
	buf := getAAD(out[:hl], context)
	k.aead.Seal(out[hl+NonceSize:hl+NonceSize], nonce, plaintext, *buf)
	putAAD(buf)
	return ret, nil
}

// Open authenticates and decrypts the envelope env sealed with context,
// appends the plaintext to dst and returns the extended slice (dst is
// reallocated only if its capacity is short; nothing else is allocated on
// success). dst's spare capacity must not overlap env. On error dst is
// returned unchanged.
//
// Errors: ErrMalformed / ErrUnsupported from parsing the header (as
// ParseHeader); *KeyMismatchError (wrapping ErrAuth) when env names another
// key ring or version; ErrAuth when authentication fails.
func (k *Key) Open(dst, env []byte, context string) ([]byte, error) {
	h, hl, err := parseHeader(env)
	if err != nil {
		return dst, err
	}
	if h.KeyringID != k.keyringID || h.KeyVersion != k.version {
		return dst, &KeyMismatchError{
			KeyringID: h.KeyringID, KeyVersion: h.KeyVersion,
			KeyKeyringID: k.keyringID, KeyKeyVersion: k.version,
		}
	}
	buf := getAAD(env[:hl], context)
	out, err := k.aead.Open(dst, env[hl:hl+NonceSize], env[hl+NonceSize:], *buf)
	putAAD(buf)
	if err != nil {
		return dst, ErrAuth
	}
	return out, nil
}

// aadPool holds scratch buffers for header || context, so that the AEAD
// (called through an interface, which makes its arguments escape) does not
// cost an allocation per value.
var aadPool = sync.Pool{New: func() any { b := make([]byte, 0, 256); return &b }}

const maxPooledAAD = 4096

func getAAD(header []byte, context string) *[]byte {
	buf := aadPool.Get().(*[]byte)
	b := append((*buf)[:0], header...)
	*buf = append(b, context...)
	return buf
}

func putAAD(buf *[]byte) {
	if cap(*buf) <= maxPooledAAD {
		aadPool.Put(buf)
	}
}

// sliceForAppend extends in by n bytes, reallocating only when its capacity
// is short, and returns the whole slice and the n-byte tail.
func sliceForAppend(in []byte, n int) (head, tail []byte) {
	if total := len(in) + n; cap(in) >= total {
		head = in[:total]
	} else {
		head = make([]byte, total)
		copy(head, in)
	}
	return head, head[len(in):]
}
