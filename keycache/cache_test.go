package keycache_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pgcloak/pgcloak/crypto/envelope"
	"github.com/pgcloak/pgcloak/crypto/secret"
	"github.com/pgcloak/pgcloak/hsm"
	"github.com/pgcloak/pgcloak/keycache"
)

var errDisabled = errors.New("keyring: key version disabled")

func outage() error { return fmt.Errorf("pkcs11: C_OpenSession: %w", hsm.ErrUnavailable) }

func TestNewValidatesOpts(t *testing.T) {
	good := keycache.Opts[*envelope.Key]{Loader: &fakeLoader{}, Prepare: envelope.NewKey, MaxEntries: 1, TTL: time.Second}
	if _, err := keycache.New(good); err != nil {
		t.Fatalf("valid opts: %v", err)
	}
	for name, mut := range map[string]func(*keycache.Opts[*envelope.Key]){
		"no loader":         func(o *keycache.Opts[*envelope.Key]) { o.Loader = nil },
		"no prepare":        func(o *keycache.Opts[*envelope.Key]) { o.Prepare = nil },
		"zero entries":      func(o *keycache.Opts[*envelope.Key]) { o.MaxEntries = 0 },
		"zero TTL":          func(o *keycache.Opts[*envelope.Key]) { o.TTL = 0 },
		"negative budget":   func(o *keycache.Opts[*envelope.Key]) { o.OutageBudget = -1 },
		"negative retry":    func(o *keycache.Opts[*envelope.Key]) { o.RetryInterval = -1 },
		"negative timeout":  func(o *keycache.Opts[*envelope.Key]) { o.LoadTimeout = -1 },
		"negative entries":  func(o *keycache.Opts[*envelope.Key]) { o.MaxEntries = -5 },
		"negative duration": func(o *keycache.Opts[*envelope.Key]) { o.TTL = -time.Second },
	} {
		o := good
		mut(&o)
		if _, err := keycache.New(o); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

func TestMissThenHit(t *testing.T) {
	l := &fakeLoader{}
	c := newCache(t, l, newClock())
	k1 := mustGet(t, c, 1, 1)
	checkKey(t, k1, 1, 1)
	k2 := mustGet(t, c, 1, 1)
	if k1 != k2 {
		t.Fatalf("hit returned another key object")
	}
	k3 := mustGet(t, c, 1, 2)
	checkKey(t, k3, 1, 2)
	wantStats(t, c, keycache.Stats{Hits: 1, Misses: 2, Loads: 2, Entries: 2})
	l.requireAllZeroed(t)
}

func TestSingleflight(t *testing.T) {
	l := &fakeLoader{gate: make(chan struct{}), entered: make(chan struct{}, 200)}
	c := newCache(t, l, newClock())
	const n = 100
	keys := make([]*envelope.Key, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() { keys[i], errs[i] = c.Get(context.Background(), 7, 3) })
	}
	recv(t, l.entered)
	deadline := time.Now().Add(10 * time.Second)
	for c.Stats().Misses < n {
		if time.Now().After(deadline) {
			t.Fatalf("only %d of %d Gets missed", c.Stats().Misses, n)
		}
		time.Sleep(time.Millisecond)
	}
	close(l.gate)
	wg.Wait()
	for i := range n {
		if errs[i] != nil {
			t.Fatalf("Get %d: %v", i, errs[i])
		}
		if keys[i] != keys[0] {
			t.Fatalf("Get %d returned another key object", i)
		}
	}
	if l.Calls() != 1 {
		t.Fatalf("%d concurrent misses caused %d loads, want 1", n, l.Calls())
	}
	checkKey(t, keys[0], 7, 3)
	wantStats(t, c, keycache.Stats{Misses: n, Loads: 1, Entries: 1})
}

func TestTTLRefresh(t *testing.T) {
	l := &fakeLoader{}
	clk := newClock()
	c := newCache(t, l, clk)
	k1 := mustGet(t, c, 1, 1)
	clk.Advance(time.Minute - time.Nanosecond)
	if k := mustGet(t, c, 1, 1); k != k1 || l.Calls() != 1 {
		t.Fatalf("reloaded before the TTL (calls %d)", l.Calls())
	}
	clk.Advance(time.Nanosecond)
	k2 := mustGet(t, c, 1, 1)
	if l.Calls() != 2 || k2 == k1 {
		t.Fatalf("not reloaded at the TTL (calls %d)", l.Calls())
	}
	checkKey(t, k2, 1, 1)
	checkKey(t, k1, 1, 1) // the old key still works for whoever holds it
	clk.Advance(59 * time.Second)
	if mustGet(t, c, 1, 1) != k2 || l.Calls() != 2 {
		t.Fatalf("TTL not counted from the reload")
	}
	wantStats(t, c, keycache.Stats{Hits: 2, Misses: 2, Loads: 2, Entries: 1})
	l.requireAllZeroed(t)
}

func TestOutageBudget(t *testing.T) {
	l := &fakeLoader{}
	clk := newClock()
	c := newCache(t, l, clk, func(o *keycache.Opts[*envelope.Key]) { o.RetryInterval = time.Second })
	k1 := mustGet(t, c, 1, 1)
	l.set(func(f *fakeLoader) { f.err = outage() })

	// Past the TTL with the HSM down: the old key keeps serving.
	clk.Advance(time.Minute + time.Second)
	if k := mustGet(t, c, 1, 1); k != k1 || l.Calls() != 2 {
		t.Fatalf("expired entry not served during the outage (calls %d)", l.Calls())
	}
	// Within RetryInterval: served without asking the loader again.
	clk.Advance(500 * time.Millisecond)
	if k := mustGet(t, c, 1, 1); k != k1 || l.Calls() != 2 {
		t.Fatalf("loader retried within RetryInterval (calls %d)", l.Calls())
	}
	// After RetryInterval: retried, still served.
	clk.Advance(time.Second)
	if k := mustGet(t, c, 1, 1); k != k1 || l.Calls() != 3 {
		t.Fatalf("no retry after RetryInterval (calls %d)", l.Calls())
	}
	// Just inside TTL+budget.
	clk.Advance(11*time.Minute - (time.Minute + 2500*time.Millisecond) - time.Nanosecond)
	if k := mustGet(t, c, 1, 1); k != k1 || l.Calls() != 4 {
		t.Fatalf("not served just inside the budget (calls %d)", l.Calls())
	}
	wantStats(t, c, keycache.Stats{Misses: 4, StaleServes: 4, Loads: 4, LoadErrors: 3, Entries: 1})

	// At TTL+budget: fails with ErrKeyUnavailable, cause kept, entry gone.
	clk.Advance(time.Second + time.Nanosecond)
	_, err := c.Get(context.Background(), 1, 1)
	var le *keycache.LoadError
	if !errors.Is(err, keycache.ErrKeyUnavailable) || !errors.Is(err, hsm.ErrUnavailable) || !errors.As(err, &le) || le.KeyringID != 1 || le.Version != 1 {
		t.Fatalf("past the budget: %v", err)
	}
	if !strings.Contains(err.Error(), "outage budget") {
		t.Fatalf("error does not say why: %v", err)
	}
	if c.Stats().Entries != 0 {
		t.Fatalf("exhausted entry still cached")
	}
	// Still down: a plain miss fails too.
	if _, err := c.Get(context.Background(), 1, 1); !errors.Is(err, keycache.ErrKeyUnavailable) {
		t.Fatalf("miss during outage: %v", err)
	}

	// Recovery without restart.
	l.set(func(f *fakeLoader) { f.err = nil })
	k2 := mustGet(t, c, 1, 1)
	checkKey(t, k2, 1, 1)
	if mustGet(t, c, 1, 1) != k2 {
		t.Fatalf("recovered key not cached")
	}
	wantStats(t, c, keycache.Stats{Hits: 1, Misses: 7, StaleServes: 4, Loads: 7, LoadErrors: 5, Entries: 1})
	l.requireAllZeroed(t)
}

func TestZeroOutageBudget(t *testing.T) {
	l := &fakeLoader{}
	clk := newClock()
	c := newCache(t, l, clk, func(o *keycache.Opts[*envelope.Key]) { o.OutageBudget = 0 })
	mustGet(t, c, 1, 1)
	l.set(func(f *fakeLoader) { f.err = outage() })
	clk.Advance(time.Minute)
	if _, err := c.Get(context.Background(), 1, 1); !errors.Is(err, keycache.ErrKeyUnavailable) {
		t.Fatalf("served stale without a budget: %v", err)
	}
}

func TestDefinitiveErrorIsNotServedStale(t *testing.T) {
	for _, cause := range []error{errDisabled, hsm.ErrUnwrap} {
		t.Run(cause.Error(), func(t *testing.T) {
			l := &fakeLoader{}
			clk := newClock()
			c := newCache(t, l, clk)
			mustGet(t, c, 1, 1)
			mustGet(t, c, 1, 2)
			l.set(func(f *fakeLoader) { f.errFor = map[keycache.ID]error{{KeyringID: 1, Version: 1}: cause} })
			clk.Advance(time.Minute + time.Second) // well inside the outage budget
			_, err := c.Get(context.Background(), 1, 1)
			if !errors.Is(err, keycache.ErrKeyUnavailable) || !errors.Is(err, cause) || errors.Is(err, hsm.ErrUnavailable) {
				t.Fatalf("Get = %v, want ErrKeyUnavailable wrapping %v", err, cause)
			}
			if s := c.Stats(); s.Entries != 1 || s.StaleServes != 0 {
				t.Fatalf("failed version not evicted: %+v", s)
			}
			if _, err := c.Get(context.Background(), 1, 1); !errors.Is(err, cause) || l.Calls() != 4 {
				t.Fatalf("second Get = %v (calls %d), want a new load failing again", err, l.Calls())
			}
			checkKey(t, mustGet(t, c, 1, 2), 1, 2) // other versions unaffected
			l.requireAllZeroed(t)
		})
	}
}

func TestLoadTimeoutCountsAsOutage(t *testing.T) {
	l := &fakeLoader{gate: make(chan struct{})} // never released
	c := newCache(t, l, newClock(), func(o *keycache.Opts[*envelope.Key]) { o.LoadTimeout = 20 * time.Millisecond })
	start := time.Now()
	_, err := c.Get(context.Background(), 1, 1)
	if !errors.Is(err, keycache.ErrKeyUnavailable) || !errors.Is(err, hsm.ErrUnavailable) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Get = %v", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("timeout took %v", d)
	}
}

