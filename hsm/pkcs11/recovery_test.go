package pkcs11

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/pgcloak/pgcloak/hsm"
)

// A network HSM that restarts, or a token reset, invalidates every session
// and the login. The provider must notice, reopen, log in again and serve
// the same call without the caller seeing an error.
func TestRecoversFromLostSessions(t *testing.T) {
	p, _ := newProvider(t, func(o *Opts) { o.SessionPoolSize = 2 })
	ctx := context.Background()
	aad := []byte("k")
	dek := randomDEK(t)
	w, err := p.Wrap(ctx, dek, aad)
	if err != nil {
		t.Fatal(err)
	}
	before := p.Token().SessionsOpened()
	for round := range 3 {
		// C_CloseAllSessions closes our pooled sessions and logs the token out.
		if err := p.tok.ctx.CloseAllSessions(p.tok.slot); err != nil {
			t.Fatal(err)
		}
		got, err := p.Unwrap(ctx, w, aad)
		if err != nil {
			t.Fatalf("round %d: Unwrap after the sessions were lost: %v", round, err)
		}
		if !got.Equal(dek) {
			t.Fatal("wrong DEK after recovery")
		}
		if _, err := p.Wrap(ctx, dek, aad); err != nil {
			t.Fatalf("round %d: Wrap after recovery: %v", round, err)
		}
	}
	if after := p.Token().SessionsOpened(); after <= before {
		t.Fatalf("no session was reopened (%d → %d)", before, after)
	}
}

// A key destroyed and re-created under the same label gets a new handle; the
// cached one goes stale and must be looked up again.
func TestStaleKeyHandle(t *testing.T) {
	p, _ := newProvider(t, nil)
	ctx := context.Background()
	if _, err := p.Wrap(ctx, randomDEK(t), nil); err != nil { // caches the handle
		t.Fatal(err)
	}
	h := rawSession(t, p.tok)
	k, err := p.tok.findKey(h, testKeyLabel, false)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.tok.ctx.DestroyObject(h, k); err != nil {
		t.Fatal(err)
	}
	if _, err := p.Token().CreateKey(ctx, testKeyLabel); err != nil {
		t.Fatal(err)
	}
	dek := randomDEK(t)
	w, err := p.Wrap(ctx, dek, []byte("a"))
	if err != nil {
		t.Fatalf("Wrap after the key was replaced: %v", err)
	}
	got, err := p.Unwrap(ctx, w, []byte("a"))
	if err != nil || !got.Equal(dek) {
		t.Fatalf("Unwrap after the key was replaced: %v", err)
	}
}

// When the token disappears (SoftHSM2: its directory is gone), calls fail
// with ErrUnavailable — never with ErrUnwrap, which would make callers
// believe the wrapped key itself is bad.
func TestTokenGoneIsUnavailable(t *testing.T) {
	p, tk := newProvider(t, nil)
	ctx := context.Background()
	w, err := p.Wrap(ctx, randomDEK(t), []byte("x"))
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(tk.Dir, "tokens")
	if err := os.Rename(dir, dir+".away"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.Rename(dir+".away", dir) })
	_, err = p.Unwrap(ctx, w, []byte("x"))
	if !errors.Is(err, hsm.ErrUnavailable) || errors.Is(err, hsm.ErrUnwrap) {
		t.Fatalf("Unwrap with the token gone: err = %v, want ErrUnavailable only", err)
	}
	t.Logf("token gone: %v", err)
	if _, err := p.Wrap(ctx, randomDEK(t), nil); !errors.Is(err, hsm.ErrUnavailable) {
		t.Fatalf("Wrap with the token gone: err = %v, want ErrUnavailable", err)
	}
}

func TestPoolWaitHonoursContext(t *testing.T) {
	p, _ := newProvider(t, func(o *Opts) { o.SessionPoolSize = 1 })
	ctx := context.Background()
	w, err := p.Wrap(ctx, randomDEK(t), nil)
	if err != nil {
		t.Fatal(err)
	}
	held, err := p.tok.get(ctx) // the only session
	if err != nil {
		t.Fatal(err)
	}
	short, cancel := context.WithTimeout(ctx, 30*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err = p.Unwrap(short, w, nil)
	if !errors.Is(err, hsm.ErrUnavailable) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err = %v, want ErrUnavailable and DeadlineExceeded", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("waited %v for a 30ms deadline", d)
	}
	p.tok.put(held)
	if _, err := p.Unwrap(ctx, w, nil); err != nil {
		t.Fatalf("after the session came back: %v", err)
	}
}

func TestConcurrentWraps(t *testing.T) {
	const pool = 4
	p, _ := newProvider(t, func(o *Opts) { o.SessionPoolSize = pool })
	ctx := context.Background()
	var wg sync.WaitGroup
	errs := make(chan error, 16)
	for g := range 16 {
		wg.Go(func() {
			aad := []byte{byte(g)}
			for range 25 {
				dek := randomDEK(t)
				w, err := p.Wrap(ctx, dek, aad)
				if err != nil {
					errs <- err
					return
				}
				got, err := p.Unwrap(ctx, w, aad)
				if err != nil {
					errs <- err
					return
				}
				if !got.Equal(dek) {
					errs <- errors.New("round trip returned another DEK")
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if n := p.Token().SessionsOpened(); n > pool {
		t.Fatalf("%d sessions opened for a pool of %d", n, pool)
	}
}

// The same library reached through a symlink is one process-wide module:
// closing the provider opened through one path must not finalize the library
// under the provider opened through the other.
func TestModuleReachedThroughSymlink(t *testing.T) {
	p, tk := newProvider(t, nil)
	ctx := context.Background()
	link := filepath.Join(t.TempDir(), "libsofthsm2-link.so")
	if err := os.Symlink(tk.Module, link); err != nil {
		t.Fatal(err)
	}
	opts := optsFor(tk, testKeyLabel)
	opts.Module = link
	q, err := New(ctx, opts)
	if err != nil {
		t.Fatal(err)
	}
	registry.Lock()
	n := len(registry.mods)
	registry.Unlock()
	if n != 1 {
		t.Fatalf("%d modules loaded for one library", n)
	}
	w, err := q.Wrap(ctx, randomDEK(t), nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := q.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := p.Unwrap(ctx, w, nil); err != nil {
		t.Fatalf("after closing the provider opened through the symlink: %v", err)
	}
}
