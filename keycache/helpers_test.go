package keycache_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/pgcloak/pgcloak/crypto/envelope"
	"github.com/pgcloak/pgcloak/crypto/secret"
	"github.com/pgcloak/pgcloak/keycache"
)

// fakeClock is a manually advanced clock.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *fakeClock { return &fakeClock{t: time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)} }

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// dekFor derives the DEK of a key version: tests can check that Get hands
// out the right key for the id asked for.
func dekFor(ring, version uint32) []byte {
	var b [8]byte
	binary.BigEndian.PutUint32(b[:4], ring)
	binary.BigEndian.PutUint32(b[4:], version)
	sum := sha256.Sum256(append([]byte("keycache test DEK "), b[:]...))
	return sum[:]
}

// fakeLoader stands in for the keyring (key store + KEK unwrap).
type fakeLoader struct {
	mu      sync.Mutex
	calls   int
	err     error                    // returned by every load when set
	errFor  map[keycache.ID]error    // per key version
	gate    chan struct{}            // when set, loads block until it is closed or ctx ends
	entered chan struct{}            // when set, receives one value per load start
	handed  []secret.Bytes           // every DEK handed to the cache
	badLen  map[keycache.ID]struct{} // hand out a 16-byte DEK (Prepare fails)
}

func (f *fakeLoader) LoadDEK(ctx context.Context, ring, version uint32) (secret.Bytes, error) {
	f.mu.Lock()
	f.calls++
	gate, entered := f.gate, f.entered
	err := f.err
	if e, ok := f.errFor[keycache.ID{KeyringID: ring, Version: version}]; ok {
		err = e
	}
	_, short := f.badLen[keycache.ID{KeyringID: ring, Version: version}]
	f.mu.Unlock()
	if entered != nil {
		entered <- struct{}{}
	}
	if gate != nil {
		select {
		case <-gate:
		case <-ctx.Done():
			return secret.Bytes{}, ctx.Err()
		}
	}
	if err != nil {
		// Hand back bytes with the error too: the cache must zero them.
		dek := secret.New(dekFor(ring, version))
		f.record(dek)
		return dek, err
	}
	raw := dekFor(ring, version)
	if short {
		raw = raw[:16]
	}
	dek := secret.New(raw)
	f.record(dek)
	return dek, nil
}

func (f *fakeLoader) record(dek secret.Bytes) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.handed = append(f.handed, dek)
}

func (f *fakeLoader) set(fn func(f *fakeLoader)) {
	f.mu.Lock()
	defer f.mu.Unlock()
	fn(f)
}

func (f *fakeLoader) Calls() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.calls
}

// requireAllZeroed fails unless every DEK the loader handed out was zeroed.
func (f *fakeLoader) requireAllZeroed(t *testing.T) {
	t.Helper()
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.handed) == 0 {
		t.Fatalf("loader handed out no keys")
	}
	for i, d := range f.handed {
		if d.Len() == 0 || !bytes.Equal(d.Expose(), make([]byte, d.Len())) {
			t.Fatalf("DEK %d of %d was not zeroed", i+1, len(f.handed))
		}
	}
}

type opt func(*keycache.Opts[*envelope.Key])

func newCache(t testing.TB, l keycache.Loader, clk *fakeClock, opts ...opt) *keycache.Cache[*envelope.Key] {
	t.Helper()
	o := keycache.Opts[*envelope.Key]{
		Loader:       l,
		Prepare:      envelope.NewKey,
		MaxEntries:   16,
		TTL:          time.Minute,
		OutageBudget: 10 * time.Minute,
	}
	if clk != nil {
		o.Now = clk.Now
	}
	for _, fn := range opts {
		fn(&o)
	}
	c, err := keycache.New(o)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// checkKey proves k is the key of (ring, version): it opens what the
// version's DEK sealed, and what k seals opens under that DEK.
func checkKey(t testing.TB, k *envelope.Key, ring, version uint32) {
	t.Helper()
	if err := keyMatches(k, ring, version); err != nil {
		t.Fatal(err)
	}
}

// keyMatches is checkKey for goroutines other than the test's.
func keyMatches(k *envelope.Key, ring, version uint32) error {
	ref, err := envelope.NewKey(ring, version, secret.New(dekFor(ring, version)))
	if err != nil {
		return err
	}
	env, err := ref.Seal(nil, nil, "public.t.c", []byte("probe"))
	if err != nil {
		return err
	}
	if pt, err := k.Open(nil, env, "public.t.c"); err != nil || string(pt) != "probe" {
		return fmt.Errorf("key for %d/%d does not open its ciphertext: %v", ring, version, err)
	}
	env, err = k.Seal(nil, nil, "public.t.c", []byte("probe2"))
	if err != nil {
		return err
	}
	if pt, err := ref.Open(nil, env, "public.t.c"); err != nil || string(pt) != "probe2" {
		return fmt.Errorf("key for %d/%d seals under another key: %v", ring, version, err)
	}
	return nil
}

func mustGet(t testing.TB, c *keycache.Cache[*envelope.Key], ring, version uint32) *envelope.Key {
	t.Helper()
	k, err := c.Get(context.Background(), ring, version)
	if err != nil {
		t.Fatalf("Get(%d, %d): %v", ring, version, err)
	}
	return k
}

func wantStats(t testing.TB, c *keycache.Cache[*envelope.Key], want keycache.Stats) {
	t.Helper()
	if got := c.Stats(); got != want {
		t.Fatalf("Stats = %+v\n       want %+v", got, want)
	}
}

// recv receives from ch, failing the test instead of hanging when nothing
// arrives.
func recv[T any](t testing.TB, ch <-chan T) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(10 * time.Second):
		t.Fatalf("nothing received within 10s")
		panic("unreachable")
	}
}
