package keys

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/rs/zerolog"
	"golang.org/x/sync/singleflight"

	"github.com/pgcloak/pgcloak/crypto/envelope"
	"github.com/pgcloak/pgcloak/hsm"
	"github.com/pgcloak/pgcloak/keycache"
	"github.com/pgcloak/pgcloak/keyring"
)

// Defaults for the zero fields of Opts.
const (
	DefaultCacheSize     = 1024
	DefaultCacheTTL      = 5 * time.Minute
	DefaultOutageBudget  = 15 * time.Minute
	DefaultActiveTTL     = 5 * time.Second
	DefaultPollInterval  = 30 * time.Second
	DefaultFlushInterval = 5 * time.Second
	DefaultLoadTimeout   = 10 * time.Second
)

// retryInterval spaces key-store reads of an active version while the key
// store is unreachable (as keycache.DefaultRetryInterval does for keys).
const retryInterval = time.Second

// Opts configures a Source.
type Opts struct {
	// Store is the key store. Required. The Source does not close it; close
	// it after Source.Close.
	Store *keyring.Store
	// CacheSize bounds the number of cached key versions (LRU). Zero:
	// DefaultCacheSize.
	CacheSize int
	// CacheTTL is how long a loaded key is used before it is loaded again.
	// Zero: DefaultCacheTTL.
	CacheTTL time.Duration
	// OutageBudget is how long past their TTL keys, and the knowledge of
	// which version is active, keep serving while the key store or the
	// KEK cannot be reached. Zero: DefaultOutageBudget; negative: none.
	OutageBudget time.Duration
	// ActiveTTL is how long the active version of a ring is used without
	// asking the key store again. Zero: DefaultActiveTTL.
	ActiveTTL time.Duration
	// PollInterval is how often Run re-reads every version's state, as a
	// fallback for lost notifications. Zero: DefaultPollInterval.
	PollInterval time.Duration
	// FlushInterval is how often Run flushes the encryption counters.
	// Zero: DefaultFlushInterval.
	FlushInterval time.Duration
	// LoadTimeout bounds one key load (key-store read and KEK unwrap) and
	// one read of an active version. Zero: DefaultLoadTimeout.
	LoadTimeout time.Duration
	// AllowDisabledReads lets Key load versions that are disabled
	// (compromised), each load audited as key.disabled_access, so that rows
	// not yet re-encrypted by the compromise procedure stay readable
	// ([rotation] compromised_reads = "allow"). Disabled versions never
	// encrypt either way: EncryptionKey uses only the active version.
	// False (the default) fails such reads with the key store's refusal.
	AllowDisabledReads bool
	// Logger receives Run's warnings (listener lost, poll or flush failed,
	// serving a stale active version). Nothing logged names key material.
	Logger zerolog.Logger
}

// Source hands out data keys; see the package documentation. It is safe
// for concurrent use.
type Source struct {
	store         *keyring.Store
	cache         *keycache.Cache[*envelope.Key]
	log           zerolog.Logger
	activeTTL     time.Duration
	budget        time.Duration
	pollInterval  time.Duration
	flushInterval time.Duration
	loadTimeout   time.Duration
	now           func() time.Time

	// amu guards actives and agen. agen changes whenever an active entry
	// is dropped; a read of the active version that started under an
	// older agen is handed to its waiters but not remembered, so a
	// notification is never undone by a read in flight.
	amu     sync.RWMutex
	actives map[string]active
	agen    uint64
	group   singleflight.Group

	// smu guards what the last key-store reads said (see sync.go).
	smu   sync.Mutex
	rings map[string]uint32             // ring name → id
	known map[keycache.ID]keyring.State // encryption versions' last seen states

	// lifecycle (see Run and Close)
	lmu       sync.Mutex
	running   bool
	closed    bool
	quit      chan struct{}
	runDone   chan struct{}
	closeOnce sync.Once
	closeErr  error
	listening chan struct{} // closed once the first LISTEN succeeded (tests)
	lonce     sync.Once
}

// active is the remembered active version of one ring.
type active struct {
	id, version uint32
	at          time.Time // when the key store said so
	retryAt     time.Time // during an outage: no new read before this
}

