package keys

import (
	"bytes"
	"fmt"
	"sync"
	"testing"
	"time"
)

// A proxy that never heard of a version (no notification, nothing cached:
// another proxy rotated and sealed with it) reads a ciphertext naming it:
// the version is fetched from the key store on demand, once for all the
// sessions that need it at the same moment (keycache's singleflight), and
// the versions it already had keep working.
func TestUnknownVersionFetchedOnDemand(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	reader := e.source(Opts{ActiveTTL: time.Hour, CacheTTL: time.Hour}) // no Run: hears of nothing
	k1 := must(reader.EncryptionKey(e.ctx, "confidential"))(t)
	old, err := k1.Seal(nil, nil, testContext, []byte("sealed under v1"))
	if err != nil {
		t.Fatal(err)
	}

	// Another proxy, with a key store pool of its own, rotates and seals.
	writer := e.source(Opts{Store: e.newStore(keyringOptsDSN(e.dsn))})
	must(writer.store.Rotate(e.ctx, "confidential", "test"))(t)
	k2 := must(writer.EncryptionKey(e.ctx, "confidential"))(t)
	if k2.Version() != 2 {
		t.Fatalf("writer seals with version %d, want 2", k2.Version())
	}
	const sessions = 16
	sealed := make([][]byte, sessions)
	for i := range sealed {
		if sealed[i], err = k2.Seal(nil, nil, testContext, fmt.Appendf(nil, "row %d", i)); err != nil {
			t.Fatal(err)
		}
	}

	// The reader is still on version 1 for writes (ActiveTTL) and has
	// never loaded version 2.
	if v := version(t, e.ctx, reader); v != 1 {
		t.Fatalf("reader's active version %d, want the cached 1 (else this test proves nothing)", v)
	}
	loads, misses := reader.CacheStats().Loads, reader.CacheStats().Misses
	e.kek.ResetCalls()
	release := e.kek.Block() // hold the unwrap so that every session waits on the same load
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		errs []error
	)
	for i := range sessions {
		wg.Go(func() {
			k, err := reader.Key(e.ctx, e.ring.ID, 2)
			if err == nil {
				var pt []byte
				pt, err = k.Open(nil, sealed[i], testContext)
				if err == nil && !bytes.Equal(pt, fmt.Appendf(nil, "row %d", i)) {
					err = fmt.Errorf("session %d: opened %q", i, pt)
				}
			}
			if err != nil {
				mu.Lock()
				errs = append(errs, err)
				mu.Unlock()
			}
		})
	}
	waitFor(t, "sessions waiting on the load", func() bool {
		return e.kek.Waiting() == 1 && reader.CacheStats().Misses >= misses+sessions
	})
	release()
	wg.Wait()
	if len(errs) > 0 {
		t.Fatalf("%d sessions failed, first: %v", len(errs), errs[0])
	}
	if got := reader.CacheStats().Loads - loads; got != 1 {
		t.Errorf("%d loads of version 2 for %d sessions, want 1", got, sessions)
	}
	if c := e.kek.Calls(); c.Unwrap != 1 {
		t.Errorf("%d unwraps, want 1", c.Unwrap)
	}
	// Cached now, and version 1 still reads.
	if _, err := reader.Key(e.ctx, e.ring.ID, 2); err != nil || reader.CacheStats().Loads-loads != 1 {
		t.Errorf("second read of version 2: %v, loads %d", err, reader.CacheStats().Loads-loads)
	}
	d1 := must(reader.Key(e.ctx, e.ring.ID, 1))(t)
	if pt, err := d1.Open(nil, old, testContext); err != nil || string(pt) != "sealed under v1" {
		t.Errorf("version 1 after the rotation: %q, %v", pt, err)
	}
}
