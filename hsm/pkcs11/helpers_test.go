package pkcs11

import (
	"context"
	"crypto/rand"
	"strings"
	"testing"

	p11 "github.com/miekg/pkcs11"

	"github.com/pgcloak/pgcloak/crypto/secret"
	"github.com/pgcloak/pgcloak/internal/hsmtest"
)

const testKeyLabel = "pgcloak-kek"

// newToken creates a throwaway SoftHSM2 token for t (skipped, or failed with
// PGCLOAK_REQUIRE_INTEGRATION=1, when SoftHSM2 is missing).
func newToken(t testing.TB, label string) *hsmtest.Token {
	t.Helper()
	return hsmtest.New(t, label)
}

func optsFor(tk *hsmtest.Token, keyLabel string) Opts {
	return Opts{
		Module:     tk.Module,
		TokenLabel: tk.Label,
		PIN:        secret.New([]byte(tk.PIN)),
		KeyLabel:   keyLabel,
	}
}

// openToken opens tk and closes it at the end of the test.
func openToken(t testing.TB, tk *hsmtest.Token) *Token {
	t.Helper()
	tok, err := OpenToken(context.Background(), optsFor(tk, ""))
	if err != nil {
		t.Fatalf("OpenToken: %v", err)
	}
	t.Cleanup(func() {
		if err := tok.Close(); err != nil {
			t.Errorf("Token.Close: %v", err)
		}
	})
	return tok
}

// newProvider creates a fresh token with a KEK and opens a Provider on it.
func newProvider(t testing.TB, mut func(*Opts)) (*Provider, *hsmtest.Token) {
	t.Helper()
	tk := newToken(t, "pgcloak")
	tok := openToken(t, tk)
	if _, err := tok.CreateKey(context.Background(), testKeyLabel); err != nil {
		t.Fatalf("CreateKey: %v", err)
	}
	opts := optsFor(tk, testKeyLabel)
	if mut != nil {
		mut(&opts)
	}
	p, err := New(context.Background(), opts)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() {
		if err := p.Close(); err != nil {
			t.Errorf("Provider.Close: %v", err)
		}
	})
	return p, tk
}

func randomDEK(t testing.TB) secret.Bytes {
	t.Helper()
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return secret.New(b)
}

// rawSession opens an extra logged-in RW session on tok for tests that poke
// at the token directly; it is closed at the end of the test.
func rawSession(t testing.TB, tok *Token) p11.SessionHandle {
	t.Helper()
	h, err := tok.open(true, false)
	if err != nil {
		t.Fatalf("open raw session: %v", err)
	}
	t.Cleanup(func() { _ = tok.ctx.CloseSession(h) })
	return h
}

func mustContain(t testing.TB, err error, parts ...string) {
	t.Helper()
	if err == nil {
		t.Fatalf("want an error containing %q, got nil", parts)
	}
	for _, p := range parts {
		if !strings.Contains(err.Error(), p) {
			t.Fatalf("error %q lacks %q", err, p)
		}
	}
}

func secretOf(s string) secret.Bytes { return secret.New([]byte(s)) }