// New validates opts and returns a Source with an empty cache. Call Run
// (in a goroutine) to follow the key store's changes and flush counters,
// and Close when done.
func New(opts Opts) (*Source, error) {
	if opts.Store == nil {
		return nil, errors.New("keys: Store is required")
	}
	for _, d := range []struct {
		name string
		v    *time.Duration
		def  time.Duration
	}{
		{"CacheTTL", &opts.CacheTTL, DefaultCacheTTL},
		{"ActiveTTL", &opts.ActiveTTL, DefaultActiveTTL},
		{"PollInterval", &opts.PollInterval, DefaultPollInterval},
		{"FlushInterval", &opts.FlushInterval, DefaultFlushInterval},
		{"LoadTimeout", &opts.LoadTimeout, DefaultLoadTimeout},
	} {
		switch {
		case *d.v < 0:
			return nil, fmt.Errorf("keys: %s must not be negative, got %v", d.name, *d.v)
		case *d.v == 0:
			*d.v = d.def
		}
	}
	switch {
	case opts.CacheSize < 0:
		return nil, fmt.Errorf("keys: CacheSize must not be negative, got %d", opts.CacheSize)
	case opts.CacheSize == 0:
		opts.CacheSize = DefaultCacheSize
	}
	switch {
	case opts.OutageBudget < 0:
		opts.OutageBudget = 0
	case opts.OutageBudget == 0:
		opts.OutageBudget = DefaultOutageBudget
	}
	cache, err := keycache.New(keycache.Opts[*envelope.Key]{
		Loader:       opts.Store.Loader(keyring.LoaderOpts{Purpose: keyring.PurposeEncryption, AllowDisabled: opts.AllowDisabledReads}),
		Prepare:      envelope.NewKey,
		MaxEntries:   opts.CacheSize,
		TTL:          opts.CacheTTL,
		OutageBudget: opts.OutageBudget,
		LoadTimeout:  opts.LoadTimeout,
	})
	if err != nil {
		return nil, fmt.Errorf("keys: %w", err)
	}
	return &Source{
		store:         opts.Store,
		cache:         cache,
		log:           opts.Logger,
		activeTTL:     opts.ActiveTTL,
		budget:        opts.OutageBudget,
		pollInterval:  opts.PollInterval,
		flushInterval: opts.FlushInterval,
		loadTimeout:   opts.LoadTimeout,
		now:           time.Now,
		actives:       map[string]active{},
		rings:         map[string]uint32{},
		known:         map[keycache.ID]keyring.State{},
		quit:          make(chan struct{}),
		runDone:       make(chan struct{}),
		listening:     make(chan struct{}),
	}, nil
}

// RingName is the encryption key ring of a classification (DESIGN.md §3).
func RingName(classification string) string { return classification }

// EncryptionKey returns the active version of the encryption key ring of
// classification, for sealing new values. Errors wrap
// keycache.ErrKeyUnavailable (and the cause: keyring.ErrNotFound for a
// ring without an active version, keyring.ErrWrongPurpose, an outage past
// the budget, …), or the ctx error when ctx ends first.
func (s *Source) EncryptionKey(ctx context.Context, classification string) (*envelope.Key, error) {
	ring := RingName(classification)
	a, err := s.active(ctx, ring)
	if err != nil {
		return nil, err
	}
	key, err := s.cache.Get(ctx, a.id, a.version)
	if err == nil {
		return key, nil
	}
	if ctx.Err() != nil || errors.Is(err, hsm.ErrUnavailable) || errors.Is(err, keycache.ErrClosed) {
		return nil, fmt.Errorf("keys: %s: %w", ring, err)
	}
	// A definitive refusal: the version taken for active was disabled or
	// retired since. Ask the key store again, once.
	s.dropActive(ring, &a)
	b, err2 := s.active(ctx, ring)
	if err2 != nil {
		return nil, err2
	}
	if b.id == a.id && b.version == a.version {
		return nil, fmt.Errorf("keys: %s: %w", ring, err)
	}
	key, err = s.cache.Get(ctx, b.id, b.version)
	if err != nil {
		return nil, fmt.Errorf("keys: %s: %w", ring, err)
	}
	return key, nil
}

// Key returns the key version a ciphertext header names. Errors wrap
// keycache.ErrKeyUnavailable and the cause: keyring.ErrKeyDestroyed,
// keyring.ErrKeyDisabled or keyring.ErrKeyRetired for a version in a
// state that forbids use, keyring.ErrNotFound, keyring.ErrWrongPurpose,
// hsm.ErrUnwrap, hsm.ErrUnavailable past the outage budget; or the ctx
// error.
func (s *Source) Key(ctx context.Context, keyringID, version uint32) (*envelope.Key, error) {
	return s.cache.Get(ctx, keyringID, version)
}

