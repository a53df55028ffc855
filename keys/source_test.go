package keys

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pgcloak/pgcloak/crypto/envelope"
	"github.com/pgcloak/pgcloak/hsm"
	"github.com/pgcloak/pgcloak/keycache"
	"github.com/pgcloak/pgcloak/keyring"
)

const testContext = "public.customers.ssn"

// version returns the version EncryptionKey hands out for confidential.
func version(t *testing.T, ctx context.Context, s *Source) uint32 {
	t.Helper()
	k, err := s.EncryptionKey(ctx, "confidential")
	if err != nil {
		t.Fatal(err)
	}
	return k.Version()
}

// roundTrip seals under enc and opens with the key Key returns for the
// envelope's header: the two must be the same key material.
func roundTrip(t *testing.T, ctx context.Context, s *Source, enc *envelope.Key) {
	t.Helper()
	env, err := enc.Seal(nil, nil, testContext, []byte("123-45-6789"))
	if err != nil {
		t.Fatal(err)
	}
	dec, err := s.Key(ctx, enc.KeyringID(), enc.Version())
	if err != nil {
		t.Fatalf("Key(%d, %d): %v", enc.KeyringID(), enc.Version(), err)
	}
	pt, err := dec.Open(nil, env, testContext)
	if err != nil || !bytes.Equal(pt, []byte("123-45-6789")) {
		t.Fatalf("open with Key(%d, %d): %q, %v", enc.KeyringID(), enc.Version(), pt, err)
	}
}

func TestEncryptionKey(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	s := e.source(Opts{})
	k := must(s.EncryptionKey(e.ctx, "confidential"))(t)
	if k.KeyringID() != e.ring.ID || k.Version() != 1 {
		t.Fatalf("EncryptionKey = ring %d version %d, want ring %d version 1", k.KeyringID(), k.Version(), e.ring.ID)
	}
	roundTrip(t, e.ctx, s, k)
	// Both calls were served by one load (one unwrap).
	must(s.EncryptionKey(e.ctx, "confidential"))(t)
	if s.CacheStats().Loads != 1 || e.kek.Calls().Unwrap != 1 {
		t.Errorf("loads %d, unwraps %d; want 1 each", s.CacheStats().Loads, e.kek.Calls().Unwrap)
	}

	// No ring for the classification.
	_, err := s.EncryptionKey(e.ctx, "restricted")
	if !errors.Is(err, keycache.ErrKeyUnavailable) || !errors.Is(err, keyring.ErrNotFound) {
		t.Errorf("EncryptionKey(restricted) = %v; want ErrKeyUnavailable and ErrNotFound", err)
	}
	// A search ring is never used to encrypt, nor to decrypt.
	search, _ := must2(t)(e.store.EnsureKeyring(e.ctx, keyring.KeyringSpec{
		Name: "confidential:search", Purpose: keyring.PurposeSearch, Classification: "confidential", KEK: "hsm",
	}))
	if _, err := s.EncryptionKey(e.ctx, "confidential:search"); !errors.Is(err, keyring.ErrWrongPurpose) || !errors.Is(err, keycache.ErrKeyUnavailable) {
		t.Errorf("EncryptionKey(search ring) = %v; want ErrWrongPurpose", err)
	}
	if _, err := s.Key(e.ctx, search.ID, 1); !errors.Is(err, keyring.ErrWrongPurpose) {
		t.Errorf("Key(search ring) = %v; want ErrWrongPurpose", err)
	}
	if _, err := s.Key(e.ctx, e.ring.ID, 99); !errors.Is(err, keyring.ErrNotFound) || !errors.Is(err, keycache.ErrKeyUnavailable) {
		t.Errorf("Key(unknown version) = %v; want ErrNotFound", err)
	}
}

// must2 is must for functions returning three values.
func must2(t *testing.T) func(keyring.Keyring, bool, error) (keyring.Keyring, bool) {
	return func(k keyring.Keyring, b bool, err error) (keyring.Keyring, bool) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		return k, b
	}
}

