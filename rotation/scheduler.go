package rotation

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/rs/zerolog"

	"github.com/pgcloak/pgcloak/keyring"
)

// Defaults for the zero fields of Opts.
const (
	DefaultCheckInterval = time.Minute
	DefaultCheckTimeout  = 30 * time.Second
)

// Store is what a Scheduler needs of the key store; *keyring.Store has it.
type Store interface {
	// ActiveVersion returns a ring's active version with its flushed
	// encryption count and activation time.
	ActiveVersion(ctx context.Context, ring string) (keyring.Version, error)
	// UnflushedEncryptions returns what this process counted for a
	// version and has not flushed yet.
	UnflushedEncryptions(keyringID, version uint32) int64
	// RotateIfActive rotates ring only if version is still active.
	RotateIfActive(ctx context.Context, ring string, version uint32, reason string) (keyring.Version, bool, error)
	// MayRotate reports whether the key store lets this process rotate.
	MayRotate(ctx context.Context) (role string, ok bool, err error)
}

var _ Store = (*keyring.Store)(nil)

// Opts configures a Scheduler.
type Opts struct {
	// Store reads versions and rotates. Required.
	Store Store
	// Pool is the key store's pool (keyring.Store.Pool). The leadership
	// connection is taken out of it for good while this process leads.
	// Required.
	Pool *pgxpool.Pool
	// Policies lists the encryption key rings to rotate. May be empty (the
	// Scheduler then only takes part in the election).
	Policies []Policy
	// CheckInterval is how often the leader checks every ring, and how
	// often the others try to become the leader. Zero:
	// DefaultCheckInterval.
	CheckInterval time.Duration
	// CheckTimeout bounds one check of all rings, rotations included (a
	// rotation wraps a new DEK with the KEK). Zero: DefaultCheckTimeout.
	CheckTimeout time.Duration
	// Logger receives leadership changes and rotations (info) and
	// failures (warn). Nothing logged names key material.
	Logger zerolog.Logger
}

// Scheduler rotates the active versions of encryption key rings when
// their policy says so, while it is the elected leader among the
// processes sharing the key store; see the package documentation.
type Scheduler struct {
	store    Store
	policies []Policy
	interval time.Duration
	timeout  time.Duration
	log      zerolog.Logger

	lead    leader // used by Run's goroutine only
	leading atomic.Bool
	// Used by Run's goroutine only: the last election attempt failed, or
	// found that the key store refuses this process rotations (each
	// warned once until it changes).
	failing, refused bool

	lmu       sync.Mutex
	running   bool
	closed    bool
	quit      chan struct{}
	runDone   chan struct{}
	closeOnce sync.Once
}

// New validates opts and returns a Scheduler. Call Run (in a goroutine)
// and Close when done.
func New(opts Opts) (*Scheduler, error) {
	switch {
	case opts.Store == nil:
		return nil, errors.New("rotation: Store is required")
	case opts.Pool == nil:
		return nil, errors.New("rotation: Pool is required")
	case opts.CheckInterval < 0:
		return nil, fmt.Errorf("rotation: CheckInterval must not be negative, got %v", opts.CheckInterval)
	case opts.CheckTimeout < 0:
		return nil, fmt.Errorf("rotation: CheckTimeout must not be negative, got %v", opts.CheckTimeout)
	}
	seen := map[string]bool{}
	for _, p := range opts.Policies {
		if err := p.validate(); err != nil {
			return nil, err
		}
		if seen[p.Ring] {
			return nil, fmt.Errorf("rotation: two policies for key ring %s", p.Ring)
		}
		seen[p.Ring] = true
	}
	s := &Scheduler{
		store:    opts.Store,
		policies: append([]Policy(nil), opts.Policies...),
		interval: opts.CheckInterval,
		timeout:  opts.CheckTimeout,
		log:      opts.Logger,
		lead:     leader{pool: opts.Pool, key: LockKey},
		quit:     make(chan struct{}),
		runDone:  make(chan struct{}),
	}
	if s.interval == 0 {
		s.interval = DefaultCheckInterval
	}
	if s.timeout == 0 {
		s.timeout = DefaultCheckTimeout
	}
	return s, nil
}

// Leading reports whether this Scheduler holds the leadership lock (as of
// its last check).
func (s *Scheduler) Leading() bool { return s.leading.Load() }

