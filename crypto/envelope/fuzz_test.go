package envelope

import (
	"bytes"
	"errors"
	"testing"
)

// Seed corpora live in testdata/fuzz/<target> (written by the vector
// generator) and run as ordinary tests; `go test -fuzz FuzzOpen` explores
// further.

func FuzzParseHeader(f *testing.F) {
	f.Add([]byte{})
	f.Add(AppendHeader(nil, Header{KeyringID: 1, KeyVersion: 1}))
	f.Fuzz(func(t *testing.T, b []byte) {
		h, err := ParseHeader(b)
		if err != nil {
			if !errors.Is(err, ErrMalformed) && !errors.Is(err, ErrUnsupported) {
				t.Fatalf("unexpected error kind: %v", err)
			}
			return
		}
		if len(b) < h.SealedLen(0) {
			t.Fatalf("accepted %d bytes, minimum for %+v is %d", len(b), h, h.SealedLen(0))
		}
		if enc := AppendHeader(nil, h); !bytes.Equal(enc, b[:h.Len()]) {
			t.Fatalf("re-encoded header %x != input prefix %x", enc, b[:h.Len()])
		}
	})
}

func FuzzOpen(f *testing.F) {
	k := mustKey(f, 1, 1, testDEK("vectors v1 key ring 1 version 1"))
	f.Add(sealed(f, k, nil, ctxSSN, []byte("seed")), ctxSSN)
	f.Add(sealed(f, k, []byte("0123456789abcdef"), ctxSSN, nil), ctxSSN)
	f.Fuzz(func(t *testing.T, env []byte, ctx string) {
		orig := bytes.Clone(env)
		out, err := k.Open([]byte("dst"), env, ctx)
		if !bytes.Equal(env, orig) {
			t.Fatalf("Open modified its input")
		}
		if err != nil {
			if string(out) != "dst" {
				t.Fatalf("dst changed on error")
			}
			if !errors.Is(err, ErrAuth) && !errors.Is(err, ErrMalformed) && !errors.Is(err, ErrUnsupported) {
				t.Fatalf("unexpected error kind: %v", err)
			}
			return
		}
		// Only a genuine envelope opens; sealing its plaintext again with
		// its own nonce must give back exactly the input.
		h, err := ParseHeader(env)
		if err != nil {
			t.Fatalf("Open accepted what ParseHeader rejects: %v", err)
		}
		var blind []byte
		if h.HasBlindIndex {
			blind = h.BlindIndex[:]
		}
		again, err := k.seal(nonceReader(env[h.Len():h.Len()+NonceSize]), nil, blind, ctx, out[3:])
		if err != nil || !bytes.Equal(again, env) {
			t.Fatalf("opened envelope does not re-seal to itself")
		}
	})
}

func FuzzSealOpen(f *testing.F) {
	k := mustKey(f, 9, 4, testDEK("fuzz"))
	f.Add([]byte("hello"), "public.t.c", false)
	f.Add([]byte{}, "", true)
	f.Fuzz(func(t *testing.T, pt []byte, ctx string, withBlind bool) {
		var blind []byte
		if withBlind {
			blind = []byte("fedcba9876543210")
		}
		env, err := k.Seal(nil, blind, ctx, pt)
		if err != nil {
			t.Fatal(err)
		}
		out, err := k.Open(nil, env, ctx)
		if err != nil || !bytes.Equal(out, pt) {
			t.Fatalf("round trip: %v", err)
		}
		if _, err := k.Open(nil, env, ctx+"."); err != ErrAuth {
			t.Fatalf("other context: %v", err)
		}
	})
}