func TestStaleServedAfterLoadTimeout(t *testing.T) {
	l := &fakeLoader{}
	clk := newClock()
	c := newCache(t, l, clk, func(o *keycache.Opts[*envelope.Key]) { o.LoadTimeout = 20 * time.Millisecond })
	k1 := mustGet(t, c, 1, 1)
	l.set(func(f *fakeLoader) { f.gate = make(chan struct{}) }) // HSM hangs
	clk.Advance(2 * time.Minute)
	if k := mustGet(t, c, 1, 1); k != k1 {
		t.Fatalf("hung loader: expired key not served within the budget")
	}
}

func TestCallerCancelDoesNotAbortLoad(t *testing.T) {
	l := &fakeLoader{gate: make(chan struct{}), entered: make(chan struct{}, 1)}
	c := newCache(t, l, newClock())
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		_, err := c.Get(ctx, 1, 1)
		done <- err
	}()
	recv(t, l.entered)
	cancel()
	if err := recv(t, done); !errors.Is(err, context.Canceled) || errors.Is(err, keycache.ErrKeyUnavailable) {
		t.Fatalf("cancelled Get = %v", err)
	}
	close(l.gate)
	deadline := time.Now().Add(10 * time.Second)
	for c.Stats().Entries == 0 {
		if time.Now().After(deadline) {
			t.Fatalf("load abandoned with its first caller")
		}
		time.Sleep(time.Millisecond)
	}
	checkKey(t, mustGet(t, c, 1, 1), 1, 1)
	if l.Calls() != 1 {
		t.Fatalf("calls = %d, want 1", l.Calls())
	}
}

