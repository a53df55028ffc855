package pkcs11

import (
	"bytes"
	"context"
	"errors"
	"testing"

	p11 "github.com/miekg/pkcs11"

	"github.com/pgcloak/pgcloak/hsm"
	"github.com/pgcloak/pgcloak/hsm/internal/blob"
)

func TestRoundTrip(t *testing.T) {
	p, _ := newProvider(t, nil)
	ctx := context.Background()
	dek := randomDEK(t)
	aad := []byte("keyring=3/version=9")
	w, err := p.Wrap(ctx, dek, aad)
	if err != nil {
		t.Fatalf("Wrap: %v", err)
	}
	if len(w) != blob.HeaderSize+32+blob.TagSize || w[0] != blob.VersionGCM {
		t.Fatalf("blob: %d bytes, version %#x", len(w), w[0])
	}
	if bytes.Contains(w, dek.Expose()) {
		t.Fatal("blob contains the DEK in clear")
	}
	got, err := p.Unwrap(ctx, w, aad)
	if err != nil {
		t.Fatalf("Unwrap: %v", err)
	}
	if !got.Equal(dek) {
		t.Fatal("unwrapped DEK differs")
	}
	w2, err := p.Wrap(ctx, dek, aad)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Equal(w[1:blob.HeaderSize], w2[1:blob.HeaderSize]) {
		t.Fatal("two wraps used the same IV")
	}
}

func TestWrongAAD(t *testing.T) {
	p, _ := newProvider(t, nil)
	ctx := context.Background()
	w, err := p.Wrap(ctx, randomDEK(t), []byte("keyring=1/version=1"))
	if err != nil {
		t.Fatal(err)
	}
	for _, aad := range [][]byte{nil, []byte("keyring=1/version=2"), []byte("keyring=2/version=1")} {
		_, err := p.Unwrap(ctx, w, aad)
		if !errors.Is(err, hsm.ErrUnwrap) {
			t.Errorf("aad %q: err = %v, want ErrUnwrap", aad, err)
		}
		if errors.Is(err, hsm.ErrUnavailable) {
			t.Errorf("aad %q: authentication failure reported as unavailable", aad)
		}
	}
	// The provider still works after failed unwraps (sessions reusable).
	if _, err := p.Unwrap(ctx, w, []byte("keyring=1/version=1")); err != nil {
		t.Fatal(err)
	}
}

func TestTamper(t *testing.T) {
	p, _ := newProvider(t, nil)
	ctx := context.Background()
	aad := []byte("a")
	w, err := p.Wrap(ctx, randomDEK(t), aad)
	if err != nil {
		t.Fatal(err)
	}
	// One bit in every byte (all bits of all bytes is covered by hsm/local
	// and costs ~500 token calls here).
	for i := range w {
		bad := bytes.Clone(w)
		bad[i] ^= 1 << (i % 8)
		if _, err := p.Unwrap(ctx, bad, aad); !errors.Is(err, hsm.ErrUnwrap) {
			t.Fatalf("byte %d flipped: err = %v, want ErrUnwrap", i, err)
		}
	}
	for _, n := range []int{0, 1, blob.HeaderSize, len(w) - blob.TagSize, len(w) - 1} {
		if _, err := p.Unwrap(ctx, w[:n], aad); !errors.Is(err, hsm.ErrUnwrap) {
			t.Fatalf("truncated to %d: err = %v, want ErrUnwrap", n, err)
		}
	}
	if _, err := p.Unwrap(ctx, append(bytes.Clone(w), 0), aad); !errors.Is(err, hsm.ErrUnwrap) {
		t.Fatalf("extended by one byte: err = %v, want ErrUnwrap", err)
	}
}

// TestTokenRejectsTag bypasses blob.Parse and hands the token a bad tag, so
// the token's own return code is mapped (the mapping table is exercised, not
// just our parser).
func TestTokenRejectsTag(t *testing.T) {
	p, _ := newProvider(t, nil)
	ctx := context.Background()
	w, err := p.Wrap(ctx, randomDEK(t), []byte("x"))
	if err != nil {
		t.Fatal(err)
	}
	w[len(w)-1] ^= 0x80
	_, err = p.Unwrap(ctx, w, []byte("x"))
	var pe *Error
	if !errors.As(err, &pe) || pe.Op != "C_Decrypt" || !errors.Is(err, hsm.ErrUnwrap) {
		t.Fatalf("err = %v, want a C_Decrypt *Error matching ErrUnwrap", err)
	}
	t.Logf("SoftHSM2 reports a bad GCM tag as: %v", err)
}