// Without notifications, a rotation is seen once ActiveTTL has passed; the
// old version keeps decrypting.
func TestRotationSeenAfterActiveTTL(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	s := e.source(Opts{ActiveTTL: 2 * time.Second}) // no Run: no LISTEN, no poll
	old := must(s.EncryptionKey(e.ctx, "confidential"))(t)
	must(e.store.Rotate(e.ctx, "confidential", "test"))(t)
	if v := version(t, e.ctx, s); v != 1 {
		t.Fatalf("right after the rotation: version %d, want the cached 1 (is the active version cached at all?)", v)
	}
	start := time.Now()
	waitFor(t, "version 2 after ActiveTTL", func() bool { return version(t, e.ctx, s) == 2 })
	if el := time.Since(start); el > 4*time.Second {
		t.Errorf("rotation seen after %v, ActiveTTL is 2s", el)
	}
	roundTrip(t, e.ctx, s, old) // decrypt_only still opens
	roundTrip(t, e.ctx, s, must(s.EncryptionKey(e.ctx, "confidential"))(t))
}

// With Run, a rotation is seen through NOTIFY long before ActiveTTL.
func TestRotationSeenThroughNotify(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	s := e.source(Opts{ActiveTTL: time.Hour, PollInterval: time.Hour})
	e.run(s)
	if v := version(t, e.ctx, s); v != 1 {
		t.Fatalf("version %d, want 1", v)
	}
	must(e.store.Rotate(e.ctx, "confidential", "test"))(t)
	waitFor(t, "version 2 through NOTIFY", func() bool { return version(t, e.ctx, s) == 2 })
	must(e.store.Rotate(e.ctx, "confidential", "test"))(t)
	waitFor(t, "version 3 through NOTIFY", func() bool { return version(t, e.ctx, s) == 3 })
}

// Disabling a version stops its use on a running Source within seconds,
// although its key is cached for CacheTTL.
func TestDisabledThroughNotify(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	s := e.source(Opts{ActiveTTL: time.Hour, PollInterval: time.Hour, CacheTTL: time.Hour})
	e.run(s)
	k1 := must(s.EncryptionKey(e.ctx, "confidential"))(t)
	roundTrip(t, e.ctx, s, k1)
	_, newActive, err := e.store.Disable(e.ctx, "confidential", 1, "leaked")
	if err != nil || newActive == nil || newActive.Version != 2 {
		t.Fatalf("Disable = %v, %+v", err, newActive)
	}
	var keyErr error
	waitFor(t, "disabled version refused", func() bool {
		_, keyErr = s.Key(e.ctx, e.ring.ID, 1)
		return keyErr != nil
	})
	if !errors.Is(keyErr, keyring.ErrKeyDisabled) || !errors.Is(keyErr, keycache.ErrKeyUnavailable) || errors.Is(keyErr, keyring.ErrKeyDestroyed) {
		t.Errorf("Key(disabled) = %v; want ErrKeyDisabled", keyErr)
	}
	if v := version(t, e.ctx, s); v != 2 {
		t.Errorf("EncryptionKey after disabling the active version: %d, want 2", v)
	}
}

// With AllowDisabledReads ([rotation] compromised_reads = "allow"), a
// disabled version still opens what it sealed, each load audited, and is
// never used to encrypt.
func TestDisabledReadsAllowed(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	s := e.source(Opts{ActiveTTL: time.Hour, PollInterval: time.Hour, CacheTTL: time.Hour, AllowDisabledReads: true})
	e.run(s)
	k1 := must(s.EncryptionKey(e.ctx, "confidential"))(t)
	if _, _, err := e.store.Disable(e.ctx, "confidential", 1, "leaked"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "version 2 active after disabling 1", func() bool { return version(t, e.ctx, s) == 2 })
	// The disabled version was dropped from the cache (NOTIFY) and loads
	// again, audited.
	waitFor(t, "key.disabled_access audited", func() bool {
		roundTrip(t, e.ctx, s, k1) // fails the test if the disabled version is refused
		var n int
		if err := e.store.Pool().QueryRow(e.ctx, `SELECT count(*) FROM pgcloak.audit_log WHERE event = 'key.disabled_access' AND version = 1`).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n > 0
	})
	if v := version(t, e.ctx, s); v != 2 {
		t.Errorf("EncryptionKey uses version %d, want 2 (never the disabled one)", v)
	}
}