func TestEvictionKeepsHandedOutKeysWorking(t *testing.T) {
	l := &fakeLoader{}
	c := newCache(t, l, newClock(), func(o *keycache.Opts[*envelope.Key]) { o.MaxEntries = 2 })
	a := mustGet(t, c, 1, 1)
	mustGet(t, c, 1, 2)
	mustGet(t, c, 1, 2) // 1/1 is now least recently used
	mustGet(t, c, 1, 3)
	wantStats(t, c, keycache.Stats{Hits: 1, Misses: 3, Loads: 3, Evictions: 1, Entries: 2})
	// Raw DEK bytes never outlive a load: all zeroed, evicted or not.
	l.requireAllZeroed(t)
	// The evicted key is still whole for whoever holds it …
	checkKey(t, a, 1, 1)
	// … and the cache reloads it on demand.
	a2 := mustGet(t, c, 1, 1)
	if l.Calls() != 4 || a2 == a {
		t.Fatalf("evicted entry not reloaded (calls %d)", l.Calls())
	}
	if mustGet(t, c, 1, 3); l.Calls() != 4 {
		t.Fatalf("1/3 should have survived (LRU order)")
	}
}

func TestInvalidate(t *testing.T) {
	l := &fakeLoader{}
	c := newCache(t, l, newClock())
	k11 := mustGet(t, c, 1, 1)
	mustGet(t, c, 1, 2)
	mustGet(t, c, 2, 1)
	c.Invalidate(1, 1)
	if s := c.Stats(); s.Entries != 2 {
		t.Fatalf("entries after Invalidate = %d", s.Entries)
	}
	if k := mustGet(t, c, 1, 1); k == k11 || l.Calls() != 4 {
		t.Fatalf("Invalidate did not force a reload")
	}
	mustGet(t, c, 1, 2)
	if l.Calls() != 4 {
		t.Fatalf("Invalidate(1,1) dropped other versions")
	}
	checkKey(t, k11, 1, 1) // handed-out key unaffected
	c.InvalidateAll()
	if c.Stats().Entries != 0 {
		t.Fatalf("InvalidateAll left entries")
	}
	mustGet(t, c, 1, 2)
	mustGet(t, c, 2, 1)
	if l.Calls() != 6 {
		t.Fatalf("InvalidateAll did not force reloads (calls %d)", l.Calls())
	}
}

