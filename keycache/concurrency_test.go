package keycache_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/pgcloak/pgcloak/crypto/envelope"
	"github.com/pgcloak/pgcloak/keycache"
)

// TestConcurrentChurn runs Gets against invalidations, clock jumps,
// evictions and a flapping HSM; run it with -race. Every key handed out
// must be the right one for its id, and every failure must be a key
// unavailability (the only errors the fake can cause).
func TestConcurrentChurn(t *testing.T) {
	l := &fakeLoader{}
	clk := newClock()
	c := newCache(t, l, clk, func(o *keycache.Opts[*envelope.Key]) {
		o.MaxEntries = 4
		o.TTL = time.Second
		o.OutageBudget = 3 * time.Second
		o.RetryInterval = 100 * time.Millisecond
	})
	stop := make(chan struct{})
	var wg sync.WaitGroup
	errs := make(chan error, 16)
	for g := range 6 {
		wg.Go(func() {
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				ring, version := uint32(g%2+1), uint32(i%6+1)
				k, err := c.Get(context.Background(), ring, version)
				if err != nil {
					if !errors.Is(err, keycache.ErrKeyUnavailable) {
						errs <- err
						return
					}
					continue
				}
				if k.KeyringID() != ring || k.Version() != version {
					errs <- errors.New("key for the wrong id")
					return
				}
				if i%50 == 0 {
					if err := keyMatches(k, ring, version); err != nil {
						errs <- err
						return
					}
				}
			}
		})
	}
	wg.Go(func() {
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			switch i % 4 {
			case 0:
				c.Invalidate(1, uint32(i%6+1))
			case 1:
				clk.Advance(700 * time.Millisecond)
			case 2:
				l.set(func(f *fakeLoader) {
					if f.err == nil {
						f.err = outage()
					} else {
						f.err = nil
					}
				})
			case 3:
				if i%40 == 3 {
					c.InvalidateAll()
				}
			}
			time.Sleep(50 * time.Microsecond)
		}
	})
	time.Sleep(300 * time.Millisecond)
	close(stop)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	s := c.Stats()
	t.Logf("churn: %+v", s)
	if s.Hits == 0 || s.Loads == 0 || s.Entries > 4 {
		t.Fatalf("implausible stats after churn: %+v", s)
	}
	l.requireAllZeroed(t)
}

func TestGetHitDoesNotAllocate(t *testing.T) {
	c := newCache(t, &fakeLoader{}, nil)
	mustGet(t, c, 1, 1)
	ctx := context.Background()
	allocs := testing.AllocsPerRun(1000, func() {
		if _, err := c.Get(ctx, 1, 1); err != nil {
			t.Fatal(err)
		}
	})
	if allocs != 0 {
		t.Fatalf("cache hit allocates %v times", allocs)
	}
}

func BenchmarkGetHit(b *testing.B) {
	c := newCache(b, &fakeLoader{}, nil)
	mustGet(b, c, 1, 1)
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := c.Get(ctx, 1, 1); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkGetHitParallel(b *testing.B) {
	c := newCache(b, &fakeLoader{}, nil)
	for v := uint32(1); v <= 8; v++ {
		mustGet(b, c, 1, v)
	}
	ctx := context.Background()
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		var v uint32
		for pb.Next() {
			v = v%8 + 1
			if _, err := c.Get(ctx, 1, v); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

// BenchmarkGetMiss measures a load: instant fake loader + envelope.NewKey
// (AES key expansion), i.e. the cost the cache adds around a real unwrap.
func BenchmarkGetMiss(b *testing.B) {
	c := newCache(b, &fakeLoader{}, nil)
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		c.Invalidate(1, 1)
		if _, err := c.Get(ctx, 1, 1); err != nil {
			b.Fatal(err)
		}
	}
}