// Encrypted records n values sealed under key (keyring.Store
// CountEncryptions: an atomic add, no I/O). Run and Close flush the
// counts to the key store.
func (s *Source) Encrypted(key *envelope.Key, n int) {
	if key == nil || n <= 0 {
		return
	}
	s.store.CountEncryptions(key.KeyringID(), key.Version(), int64(n))
}

// CacheStats returns the key cache's counters (no key material, no ids).
func (s *Source) CacheStats() keycache.Stats { return s.cache.Stats() }

// active returns the remembered active version of ring, reading it from
// the key store when it is older than ActiveTTL.
func (s *Source) active(ctx context.Context, ring string) (active, error) {
	now := s.now()
	s.amu.RLock()
	a, ok := s.actives[ring]
	s.amu.RUnlock()
	if ok && (now.Sub(a.at) < s.activeTTL || now.Before(a.retryAt)) {
		return a, nil
	}
	ch := s.group.DoChan(ring, func() (any, error) { return s.readActive(ctx, ring) })
	select {
	case r := <-ch:
		if r.Err != nil {
			return active{}, r.Err
		}
		return r.Val.(active), nil
	case <-ctx.Done():
		return active{}, fmt.Errorf("keys: %s: waiting for the active version: %w", ring, context.Cause(ctx))
	}
}

// readActive asks the key store for ring's active version. It runs once
// per flight, detached from the cancellation of the call that started it.
func (s *Source) readActive(ctx context.Context, ring string) (active, error) {
	s.amu.RLock()
	gen := s.agen
	prev, hadPrev := s.actives[ring]
	s.amu.RUnlock()

	lctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.loadTimeout)
	defer cancel()
	v, err := s.store.ActiveVersion(lctx, ring)
	now := s.now()
	switch {
	case err == nil && v.Purpose != keyring.PurposeEncryption:
		return active{}, fmt.Errorf("keys: %s: %w: %w: it is a %s key ring", ring, keycache.ErrKeyUnavailable, keyring.ErrWrongPurpose, v.Purpose)
	case err == nil:
		a := active{id: v.KeyringID, version: v.Version, at: now}
		s.amu.Lock()
		if s.agen == gen {
			s.actives[ring] = a
		}
		s.amu.Unlock()
		s.learnRing(ring, v.KeyringID)
		return a, nil
	case errors.Is(err, keyring.ErrNotFound):
		s.dropActive(ring, nil)
		return active{}, fmt.Errorf("keys: %s: %w: %w", ring, keycache.ErrKeyUnavailable, err)
	}
	// The key store did not answer: keep the version last seen active
	// within the outage budget, and do not ask again for a second.
	if hadPrev && now.Sub(prev.at) < s.activeTTL+s.budget {
		prev.retryAt = now.Add(retryInterval)
		s.amu.Lock()
		if cur, ok := s.actives[ring]; ok && s.agen == gen && cur.at.Equal(prev.at) {
			s.actives[ring] = prev
		}
		s.amu.Unlock()
		s.log.Warn().Err(err).Str("keyring", ring).Uint32("version", prev.version).
			Dur("since_confirmed", now.Sub(prev.at)).Msg("key store unreachable: encrypting with the version last seen active")
		return prev, nil
	}
	if hadPrev {
		return active{}, fmt.Errorf("keys: %s: active version: outage budget of %v past %v exhausted: %w: %w: %w",
			ring, s.budget, s.activeTTL, keycache.ErrKeyUnavailable, hsm.ErrUnavailable, err)
	}
	return active{}, fmt.Errorf("keys: %s: active version: %w: %w: %w", ring, keycache.ErrKeyUnavailable, hsm.ErrUnavailable, err)
}

// dropActive forgets ring's active version, and makes a read in flight
// forget what it read; with only set, only if ring's remembered active
// version is still that one.
func (s *Source) dropActive(ring string, only *active) {
	s.amu.Lock()
	defer s.amu.Unlock()
	if only != nil {
		cur, ok := s.actives[ring]
		if !ok || cur.id != only.id || cur.version != only.version {
			return
		}
	}
	delete(s.actives, ring)
	s.agen++
}