// A version disabled while its load is in flight must not end up cached
// from that load.
func TestInvalidateDuringLoad(t *testing.T) {
	for _, all := range []bool{false, true} {
		l := &fakeLoader{gate: make(chan struct{}), entered: make(chan struct{}, 1)}
		c := newCache(t, l, newClock())
		done := make(chan error, 1)
		go func() {
			k, err := c.Get(context.Background(), 1, 1)
			if err == nil && k == nil {
				err = errors.New("nil key")
			}
			done <- err
		}()
		recv(t, l.entered)
		if all {
			c.InvalidateAll()
		} else {
			c.Invalidate(1, 1)
		}
		l.set(func(f *fakeLoader) { f.entered = nil })
		close(l.gate)
		if err := recv(t, done); err != nil {
			t.Fatalf("Get racing the invalidation: %v", err)
		}
		if c.Stats().Entries != 0 {
			t.Fatalf("load from before the invalidation was cached (all=%v)", all)
		}
		mustGet(t, c, 1, 1)
		if l.Calls() != 2 {
			t.Fatalf("calls = %d, want a fresh load after invalidation", l.Calls())
		}
	}
}

// A Get arriving after Invalidate must not join a load that started
// before it.
func TestGetAfterInvalidateStartsNewLoad(t *testing.T) {
	l := &fakeLoader{gate: make(chan struct{}), entered: make(chan struct{}, 2)}
	c := newCache(t, l, newClock())
	first := make(chan error, 1)
	go func() { _, err := c.Get(context.Background(), 1, 1); first <- err }()
	recv(t, l.entered)
	c.Invalidate(1, 1)
	second := make(chan error, 1)
	go func() { _, err := c.Get(context.Background(), 1, 1); second <- err }()
	recv(t, l.entered) // the second Get started its own load
	close(l.gate)
	if err := recv(t, first); err != nil {
		t.Fatal(err)
	}
	if err := recv(t, second); err != nil {
		t.Fatal(err)
	}
	if l.Calls() != 2 || c.Stats().Entries != 1 {
		t.Fatalf("calls %d entries %d, want 2 and 1", l.Calls(), c.Stats().Entries)
	}
}

