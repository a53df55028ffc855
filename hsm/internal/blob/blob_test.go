package blob

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"errors"
	"testing"

	"github.com/pgcloak/pgcloak/hsm"
)

func testAEAD(t testing.TB) cipher.AEAD {
	t.Helper()
	block, err := aes.NewCipher(bytes.Repeat([]byte{7}, 32))
	if err != nil {
		t.Fatal(err)
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		t.Fatal(err)
	}
	return aead
}

func TestParseBounds(t *testing.T) {
	ok := make([]byte, HeaderSize+32+TagSize)
	ok[0] = VersionGCM
	if _, err := Parse(ok); err != nil {
		t.Fatalf("valid layout refused: %v", err)
	}
	bad := [][]byte{
		nil,
		{VersionGCM},
		append([]byte{0x02}, ok[1:]...),
		append([]byte{0x00}, ok[1:]...),
		ok[:HeaderSize+MinDEK+TagSize-1],
		append(bytes.Clone(ok), make([]byte, MaxDEK)...),
	}
	for i, b := range bad {
		if _, err := Parse(b); !errors.Is(err, hsm.ErrUnwrap) {
			t.Errorf("case %d: err = %v, want ErrUnwrap", i, err)
		}
	}
}

func TestSealBindsVersionByte(t *testing.T) {
	aead := testAEAD(t)
	dek := bytes.Repeat([]byte{1}, 32)
	b, err := Seal(aead, dek, []byte("aad"))
	if err != nil {
		t.Fatal(err)
	}
	// Opening the raw GCM part with the caller's aad alone (no version byte)
	// must fail: the header is authenticated.
	if _, err := aead.Open(nil, b[1:HeaderSize], b[HeaderSize:], []byte("aad")); err == nil {
		t.Fatal("version byte is not part of the GCM associated data")
	}
	pt, err := Open(aead, b, []byte("aad"))
	if err != nil || !bytes.Equal(pt, dek) {
		t.Fatalf("round trip: %v", err)
	}
}

func FuzzOpen(f *testing.F) {
	aead := testAEAD(f)
	good, err := Seal(aead, bytes.Repeat([]byte{9}, 32), []byte("fuzz"))
	if err != nil {
		f.Fatal(err)
	}
	f.Add(good, []byte("fuzz"))
	f.Add([]byte{}, []byte{})
	f.Add([]byte{VersionGCM, 0, 0}, []byte("x"))
	f.Fuzz(func(t *testing.T, b, aad []byte) {
		pt, err := Open(aead, b, aad)
		if err != nil {
			if !errors.Is(err, hsm.ErrUnwrap) {
				t.Fatalf("error is not ErrUnwrap: %v", err)
			}
			return
		}
		if len(pt) < MinDEK || len(pt) > MaxDEK {
			t.Fatalf("opened a %d-byte DEK", len(pt))
		}
	})
}
