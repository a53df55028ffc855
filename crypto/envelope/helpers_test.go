package envelope

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"testing"

	"github.com/pgcloak/pgcloak/crypto/secret"
)

// testDEK derives a fixed 32-byte test key from a label. Test keys only:
// deterministic so that sealed vectors are reproducible.
func testDEK(label string) secret.Bytes {
	sum := sha256.Sum256([]byte("pgcloak envelope test key: " + label))
	return secret.New(sum[:])
}

func mustKey(t testing.TB, ring, version uint32, dek secret.Bytes) *Key {
	t.Helper()
	k, err := NewKey(ring, version, dek)
	if err != nil {
		t.Fatalf("NewKey: %v", err)
	}
	return k
}

func mustHex(t testing.TB, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(s)
	if err != nil {
		t.Fatalf("bad hex %q: %v", s, err)
	}
	return b
}

// nonceReader yields exactly the given bytes: a fixed nonce for one Seal.
func nonceReader(nonce []byte) *bytes.Reader { return bytes.NewReader(nonce) }

// sealed seals plaintext with a fixed all-0x42 nonce (tests that need a
// deterministic envelope) and fails the test on error.
func sealed(t testing.TB, k *Key, blind []byte, context string, plaintext []byte) []byte {
	t.Helper()
	env, err := k.seal(nonceReader(bytes.Repeat([]byte{0x42}, NonceSize)), nil, blind, context, plaintext)
	if err != nil {
		t.Fatalf("seal: %v", err)
	}
	return env
}