func TestPrepareFailure(t *testing.T) {
	l := &fakeLoader{badLen: map[keycache.ID]struct{}{{KeyringID: 1, Version: 1}: {}}}
	c := newCache(t, l, newClock())
	_, err := c.Get(context.Background(), 1, 1)
	if !errors.Is(err, keycache.ErrKeyUnavailable) || !strings.Contains(err.Error(), "16 bytes") {
		t.Fatalf("Get with a bad DEK = %v", err)
	}
	wantStats(t, c, keycache.Stats{Misses: 1, Loads: 1, LoadErrors: 1})
	l.requireAllZeroed(t)
}

func TestErrorsOnFailedLoadZeroBytes(t *testing.T) {
	l := &fakeLoader{err: hsm.ErrUnwrap}
	c := newCache(t, l, newClock())
	if _, err := c.Get(context.Background(), 1, 1); !errors.Is(err, hsm.ErrUnwrap) {
		t.Fatalf("Get = %v", err)
	}
	l.requireAllZeroed(t)
}

func TestClose(t *testing.T) {
	l := &fakeLoader{}
	c := newCache(t, l, newClock())
	k := mustGet(t, c, 1, 1)
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Get(context.Background(), 1, 1); !errors.Is(err, keycache.ErrClosed) {
		t.Fatalf("Get after Close = %v", err)
	}
	if err := c.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	checkKey(t, k, 1, 1)
	if s := c.Stats(); s.Entries != 0 || l.Calls() != 1 {
		t.Fatalf("after Close: %+v, calls %d", s, l.Calls())
	}
}

func TestLoaderFuncAndRealClock(t *testing.T) {
	var calls int
	var mu sync.Mutex
	c, err := keycache.New(keycache.Opts[*envelope.Key]{
		Loader: keycache.LoaderFunc(func(ctx context.Context, ring, version uint32) (secret.Bytes, error) {
			mu.Lock()
			calls++
			mu.Unlock()
			return secret.New(dekFor(ring, version)), nil
		}),
		Prepare: envelope.NewKey, MaxEntries: 4, TTL: time.Hour,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	checkKey(t, mustGet(t, c, 5, 6), 5, 6)
	mustGet(t, c, 5, 6)
	if calls != 1 {
		t.Fatalf("calls = %d", calls)
	}
}

func TestErrorMessagesCarryNoKeyMaterial(t *testing.T) {
	l := &fakeLoader{err: fmt.Errorf("boom: %w", hsm.ErrUnavailable)}
	c := newCache(t, l, newClock())
	_, err := c.Get(context.Background(), 3, 4)
	msg := strings.ToLower(err.Error())
	if strings.Contains(msg, fmt.Sprintf("%x", dekFor(3, 4))[:8]) {
		t.Fatalf("error shows key bytes: %v", err)
	}
	if !strings.Contains(msg, "key ring 3 version 4") {
		t.Fatalf("error does not name the key version: %v", err)
	}
}
