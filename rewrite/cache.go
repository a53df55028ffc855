package rewrite

import (
	"errors"
	"strings"
	"sync/atomic"

	lru "github.com/hashicorp/golang-lru/v2"
)

// Cache memoises Analyze results (plans and refusals) by statement text,
// search_path and catalog generation. It is safe for concurrent use.
// Cached plans are shared: callers must not modify them.
type Cache struct {
	lru          *lru.Cache[cacheKey, cacheEntry]
	hits, misses atomic.Uint64
}

type cacheKey struct {
	sql        string
	searchPath string
	gen        uint64
}

type cacheEntry struct {
	plan *Plan
	err  error
}

// CacheStats are the cache's counters since NewCache.
type CacheStats struct {
	Hits, Misses uint64
	Len          int
}

// NewCache returns a cache holding at most size entries (LRU eviction).
func NewCache(size int) (*Cache, error) {
	if size <= 0 {
		return nil, errors.New("rewrite: cache size must be positive")
	}
	l, err := lru.New[cacheKey, cacheEntry](size)
	if err != nil {
		return nil, err
	}
	return &Cache{lru: l}, nil
}

// Analyze returns the cached result for (sql, searchPath, cat.Generation())
// or computes it with Analyze. Parse errors are not cached.
func (c *Cache) Analyze(sql string, cat Catalog, searchPath []string) (*Plan, error) {
	k := cacheKey{sql: sql, searchPath: strings.Join(searchPath, "\x00"), gen: cat.Generation()}
	if e, ok := c.lru.Get(k); ok {
		c.hits.Add(1)
		return e.plan, e.err
	}
	c.misses.Add(1)
	p, err := Analyze(sql, cat, searchPath)
	var pe *ParseError
	if !errors.As(err, &pe) {
		c.lru.Add(k, cacheEntry{p, err})
	}
	return p, err
}

// Stats returns the hit and miss counters and the current size.
func (c *Cache) Stats() CacheStats {
	return CacheStats{Hits: c.hits.Load(), Misses: c.misses.Load(), Len: c.lru.Len()}
}