// Run takes part in the leader election and, while leading, checks every
// ring each CheckInterval, starting at once. It returns nil when ctx ends
// or Close is called, after releasing the leadership. It may be called
// once.
func (s *Scheduler) Run(ctx context.Context) error {
	s.lmu.Lock()
	if s.running || s.closed {
		s.lmu.Unlock()
		return errors.New("rotation: Run called twice or after Close")
	}
	s.running = true
	s.lmu.Unlock()
	defer close(s.runDone)

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		select {
		case <-s.quit:
			cancel()
		case <-ctx.Done():
		}
	}()
	defer s.stepDown()

	t := time.NewTicker(s.interval)
	defer t.Stop()
	for {
		s.tick(ctx)
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// Close stops Run, waits for it and releases the leadership. Idempotent.
func (s *Scheduler) Close() {
	s.closeOnce.Do(func() {
		s.lmu.Lock()
		s.closed = true
		running := s.running
		s.lmu.Unlock()
		close(s.quit)
		if running {
			<-s.runDone
		}
	})
}

// tick is one round: take the leadership if nobody holds it, and check
// the rings while holding it.
func (s *Scheduler) tick(ctx context.Context) {
	cctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	if !s.leading.Load() {
		if !s.mayRotate(cctx) {
			return
		}
		ok, err := s.lead.acquire(cctx)
		switch {
		case err != nil && ctx.Err() == nil:
			if !s.failing {
				s.log.Warn().Err(err).Dur("retry_in", s.interval).Msg("rotation leader election failed")
			}
			s.failing = true
			return
		case err != nil || !ok:
			s.failing = false
			return
		}
		s.failing = false
		s.leading.Store(true)
		s.log.Info().Str("lock", fmt.Sprintf("%#x", LockKey)).Dur("check_interval", s.interval).Int("keyrings", len(s.policies)).
			Msg("rotation leadership acquired")
	}
	now, err := s.lead.confirm(cctx)
	if err != nil {
		if ctx.Err() == nil {
			s.leading.Store(false)
			s.log.Warn().Err(err).Msg("rotation leadership lost")
		}
		// else: stopping; stepDown logs the release (the connection, and
		// with it the lock, is already gone).
		return
	}
	s.check(cctx, now)
}

// mayRotate reports whether this process may stand for election: only a
// process whose key-store role may rotate does, so that one that could not
// act never keeps the leadership from one that could.
func (s *Scheduler) mayRotate(ctx context.Context) bool {
	role, ok, err := s.store.MayRotate(ctx)
	switch {
	case err != nil:
		if !s.failing && ctx.Err() == nil {
			s.log.Warn().Err(err).Dur("retry_in", s.interval).Msg("rotation leader election failed")
		}
		s.failing = true
		return false
	case !ok:
		if !s.refused {
			s.log.Warn().Str("role", role).
				Msg("scheduled rotation off in this proxy: its key-store role may not rotate keys, so it does not stand for election (grant the rotation role, docs/keys.md §5)")
		}
		s.refused = true
		return false
	}
	if s.refused {
		s.log.Info().Str("role", role).Msg("scheduled rotation on in this proxy: its key-store role may now rotate keys")
	}
	s.refused = false
	return true
}

// stepDown releases the leadership at the end of Run.
func (s *Scheduler) stepDown() {
	if !s.leading.Load() {
		return
	}
	s.lead.release()
	s.leading.Store(false)
	s.log.Info().Msg("rotation leadership released")
}

// check looks at every ring once; now is the key store's clock.
func (s *Scheduler) check(ctx context.Context, now time.Time) {
	for _, p := range s.policies {
		if ctx.Err() != nil {
			return
		}
		s.checkRing(ctx, p, now)
	}
}

// checkRing rotates p.Ring's active version if p says it is due. It
// returns the rotation's decision and whether this call rotated.
func (s *Scheduler) checkRing(ctx context.Context, p Policy, now time.Time) (Decision, bool) {
	v, err := s.store.ActiveVersion(ctx, p.Ring)
	if err != nil {
		if ctx.Err() == nil {
			s.log.Warn().Err(err).Str("keyring", p.Ring).Msg("scheduled rotation: cannot read the active version; retrying at the next check")
		}
		return Decision{}, false
	}
	d, due, err := p.Due(v, s.store.UnflushedEncryptions(v.KeyringID, v.Version), now)
	if err != nil {
		s.log.Warn().Err(err).Str("keyring", p.Ring).Msg("scheduled rotation: skipped")
		return Decision{}, false
	}
	if !due {
		return d, false
	}
	nv, rotated, err := s.store.RotateIfActive(ctx, p.Ring, v.Version, d.Reason())
	switch {
	case err != nil:
		if ctx.Err() == nil {
			s.log.Warn().Err(err).Str("keyring", p.Ring).Uint32("version", v.Version).Str("trigger", d.Trigger.String()).
				Msg("scheduled rotation failed; retrying at the next check")
		}
		return d, false
	case !rotated:
		s.log.Info().Str("keyring", p.Ring).Uint32("version", v.Version).Uint32("active", nv.Version).
			Msg("scheduled rotation: already rotated by another process")
		return d, false
	}
	s.log.Info().Str("keyring", p.Ring).Uint32("previous", v.Version).Uint32("version", nv.Version).
		Str("trigger", d.Trigger.String()).Int64("encryptions", d.Encryptions).
		Int64("rotate_after_encryptions", p.RotateAfterEncryptions).
		Str("age", FormatDuration(d.Age)).Str("rotate_after", FormatDuration(p.RotateAfter)).
		Msg("key rotated on schedule")
	return d, true
}
