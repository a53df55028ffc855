package envelope

import (
	"bytes"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"

	"github.com/pgcloak/pgcloak/crypto/secret"
)

const ctxSSN = "public.customers.ssn"

func TestSealOpenRoundTrip(t *testing.T) {
	k := mustKey(t, 3, 7, testDEK("a"))
	blind := []byte("0123456789abcdef")
	for _, n := range []int{0, 1, 15, 16, 17, 255, 4096} {
		for _, bi := range [][]byte{nil, blind} {
			for _, ctx := range []string{ctxSSN, "", "schéma.tàble.cölumn", strings.Repeat("c", 5000)} {
				pt := bytes.Repeat([]byte{'p'}, n)
				env, err := k.Seal([]byte("prefix"), bi, ctx, pt)
				if err != nil {
					t.Fatalf("Seal: %v", err)
				}
				if !bytes.HasPrefix(env, []byte("prefix")) {
					t.Fatalf("Seal did not append to dst")
				}
				env = env[len("prefix"):]
				h := Header{KeyringID: 3, KeyVersion: 7, HasBlindIndex: bi != nil}
				copy(h.BlindIndex[:], bi)
				if len(env) != h.SealedLen(n) {
					t.Fatalf("len = %d, want %d", len(env), h.SealedLen(n))
				}
				if got, err := ParseHeader(env); err != nil || got != h {
					t.Fatalf("ParseHeader = %+v, %v; want %+v", got, err, h)
				}
				if n >= 8 && bytes.Contains(env, pt) {
					t.Fatalf("plaintext visible in envelope")
				}
				out, err := k.Open([]byte("dst:"), env, ctx)
				if err != nil {
					t.Fatalf("Open(n=%d, blind=%v, ctx len %d): %v", n, bi != nil, len(ctx), err)
				}
				if !bytes.Equal(out, append([]byte("dst:"), pt...)) {
					t.Fatalf("Open returned wrong plaintext (n=%d)", n)
				}
			}
		}
	}
}

func TestSealUsesCapacity(t *testing.T) {
	k := mustKey(t, 1, 1, testDEK("a"))
	buf := make([]byte, 0, 200)
	env, err := k.Seal(buf, nil, ctxSSN, []byte("hello"))
	if err != nil {
		t.Fatal(err)
	}
	if &env[0] != &buf[:1][0] {
		t.Fatalf("Seal reallocated although dst had capacity")
	}
	pt, err := k.Open(buf[len(env):len(env)], env, ctxSSN)
	if err != nil || string(pt) != "hello" {
		t.Fatalf("Open = %q, %v", pt, err)
	}
}

func TestSealRejectsBadBlindIndex(t *testing.T) {
	k := mustKey(t, 1, 1, testDEK("a"))
	for _, n := range []int{1, 15, 17, 32} {
		dst := []byte("keep")
		out, err := k.Seal(dst, make([]byte, n), ctxSSN, []byte("x"))
		if err == nil {
			t.Fatalf("blind index of %d bytes accepted", n)
		}
		if string(out) != "keep" {
			t.Fatalf("dst changed on error: %q", out)
		}
	}
}

func TestSealNonceReaderError(t *testing.T) {
	k := mustKey(t, 1, 1, testDEK("a"))
	out, err := k.seal(bytes.NewReader([]byte{1, 2, 3}), []byte("keep"), nil, ctxSSN, []byte("x"))
	if !errors.Is(err, io.ErrUnexpectedEOF) || string(out) != "keep" {
		t.Fatalf("seal with short nonce reader = %q, %v", out, err)
	}
}

func TestNewKeyRejectsWrongSize(t *testing.T) {
	for _, n := range []int{0, 16, 24, 31, 33, 64} {
		raw := bytes.Repeat([]byte{0xAB}, n)
		_, err := NewKey(1, 1, secret.New(raw))
		if err == nil {
			t.Fatalf("NewKey accepted a %d-byte key", n)
		}
		if n > 0 && strings.Contains(strings.ToLower(err.Error()), "abab") {
			t.Fatalf("error shows key bytes: %v", err)
		}
	}
}

// NewKey must not keep the caller's bytes: the key cache zeroes them right
// after NewKey returns.
func TestKeyDoesNotRetainDEK(t *testing.T) {
	dek := testDEK("a")
	k := mustKey(t, 1, 1, dek)
	dek.Zero()
	ref := mustKey(t, 1, 1, testDEK("a"))
	a := sealed(t, k, nil, ctxSSN, []byte("value"))
	b := sealed(t, ref, nil, ctxSSN, []byte("value"))
	if !bytes.Equal(a, b) {
		t.Fatalf("zeroing the DEK after NewKey changed the key")
	}
}

