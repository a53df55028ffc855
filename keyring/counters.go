package keyring

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
)

// counters holds encryptions not yet flushed, per (key ring id, version).
type counters struct {
	m sync.Map // uint64(ring)<<32 | version → *atomic.Int64
}

func counterKey(keyringID, version uint32) uint64 { return uint64(keyringID)<<32 | uint64(version) }

// CountEncryptions adds n values sealed under (keyringID, version) to an
// in-memory counter. It is cheap enough for the hot path (one atomic add
// once the version has been seen) and never touches the database; Flush
// adds the counts to key_versions.encryptions. Counts are approximate: a
// crash loses what was not flushed, and proxies add up only when they
// flush. That is what the rotate_after_encryptions margin below the
// AES-GCM bound is for.
func (s *Store) CountEncryptions(keyringID, version uint32, n int64) {
	if n <= 0 {
		return
	}
	k := counterKey(keyringID, version)
	c, ok := s.counters.m.Load(k)
	if !ok {
		c, _ = s.counters.m.LoadOrStore(k, new(atomic.Int64))
	}
	c.(*atomic.Int64).Add(n)
}

// UnflushedEncryptions returns what CountEncryptions has counted for a
// version since the last Flush.
func (s *Store) UnflushedEncryptions(keyringID, version uint32) int64 {
	if c, ok := s.counters.m.Load(counterKey(keyringID, version)); ok {
		return c.(*atomic.Int64).Load()
	}
	return 0
}

// Flush adds the counted encryptions to key_versions.encryptions in one
// statement. Counts for deleted or unknown versions are dropped; on error
// the counts are kept for the next Flush. Call it periodically (pgcloak
// serve: every few seconds) and before Close.
func (s *Store) Flush(ctx context.Context) error {
	type taken struct {
		c *atomic.Int64
		n int64
	}
	var (
		rings, versions []int32
		ns              []int64
		took            []taken
	)
	s.counters.m.Range(func(k, v any) bool {
		c := v.(*atomic.Int64)
		if n := c.Swap(0); n > 0 {
			key := k.(uint64)
			rings = append(rings, int32(key>>32))
			versions = append(versions, int32(uint32(key)))
			ns = append(ns, n)
			took = append(took, taken{c, n})
		}
		return true
	})
	if len(ns) == 0 {
		return nil
	}
	_, err := s.pool.Exec(ctx, `UPDATE pgcloak.key_versions kv SET encryptions = kv.encryptions + u.n
		FROM unnest($1::integer[], $2::integer[], $3::bigint[]) AS u(ring, version, n)
		WHERE kv.keyring_id = u.ring AND kv.version = u.version AND kv.state <> 'deleted'`,
		rings, versions, ns)
	if err != nil {
		for _, t := range took {
			t.c.Add(t.n)
		}
		return fmt.Errorf("keyring: flush encryption counters: %w", err)
	}
	return nil
}