// The poll is the fallback when no notification arrives: until it runs,
// cached keys keep serving; after it, a disabled version is refused and
// the new active version is used.
func TestDisabledThroughPoll(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	s := e.source(Opts{ActiveTTL: time.Hour, CacheTTL: time.Hour}) // no Run
	must(s.EncryptionKey(e.ctx, "confidential"))(t)
	if err := s.resync(e.ctx); err != nil { // the poll before the change
		t.Fatal(err)
	}
	if _, _, err := e.store.Disable(e.ctx, "confidential", 1, "leaked"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Key(e.ctx, e.ring.ID, 1); err != nil {
		t.Fatalf("before the poll the cached key should still serve (else this test proves nothing): %v", err)
	}
	if err := s.resync(e.ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Key(e.ctx, e.ring.ID, 1); !errors.Is(err, keyring.ErrKeyDisabled) {
		t.Errorf("Key(disabled) after the poll = %v; want ErrKeyDisabled", err)
	}
	if v := version(t, e.ctx, s); v != 2 {
		t.Errorf("EncryptionKey after the poll: version %d, want 2", v)
	}
}

// When the key taken for active fails to load for a definitive reason,
// EncryptionKey asks the key store again instead of failing.
func TestEncryptionKeyRereadsAfterRefusal(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	s := e.source(Opts{ActiveTTL: time.Hour}) // no Run
	must(s.EncryptionKey(e.ctx, "confidential"))(t)
	if _, _, err := e.store.Disable(e.ctx, "confidential", 1, "leaked"); err != nil {
		t.Fatal(err)
	}
	s.cache.Invalidate(e.ring.ID, 1) // as if its CacheTTL had passed
	k, err := s.EncryptionKey(e.ctx, "confidential")
	if err != nil || k.Version() != 2 {
		t.Fatalf("EncryptionKey = %v, %v; want version 2", k, err)
	}
}

func TestDestroyed(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	s := e.source(Opts{ActiveTTL: time.Hour, PollInterval: time.Hour, CacheTTL: time.Hour})
	e.run(s)
	roundTrip(t, e.ctx, s, must(s.EncryptionKey(e.ctx, "confidential"))(t))
	must(e.store.Rotate(e.ctx, "confidential", "test"))(t)
	must(e.store.SetState(e.ctx, "confidential", 1, keyring.StateRetired, "test"))(t)
	var err error
	waitFor(t, "retired version refused", func() bool {
		_, err = s.Key(e.ctx, e.ring.ID, 1)
		return err != nil
	})
	if !errors.Is(err, keyring.ErrKeyRetired) || errors.Is(err, keyring.ErrKeyDestroyed) {
		t.Fatalf("Key(retired) = %v; want ErrKeyRetired", err)
	}
	must(e.store.ScheduleDeletion(e.ctx, "confidential", 1, keyring.MinDeletionWindow, "test"))(t)
	e.timeTravel(e.ring.ID, 1)
	if d, err := e.store.DestroyDue(e.ctx); err != nil || len(d) != 1 {
		t.Fatalf("DestroyDue = %v, %v", d, err)
	}
	waitFor(t, "destroyed version refused as destroyed", func() bool {
		_, err = s.Key(e.ctx, e.ring.ID, 1)
		return errors.Is(err, keyring.ErrKeyDestroyed)
	})
	if !errors.Is(err, keycache.ErrKeyUnavailable) {
		t.Errorf("Key(destroyed) = %v; want it to wrap keycache.ErrKeyUnavailable too", err)
	}
	// A fresh Source, nothing cached: the same answer.
	fresh := e.source(Opts{})
	if _, err := fresh.Key(e.ctx, e.ring.ID, 1); !errors.Is(err, keyring.ErrKeyDestroyed) {
		t.Errorf("fresh Key(destroyed) = %v; want ErrKeyDestroyed", err)
	}
}

// While the key store is unreachable, the version last seen active keeps
// encrypting within the outage budget, and not beyond.
func TestActiveVersionOutage(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	for _, tc := range []struct {
		name   string
		budget time.Duration
		ok     bool
	}{
		{"within budget", time.Hour, true},
		{"no budget", -1, false},
	} {
		store := e.newStore(keyringOptsDSN(e.dsn)) // its own pool, closed below
		s := e.source(Opts{Store: store, ActiveTTL: 50 * time.Millisecond, OutageBudget: tc.budget})
		must(s.EncryptionKey(e.ctx, "confidential"))(t)
		store.Pool().Close() // the key store is gone for this Source
		time.Sleep(100 * time.Millisecond)
		k, err := s.EncryptionKey(e.ctx, "confidential")
		switch {
		case tc.ok && (err != nil || k.Version() != 1):
			t.Errorf("%s: EncryptionKey = %v, %v; want version 1", tc.name, k, err)
		case !tc.ok && (!errors.Is(err, keycache.ErrKeyUnavailable) || !errors.Is(err, hsm.ErrUnavailable)):
			t.Errorf("%s: EncryptionKey = %v, %v; want ErrKeyUnavailable and hsm.ErrUnavailable", tc.name, k, err)
		}
	}
}

func keyringOptsDSN(dsn string) keyring.StoreOpts { return keyring.StoreOpts{DSN: dsn} }

// Many goroutines encrypt and decrypt while the ring rotates: no errors,
// each goroutine sees versions in order, the newest is reached, and every
// counted encryption reaches the key store.
func TestConcurrentRotation(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	s := e.source(Opts{ActiveTTL: 50 * time.Millisecond, FlushInterval: 100 * time.Millisecond})
	e.run(s)
	const workers, rotations = 8, 5
	var (
		total   atomic.Int64
		stop    = make(chan struct{})
		wg      sync.WaitGroup
		errOnce sync.Once
		firstEr error
	)
	fail := func(err error) { errOnce.Do(func() { firstEr = err }) }
	for w := range workers {
		wg.Go(func() {
			last := uint32(0)
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				k, err := s.EncryptionKey(e.ctx, "confidential")
				if err != nil {
					fail(err)
					return
				}
				if k.Version() < last {
					fail(fmt.Errorf("worker %d: version %d after %d", w, k.Version(), last))
					return
				}
				last = k.Version()
				pt := fmt.Appendf(nil, "w%d-%d", w, i)
				env, err := k.Seal(nil, nil, testContext, pt)
				if err != nil {
					fail(err)
					return
				}
				s.Encrypted(k, 1)
				total.Add(1)
				d, err := s.Key(e.ctx, k.KeyringID(), k.Version())
				if err != nil {
					fail(err)
					return
				}
				if got, err := d.Open(nil, env, testContext); err != nil || !bytes.Equal(got, pt) {
					fail(fmt.Errorf("worker %d: open: %q, %v", w, got, err))
					return
				}
			}
		})
	}
	for range rotations {
		time.Sleep(150 * time.Millisecond)
		must(e.store.Rotate(e.ctx, "confidential", "test"))(t)
	}
	waitFor(t, "newest version in use", func() bool { return version(t, e.ctx, s) == rotations+1 })
	close(stop)
	wg.Wait()
	if firstEr != nil {
		t.Fatal(firstEr)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	var flushed int64
	if err := e.pool.QueryRow(e.ctx, "SELECT sum(encryptions) FROM pgcloak.key_versions WHERE keyring_id = $1", int32(e.ring.ID)).Scan(&flushed); err != nil {
		t.Fatal(err)
	}
	if flushed != total.Load() || total.Load() == 0 {
		t.Errorf("key store counts %d encryptions, the workers made %d", flushed, total.Load())
	}
}

func TestLifecycle(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	s := e.source(Opts{})
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if err := s.Run(e.ctx); err == nil {
		t.Error("Run after Close returned nil")
	}
	if _, err := s.Key(e.ctx, e.ring.ID, 1); !errors.Is(err, keycache.ErrClosed) {
		t.Errorf("Key after Close = %v; want keycache.ErrClosed", err)
	}
	if _, err := New(Opts{}); err == nil {
		t.Error("New without a Store succeeded")
	}
	if _, err := New(Opts{Store: e.store, ActiveTTL: -time.Second}); err == nil {
		t.Error("New with a negative ActiveTTL succeeded")
	}
}