func TestKeyFormatRedacts(t *testing.T) {
	dek := testDEK("a")
	k := mustKey(t, 3, 7, dek)
	keyHex := hex.EncodeToString(dek.Expose())
	for _, verb := range []string{"%v", "%+v", "%#v", "%s", "%x", "%X", "%q"} {
		for _, v := range []any{k, *k} {
			s := fmt.Sprintf(verb, v)
			if !strings.Contains(s, "key ring 3 version 7") || strings.Contains(strings.ToLower(s), keyHex[:8]) {
				t.Fatalf("Sprintf(%s) = %q", verb, s)
			}
		}
	}
	if k.KeyringID() != 3 || k.Version() != 7 {
		t.Fatalf("ids = %d/%d", k.KeyringID(), k.Version())
	}
}

// checkRejected asserts that Open fails with one of the documented error
// kinds, returns dst unchanged and never echoes the plaintext.
func checkRejected(t *testing.T, k *Key, env []byte, ctx string, secretPT string, what string) error {
	t.Helper()
	out, err := k.Open([]byte("dst"), env, ctx)
	if err == nil {
		t.Fatalf("%s: Open succeeded", what)
	}
	if string(out) != "dst" {
		t.Fatalf("%s: dst changed on error", what)
	}
	if !errors.Is(err, ErrAuth) && !errors.Is(err, ErrMalformed) && !errors.Is(err, ErrUnsupported) {
		t.Fatalf("%s: unexpected error kind: %v", what, err)
	}
	if strings.Contains(err.Error(), secretPT) {
		t.Fatalf("%s: error shows the plaintext", what)
	}
	return err
}

func TestEveryBitFlipFails(t *testing.T) {
	k := mustKey(t, 3, 7, testDEK("a"))
	const pt = "secret-123-45-6789"
	for _, blind := range [][]byte{nil, []byte("0123456789abcdef")} {
		env := sealed(t, k, blind, ctxSSN, []byte(pt))
		for i := range env {
			for bit := 0; bit < 8; bit++ {
				mut := bytes.Clone(env)
				mut[i] ^= 1 << bit
				what := fmt.Sprintf("byte %d bit %d (blind=%v)", i, bit, blind != nil)
				err := checkRejected(t, k, mut, ctxSSN, pt, what)
				switch {
				case i < 2:
					if !errors.Is(err, ErrMalformed) {
						t.Fatalf("%s: magic flip: %v", what, err)
					}
				case i < 4:
					if !errors.Is(err, ErrUnsupported) {
						t.Fatalf("%s: version/algorithm flip: %v", what, err)
					}
				case i == 4 && bit > 0:
					if !errors.Is(err, ErrMalformed) {
						t.Fatalf("%s: reserved flag: %v", what, err)
					}
				case i >= 5 && i < 13:
					var km *KeyMismatchError
					if !errors.As(err, &km) || !errors.Is(err, ErrAuth) {
						t.Fatalf("%s: key id flip: %v", what, err)
					}
				case i > 4:
					if err != ErrAuth {
						t.Fatalf("%s: got %v, want exactly ErrAuth", what, err)
					}
				}
			}
		}
	}
}

func TestEveryTruncationFails(t *testing.T) {
	k := mustKey(t, 3, 7, testDEK("a"))
	const pt = "truncate-me-please"
	for _, blind := range [][]byte{nil, []byte("0123456789abcdef")} {
		env := sealed(t, k, blind, ctxSSN, []byte(pt))
		min := MinSize
		if blind != nil {
			min += BlindIndexSize
		}
		for n := 0; n < len(env); n++ {
			err := checkRejected(t, k, env[:n:n], ctxSSN, pt, fmt.Sprintf("truncated to %d", n))
			if n < min && !errors.Is(err, ErrMalformed) {
				t.Fatalf("truncated to %d (< %d): %v, want ErrMalformed", n, min, err)
			}
			if n >= min && err != ErrAuth {
				t.Fatalf("truncated to %d: %v, want ErrAuth", n, err)
			}
		}
		// Dropping bytes from the front, or appending any, fails too.
		for n := 1; n < len(env); n++ {
			checkRejected(t, k, env[n:], ctxSSN, pt, fmt.Sprintf("front-cut %d", n))
		}
		for _, extra := range []string{"\x00", "x", strings.Repeat("\xff", 16)} {
			checkRejected(t, k, append(bytes.Clone(env), extra...), ctxSSN, pt, "extended")
		}
	}
}

func TestWrongContextFails(t *testing.T) {
	k := mustKey(t, 3, 7, testDEK("a"))
	const pt = "context-bound"
	env := sealed(t, k, nil, ctxSSN, []byte(pt))
	for _, ctx := range []string{
		"", "public.customers.ssN", "public.customers.ssn ", " public.customers.ssn",
		"public.customers", "public.customers.ssn\x00", "public.customers.email",
		"Public.customers.ssn", "public.customers.ssnx",
	} {
		if err := checkRejected(t, k, env, ctx, pt, "context "+ctx); err != ErrAuth {
			t.Fatalf("context %q: %v, want ErrAuth", ctx, err)
		}
	}
	// The empty context is a context like any other.
	envEmpty := sealed(t, k, nil, "", []byte(pt))
	if err := checkRejected(t, k, envEmpty, "x", pt, "empty → x"); err != ErrAuth {
		t.Fatalf("%v", err)
	}
}

