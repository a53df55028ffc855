package pkcs11

import (
	"bytes"
	"context"
	"crypto/aes"
	"crypto/cipher"
	"encoding/hex"
	"testing"

	p11 "github.com/miekg/pkcs11"

	"github.com/pgcloak/pgcloak/hsm/internal/blob"
)

// The hsm/local committed vector (computed independently with Python's
// cryptography AESGCM): key 00..1f, IV cafebabefacedbaddecaf888, DEK a0..bf,
// associated data "pgcloak vector aad", GCM associated data 0x01 || aad.
const (
	vectorKeyHex  = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f"
	vectorDEKHex  = "a0a1a2a3a4a5a6a7a8a9aaabacadaeafb0b1b2b3b4b5b6b7b8b9babbbcbdbebf"
	vectorBlobHex = "01cafebabefacedbaddecaf8882a0202850edfe9bceea2f776d7b02790bd9172e26bacdcc3f666beca0234db402fc957ea9f7d6f6acb60a9d569a2f31d"
	vectorAAD     = "pgcloak vector aad"
)

func unhex(t *testing.T, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestCommittedVector imports a known AES key into the token (sensitive,
// non-extractable, so New accepts it) and checks the format both ways: the
// token unwraps the committed blob, and a blob the token wraps opens with
// Go's own AES-GCM and the documented layout.
func TestCommittedVector(t *testing.T) {
	tk := newToken(t, "pgcloak")
	tok := openToken(t, tk)
	h := rawSession(t, tok)
	key := unhex(t, vectorKeyHex)
	_, err := tok.ctx.CreateObject(h, []*p11.Attribute{
		p11.NewAttribute(p11.CKA_CLASS, p11.CKO_SECRET_KEY),
		p11.NewAttribute(p11.CKA_KEY_TYPE, p11.CKK_AES),
		p11.NewAttribute(p11.CKA_VALUE, key),
		p11.NewAttribute(p11.CKA_LABEL, "vector"),
		p11.NewAttribute(p11.CKA_TOKEN, true),
		p11.NewAttribute(p11.CKA_PRIVATE, true),
		p11.NewAttribute(p11.CKA_SENSITIVE, true),
		p11.NewAttribute(p11.CKA_EXTRACTABLE, false),
		p11.NewAttribute(p11.CKA_ENCRYPT, true),
		p11.NewAttribute(p11.CKA_DECRYPT, true),
	})
	if err != nil {
		t.Fatalf("import vector key: %v", err)
	}
	p, err := New(context.Background(), optsFor(tk, "vector"))
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	ctx := context.Background()

	got, err := p.Unwrap(ctx, unhex(t, vectorBlobHex), []byte(vectorAAD))
	if err != nil {
		t.Fatalf("committed vector does not unwrap on the token: %v", err)
	}
	if !bytes.Equal(got.Expose(), unhex(t, vectorDEKHex)) {
		t.Fatal("committed vector unwraps to another DEK")
	}

	w, err := p.Wrap(ctx, got, []byte(vectorAAD))
	if err != nil {
		t.Fatal(err)
	}
	block, _ := aes.NewCipher(key)
	aead, _ := cipher.NewGCM(block)
	pt, err := aead.Open(nil, w[1:blob.HeaderSize], w[blob.HeaderSize:], append([]byte{0x01}, vectorAAD...))
	if w[0] != 0x01 || err != nil || !bytes.Equal(pt, unhex(t, vectorDEKHex)) {
		t.Fatalf("token output does not follow the documented layout: version %#x, %v", w[0], err)
	}
}
