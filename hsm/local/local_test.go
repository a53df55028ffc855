package local

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/pgcloak/pgcloak/crypto/secret"
	"github.com/pgcloak/pgcloak/hsm"
	"github.com/pgcloak/pgcloak/hsm/internal/blob"
)

func newKeyFile(t *testing.T) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "dev-kek.key")
	if err := Generate(path); err != nil {
		t.Fatalf("Generate: %v", err)
	}
	return path
}

func newProvider(t *testing.T) *Provider {
	t.Helper()
	p, err := New(Opts{KeyFile: newKeyFile(t)})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

func randomDEK(t testing.TB) secret.Bytes {
	t.Helper()
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return secret.New(b)
}

func TestGenerateWritesPrivateHexFile(t *testing.T) {
	path := newKeyFile(t)
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if perm := st.Mode().Perm(); perm != 0o600 {
		t.Fatalf("mode = %04o, want 0600", perm)
	}
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	text := strings.TrimSuffix(string(raw), "\n")
	if len(text) != 64 || strings.Trim(text, "0123456789abcdef") != "" {
		t.Fatalf("key file is not 64 lowercase hex characters and a newline (%d bytes)", len(raw))
	}
	// Two generated keys differ (crypto/rand is actually used).
	other, err := os.ReadFile(newKeyFile(t))
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Equal(raw, other) {
		t.Fatal("two generated key files are identical")
	}
}

func TestGenerateRefusesToOverwrite(t *testing.T) {
	path := newKeyFile(t)
	before, _ := os.ReadFile(path)
	err := Generate(path)
	if err == nil || !strings.Contains(err.Error(), "refusing to overwrite") {
		t.Fatalf("Generate over an existing file: err = %v, want a refusal", err)
	}
	after, _ := os.ReadFile(path)
	if !bytes.Equal(before, after) {
		t.Fatal("existing key file was modified")
	}
}

func TestRoundTrip(t *testing.T) {
	p := newProvider(t)
	ctx := context.Background()
	dek := randomDEK(t)
	aad := []byte("keyring=7/version=3")
	w, err := p.Wrap(ctx, dek, aad)
	if err != nil {
		t.Fatal(err)
	}
	if len(w) != blob.HeaderSize+32+blob.TagSize || w[0] != blob.VersionGCM {
		t.Fatalf("blob: len %d version %#x", len(w), w[0])
	}
	if bytes.Contains(w, dek.Expose()) {
		t.Fatal("wrapped blob contains the DEK in clear")
	}
	got, err := p.Unwrap(ctx, w, aad)
	if err != nil {
		t.Fatal(err)
	}
	if !got.Equal(dek) {
		t.Fatal("unwrapped DEK differs")
	}
	// Same DEK wrapped twice gives different blobs (fresh IV).
	w2, _ := p.Wrap(ctx, dek, aad)
	if bytes.Equal(w[1:1+blob.IVSize], w2[1:1+blob.IVSize]) {
		t.Fatal("IV reused")
	}
}

func TestWrongAADFails(t *testing.T) {
	p := newProvider(t)
	ctx := context.Background()
	w, err := p.Wrap(ctx, randomDEK(t), []byte("keyring=1/version=1"))
	if err != nil {
		t.Fatal(err)
	}
	for _, aad := range [][]byte{nil, []byte("keyring=1/version=2"), []byte("keyring=1/version=1\x00")} {
		if _, err := p.Unwrap(ctx, w, aad); !errors.Is(err, hsm.ErrUnwrap) {
			t.Errorf("aad %q: err = %v, want ErrUnwrap", aad, err)
		}
	}
}

func TestTamperFails(t *testing.T) {
	p := newProvider(t)
	ctx := context.Background()
	aad := []byte("a")
	w, err := p.Wrap(ctx, randomDEK(t), aad)
	if err != nil {
		t.Fatal(err)
	}
	for i := range len(w) * 8 {
		bad := bytes.Clone(w)
		bad[i/8] ^= 1 << (i % 8)
		if _, err := p.Unwrap(ctx, bad, aad); !errors.Is(err, hsm.ErrUnwrap) {
			t.Fatalf("bit %d flipped: err = %v, want ErrUnwrap", i, err)
		}
	}
	for n := range len(w) {
		if _, err := p.Unwrap(ctx, w[:n], aad); !errors.Is(err, hsm.ErrUnwrap) {
			t.Fatalf("truncated to %d: err = %v, want ErrUnwrap", n, err)
		}
	}
	if _, err := p.Unwrap(ctx, append(bytes.Clone(w), 0), aad); !errors.Is(err, hsm.ErrUnwrap) {
		t.Fatalf("extended: err = %v, want ErrUnwrap", err)
	}
}

func TestOtherKeyFails(t *testing.T) {
	a, b := newProvider(t), newProvider(t)
	ctx := context.Background()
	w, err := a.Wrap(ctx, randomDEK(t), []byte("x"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.Unwrap(ctx, w, []byte("x")); !errors.Is(err, hsm.ErrUnwrap) {
		t.Fatalf("err = %v, want ErrUnwrap", err)
	}
}

func TestPermissionCheck(t *testing.T) {
	for _, mode := range []os.FileMode{0o640, 0o604, 0o644, 0o660, 0o620, 0o602} {
		t.Run(fmt.Sprintf("%04o", mode), func(t *testing.T) {
			path := newKeyFile(t)
			if err := os.Chmod(path, mode); err != nil {
				t.Fatal(err)
			}
			_, err := New(Opts{KeyFile: path})
			if !errors.Is(err, ErrPermissions) {
				t.Fatalf("err = %v, want ErrPermissions", err)
			}
			if !strings.Contains(err.Error(), "chmod 600") || !strings.Contains(err.Error(), fmt.Sprintf("%04o", mode)) {
				t.Fatalf("message lacks the mode or the fix: %v", err)
			}
		})
	}
	path := newKeyFile(t)
	if err := os.Chmod(path, 0o400); err != nil {
		t.Fatal(err)
	}
	if _, err := New(Opts{KeyFile: path}); err != nil {
		t.Fatalf("mode 0400 refused: %v", err)
	}
}

func TestBadKeyFiles(t *testing.T) {
	dir := t.TempDir()
	hex64 := strings.Repeat("ab", 32)
	cases := map[string]string{
		"short":     hex64[:62] + "\n",
		"long":      hex64 + "ab\n",
		"not hex":   "zz" + hex64[2:] + "\n",
		"empty":     "",
		"two lines": hex64 + "\n\n",
	}
	for name, content := range cases {
		t.Run(name, func(t *testing.T) {
			path := filepath.Join(dir, strings.ReplaceAll(name, " ", "_"))
			if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
				t.Fatal(err)
			}
			_, err := New(Opts{KeyFile: path})
			if err == nil {
				t.Fatal("accepted a malformed key file")
			}
			if strings.Contains(err.Error(), "zz") || strings.Contains(err.Error(), "abab") {
				t.Fatalf("error quotes the file content: %v", err)
			}
		})
	}
	// CRLF and no newline at all are fine.
	for i, content := range []string{hex64, hex64 + "\r\n"} {
		path := filepath.Join(dir, fmt.Sprintf("ok%d", i))
		if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		if _, err := New(Opts{KeyFile: path}); err != nil {
			t.Errorf("content %d: %v", i, err)
		}
	}
	if _, err := New(Opts{KeyFile: dir}); err == nil {
		t.Error("accepted a directory")
	}
	if _, err := New(Opts{KeyFile: filepath.Join(dir, "missing")}); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("missing file: err = %v", err)
	}
}

// A committed vector: this key file and blob must unwrap forever, so a change
// to the blob layout or the AAD construction cannot go unnoticed.
func TestCommittedVector(t *testing.T) {
	const keyHex = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f"
	path := filepath.Join(t.TempDir(), "k")
	if err := os.WriteFile(path, []byte(keyHex+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	p, err := New(Opts{KeyFile: path})
	if err != nil {
		t.Fatal(err)
	}
	w := mustHex(t, vectorBlobHex)
	got, err := p.Unwrap(context.Background(), w, []byte("pgcloak vector aad"))
	if err != nil {
		t.Fatalf("committed vector no longer unwraps: %v", err)
	}
	want := mustHex(t, "a0a1a2a3a4a5a6a7a8a9aaabacadaeafb0b1b2b3b4b5b6b7b8b9babbbcbdbebf")
	if !bytes.Equal(got.Expose(), want) {
		t.Fatal("committed vector unwraps to a different DEK")
	}
}

func TestContextAndClose(t *testing.T) {
	p := newProvider(t)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := p.Wrap(ctx, randomDEK(t), nil); !errors.Is(err, context.Canceled) {
		t.Fatalf("Wrap with cancelled ctx: %v", err)
	}
	w, err := p.Wrap(context.Background(), randomDEK(t), nil)
	if err != nil {
		t.Fatal(err)
	}
	p.Close()
	if _, err := p.Unwrap(context.Background(), w, nil); err == nil {
		t.Fatal("Unwrap after Close succeeded")
	}
}

func TestDEKLengthBounds(t *testing.T) {
	p := newProvider(t)
	for _, n := range []int{0, 15, 65} {
		if _, err := p.Wrap(context.Background(), secret.New(make([]byte, n)), nil); err == nil {
			t.Errorf("wrapped a %d-byte DEK", n)
		}
	}
}

func BenchmarkUnwrap(b *testing.B) {
	dir := b.TempDir()
	path := filepath.Join(dir, "k")
	if err := Generate(path); err != nil {
		b.Fatal(err)
	}
	p, err := New(Opts{KeyFile: path})
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	aad := []byte("keyring=1/version=1")
	w, err := p.Wrap(ctx, randomDEK(b), aad)
	if err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		k, err := p.Unwrap(ctx, w, aad)
		if err != nil {
			b.Fatal(err)
		}
		k.Zero()
	}
}