// Moving bytes between the header and the context must not authenticate:
// the header has a fixed length for its flags, so header||context is
// unambiguous.
func TestBlindIndexBoundToCiphertext(t *testing.T) {
	k := mustKey(t, 3, 7, testDEK("a"))
	const pt = "bound"
	bi := []byte("0123456789abcdef")
	env := sealed(t, k, bi, ctxSSN, []byte(pt))
	// Strip the blind index and clear the flag.
	stripped := append(bytes.Clone(env[:13]), env[29:]...)
	stripped[4] = 0
	if err := checkRejected(t, k, stripped, ctxSSN, pt, "stripped"); err != ErrAuth {
		t.Fatalf("stripped blind index: %v", err)
	}
	// Strip it but move it into the context instead.
	if err := checkRejected(t, k, stripped, string(bi)+ctxSSN, pt, "moved"); err != ErrAuth {
		t.Fatalf("blind index moved to context: %v", err)
	}
	// Add a blind index to an envelope sealed without one.
	plain := sealed(t, k, nil, ctxSSN, []byte(pt))
	added := append(append(bytes.Clone(plain[:13]), bi...), plain[13:]...)
	added[4] = 1
	if err := checkRejected(t, k, added, ctxSSN, pt, "added"); err != ErrAuth {
		t.Fatalf("added blind index: %v", err)
	}
}

func TestWrongKeyFails(t *testing.T) {
	k := mustKey(t, 3, 7, testDEK("a"))
	const pt = "key-bound"
	env := sealed(t, k, nil, ctxSSN, []byte(pt))
	other := mustKey(t, 3, 7, testDEK("b"))
	if err := checkRejected(t, other, env, ctxSSN, pt, "same ids, other bytes"); err != ErrAuth {
		t.Fatalf("%v", err)
	}
	for _, o := range []*Key{mustKey(t, 3, 8, testDEK("a")), mustKey(t, 4, 7, testDEK("a"))} {
		err := checkRejected(t, o, env, ctxSSN, pt, "other ids")
		var km *KeyMismatchError
		if !errors.As(err, &km) || km.KeyringID != 3 || km.KeyVersion != 7 || km.KeyKeyringID != o.KeyringID() || km.KeyKeyVersion != o.Version() {
			t.Fatalf("other ids: %v", err)
		}
	}
}

func TestNonceUniqueness(t *testing.T) {
	const n = 100_000
	k := mustKey(t, 1, 1, testDEK("a"))
	seen := make(map[[NonceSize]byte]struct{}, n)
	var buf []byte
	pt := []byte("same plaintext every time")
	var prevBody []byte
	for i := 0; i < n; i++ {
		var err error
		buf, err = k.Seal(buf[:0], nil, ctxSSN, pt)
		if err != nil {
			t.Fatal(err)
		}
		var nonce [NonceSize]byte
		copy(nonce[:], buf[13:13+NonceSize])
		if _, dup := seen[nonce]; dup {
			t.Fatalf("nonce repeated after %d seals", i)
		}
		seen[nonce] = struct{}{}
		body := buf[13+NonceSize:]
		if bytes.Equal(body, prevBody) {
			t.Fatalf("identical ciphertext for seal %d", i)
		}
		prevBody = append(prevBody[:0], body...)
	}
}

func TestSealOpenDoNotAllocate(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector makes sync.Pool drop items")
	}
	k := mustKey(t, 1, 1, testDEK("a"))
	pt := bytes.Repeat([]byte{'v'}, 256)
	env := make([]byte, 0, 512)
	out := make([]byte, 0, 512)
	allocs := testing.AllocsPerRun(200, func() {
		var err error
		env, err = k.Seal(env[:0], []byte("0123456789abcdef"), ctxSSN, pt)
		if err != nil {
			t.Fatal(err)
		}
		out, err = k.Open(out[:0], env, ctxSSN)
		if err != nil {
			t.Fatal(err)
		}
	})
	if allocs != 0 {
		t.Fatalf("Seal+Open allocate %v times with preallocated buffers", allocs)
	}
}

func TestConcurrentUse(t *testing.T) {
	k := mustKey(t, 1, 1, testDEK("a"))
	done := make(chan error)
	for g := 0; g < 8; g++ {
		go func(g int) {
			var env, out []byte
			for i := 0; i < 500; i++ {
				pt := fmt.Appendf(nil, "g%d-i%d", g, i)
				var err error
				if env, err = k.Seal(env[:0], nil, ctxSSN, pt); err == nil {
					out, err = k.Open(out[:0], env, ctxSSN)
				}
				if err == nil && !bytes.Equal(out, pt) {
					err = errors.New("wrong plaintext")
				}
				if err != nil {
					done <- err
					return
				}
			}
			done <- nil
		}(g)
	}
	for g := 0; g < 8; g++ {
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	}
}