func TestOtherKeyCannotUnwrap(t *testing.T) {
	p, tk := newProvider(t, nil)
	ctx := context.Background()
	if _, err := p.Token().CreateKey(ctx, "other"); err != nil {
		t.Fatal(err)
	}
	q, err := New(ctx, optsFor(tk, "other"))
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	w, err := p.Wrap(ctx, randomDEK(t), []byte("x"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := q.Unwrap(ctx, w, []byte("x")); !errors.Is(err, hsm.ErrUnwrap) {
		t.Fatalf("err = %v, want ErrUnwrap", err)
	}
	// q closed above shares the module and the login with p: p must still
	// work after q.Close (no logout, no finalize underneath it).
	q.Close()
	if _, err := p.Unwrap(ctx, w, []byte("x")); err != nil {
		t.Fatalf("p after closing q: %v", err)
	}
}

func TestKeyIsNonExtractable(t *testing.T) {
	tk := newToken(t, "pgcloak")
	tok := openToken(t, tk)
	ctx := context.Background()
	ki, err := tok.CreateKey(ctx, testKeyLabel)
	if err != nil {
		t.Fatal(err)
	}
	want := KeyInfo{
		Label: testKeyLabel, ID: ki.ID, Bits: 256,
		Token: true, Private: true, Sensitive: true, Extractable: false,
		AlwaysSensitive: true, NeverExtractable: true,
		Encrypt: true, Decrypt: true, Wrap: false, Unwrap: false,
	}
	if ki != want {
		t.Fatalf("KeyInfo = %+v\nwant      %+v", ki, want)
	}
	if len(ki.ID) != 32 {
		t.Fatalf("CKA_ID %q is not 16 bytes", ki.ID)
	}
	again, err := tok.KeyInfo(ctx, testKeyLabel)
	if err != nil || again != ki {
		t.Fatalf("KeyInfo after create: %+v, %v", again, err)
	}

	h := rawSession(t, tok)
	k, err := tok.findKey(h, testKeyLabel, false)
	if err != nil {
		t.Fatal(err)
	}
	// Reading the key value must be refused by the token.
	_, err = tok.ctx.GetAttributeValue(h, k, []*p11.Attribute{p11.NewAttribute(p11.CKA_VALUE, nil)})
	if !isCode(err, p11.CKR_ATTRIBUTE_SENSITIVE) {
		t.Fatalf("reading CKA_VALUE: err = %v, want CKR_ATTRIBUTE_SENSITIVE", err)
	}
	// Exporting it under another key must be refused as well.
	wrapKey, err := tok.ctx.GenerateKey(h, []*p11.Mechanism{p11.NewMechanism(p11.CKM_AES_KEY_GEN, nil)}, []*p11.Attribute{
		p11.NewAttribute(p11.CKA_CLASS, p11.CKO_SECRET_KEY),
		p11.NewAttribute(p11.CKA_KEY_TYPE, p11.CKK_AES),
		p11.NewAttribute(p11.CKA_VALUE_LEN, 32),
		p11.NewAttribute(p11.CKA_TOKEN, false),
		p11.NewAttribute(p11.CKA_WRAP, true),
	})
	if err != nil {
		t.Fatal(err)
	}
	_, err = tok.ctx.WrapKey(h, []*p11.Mechanism{p11.NewMechanism(p11.CKM_AES_KEY_WRAP_PAD, nil)}, wrapKey, k)
	if !isCode(err, p11.CKR_KEY_UNEXTRACTABLE) {
		t.Fatalf("C_WrapKey of the KEK: err = %v, want CKR_KEY_UNEXTRACTABLE", err)
	}
	// Attempting to make it extractable afterwards must fail too.
	err = tok.ctx.SetAttributeValue(h, k, []*p11.Attribute{p11.NewAttribute(p11.CKA_EXTRACTABLE, true)})
	if err == nil {
		t.Fatal("CKA_EXTRACTABLE could be switched on")
	}
}

func TestCreateKeyRefusesExistingLabel(t *testing.T) {
	tk := newToken(t, "pgcloak")
	tok := openToken(t, tk)
	ctx := context.Background()
	first, err := tok.CreateKey(ctx, testKeyLabel)
	if err != nil {
		t.Fatal(err)
	}
	_, err = tok.CreateKey(ctx, testKeyLabel)
	if !errors.Is(err, ErrKeyExists) {
		t.Fatalf("second CreateKey: err = %v, want ErrKeyExists", err)
	}
	mustContain(t, err, testKeyLabel)
	// The original key is untouched (same CKA_ID) and unique.
	h := rawSession(t, tok)
	if _, err := tok.findKey(h, testKeyLabel, false); err != nil {
		t.Fatalf("after refused create: %v", err)
	}
	ki, err := tok.KeyInfo(ctx, testKeyLabel)
	if err != nil || ki.ID != first.ID {
		t.Fatalf("key changed: %+v, %v", ki, err)
	}
}

func TestWrongPIN(t *testing.T) {
	tk := newToken(t, "pgcloak")
	tok := openToken(t, tk)
	if _, err := tok.CreateKey(context.Background(), testKeyLabel); err != nil {
		t.Fatal(err)
	}
	// Close so that the token is logged out and the next login is checked.
	tok.Close()
	opts := optsFor(tk, testKeyLabel)
	wrong := "wrong-" + tk.PIN[:6]
	opts.PIN = secretOf(wrong)
	_, err := New(context.Background(), opts)
	if !isCode(err, p11.CKR_PIN_INCORRECT) {
		t.Fatalf("err = %v, want CKR_PIN_INCORRECT", err)
	}
	mustContain(t, err, "PIN is incorrect", "C_Login", `"pgcloak"`)
	if errors.Is(err, hsm.ErrUnavailable) {
		t.Fatal("a wrong PIN at startup is a configuration error, not an outage")
	}
	for _, s := range []string{wrong, tk.PIN} {
		if bytes.Contains([]byte(err.Error()), []byte(s)) {
			t.Fatal("error message contains a PIN")
		}
	}
	opts.PIN = secretOf("")
	if _, err := New(context.Background(), opts); err == nil {
		t.Fatal("empty PIN accepted")
	}
}

func TestMissingKeyAndToken(t *testing.T) {
	tk := newToken(t, "pgcloak")
	_, err := New(context.Background(), optsFor(tk, "no-such-key"))
	if !errors.Is(err, ErrKeyNotFound) {
		t.Fatalf("err = %v, want ErrKeyNotFound", err)
	}
	mustContain(t, err, `"no-such-key"`, "pgcloak kek create")

	opts := optsFor(tk, testKeyLabel)
	opts.TokenLabel = "no-such-token"
	_, err = New(context.Background(), opts)
	if !errors.Is(err, ErrTokenNotFound) {
		t.Fatalf("err = %v, want ErrTokenNotFound", err)
	}
	mustContain(t, err, `"no-such-token"`, `"pgcloak"`)

	opts = optsFor(tk, testKeyLabel)
	opts.Module = tk.Dir + "/not-a-module.so"
	_, err = New(context.Background(), opts)
	mustContain(t, err, "cannot load module")
}

func TestPolicyRefusesExtractableKey(t *testing.T) {
	tk := newToken(t, "pgcloak")
	tok := openToken(t, tk)
	h := rawSession(t, tok)
	_, err := tok.ctx.GenerateKey(h, []*p11.Mechanism{p11.NewMechanism(p11.CKM_AES_KEY_GEN, nil)}, []*p11.Attribute{
		p11.NewAttribute(p11.CKA_CLASS, p11.CKO_SECRET_KEY),
		p11.NewAttribute(p11.CKA_KEY_TYPE, p11.CKK_AES),
		p11.NewAttribute(p11.CKA_VALUE_LEN, 32),
		p11.NewAttribute(p11.CKA_LABEL, "exportable"),
		p11.NewAttribute(p11.CKA_TOKEN, true),
		p11.NewAttribute(p11.CKA_PRIVATE, true),
		p11.NewAttribute(p11.CKA_SENSITIVE, true),
		p11.NewAttribute(p11.CKA_EXTRACTABLE, true),
		p11.NewAttribute(p11.CKA_ENCRYPT, true),
		p11.NewAttribute(p11.CKA_DECRYPT, true),
	})
	if err != nil {
		t.Fatal(err)
	}
	_, err = New(context.Background(), optsFor(tk, "exportable"))
	if !errors.Is(err, ErrKeyPolicy) {
		t.Fatalf("err = %v, want ErrKeyPolicy", err)
	}
	mustContain(t, err, "CKA_EXTRACTABLE=true")
	opts := optsFor(tk, "exportable")
	opts.AllowExtractableKey = true
	p, err := New(context.Background(), opts)
	if err != nil {
		t.Fatalf("with AllowExtractableKey: %v", err)
	}
	p.Close()
}

func TestClose(t *testing.T) {
	tk := newToken(t, "pgcloak")
	tok, err := OpenToken(context.Background(), optsFor(tk, ""))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tok.CreateKey(context.Background(), testKeyLabel); err != nil {
		t.Fatal(err)
	}
	tok.Close()
	p, err := New(context.Background(), optsFor(tk, testKeyLabel))
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := p.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if _, err := p.Wrap(context.Background(), randomDEK(t), nil); !errors.Is(err, ErrClosed) {
		t.Fatalf("Wrap after Close: %v", err)
	}
	registry.Lock()
	n := len(registry.mods)
	registry.Unlock()
	if n != 0 {
		t.Fatalf("%d modules still loaded after the last Close", n)
	}
}
