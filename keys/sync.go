package keys

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgcloak/pgcloak/keycache"
	"github.com/pgcloak/pgcloak/keyring"
)

// Listener reconnection backoff.
const (
	minBackoff = 100 * time.Millisecond
	maxBackoff = 30 * time.Second
)

// closeTimeout bounds the last counter flush in Close and closing the
// listener's connection.
const closeTimeout = 5 * time.Second

// Run follows the key store until ctx ends or Close is called: it listens
// on keyring.NotifyChannel (reconnecting with backoff), re-reads every
// version's state every PollInterval and after every (re)connection, and
// flushes the encryption counters every FlushInterval. Failures are logged
// and retried; Run returns nil when stopped. It may be called once.
func (s *Source) Run(ctx context.Context) error {
	s.lmu.Lock()
	if s.running || s.closed {
		s.lmu.Unlock()
		return errors.New("keys: Run called twice or after Close")
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
	var wg sync.WaitGroup
	wg.Go(func() { s.listenLoop(ctx) })
	wg.Go(func() { s.every(ctx, s.pollInterval, s.poll) })
	wg.Go(func() { s.every(ctx, s.flushInterval, s.flush) })
	wg.Wait()
	return nil
}

// Close stops Run and waits for it, flushes the encryption counters one
// last time and closes the key cache (keys already handed out stay valid
// for their holders). It returns the flush error, if any. Idempotent.
func (s *Source) Close() error {
	s.closeOnce.Do(func() {
		s.lmu.Lock()
		s.closed = true
		running := s.running
		s.lmu.Unlock()
		close(s.quit)
		if running {
			<-s.runDone
		}
		ctx, cancel := context.WithTimeout(context.Background(), closeTimeout)
		defer cancel()
		if err := s.store.Flush(ctx); err != nil {
			s.closeErr = fmt.Errorf("keys: %w", err)
		}
		_ = s.cache.Close()
	})
	return s.closeErr
}

// every calls fn every interval until ctx ends.
func (s *Source) every(ctx context.Context, interval time.Duration, fn func(context.Context)) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			fn(ctx)
		}
	}
}

func (s *Source) flush(ctx context.Context) {
	fctx, cancel := context.WithTimeout(ctx, s.loadTimeout)
	defer cancel()
	if err := s.store.Flush(fctx); err != nil && ctx.Err() == nil {
		s.log.Warn().Err(err).Msg("encryption counters not flushed; kept for the next flush")
	}
}

func (s *Source) poll(ctx context.Context) {
	if err := s.resync(ctx); err != nil && ctx.Err() == nil {
		s.log.Warn().Err(err).Msg("key store poll failed; cached keys stay in use within their TTL")
	}
}

// listenLoop keeps a LISTEN connection open until ctx ends.
func (s *Source) listenLoop(ctx context.Context) {
	backoff := minBackoff
	for {
		start := time.Now()
		err := s.listen(ctx)
		if ctx.Err() != nil {
			return
		}
		if time.Since(start) > maxBackoff {
			backoff = minBackoff // it worked for a while: reconnect promptly
		}
		s.log.Warn().Err(err).Dur("retry_in", backoff).Msg("key store listener lost; state changes are polled until it is back")
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, maxBackoff)
	}
}

// listen takes a connection out of the key store's pool, listens on it
// and handles notifications until the connection fails or ctx ends.
func (s *Source) listen(ctx context.Context) error {
	pc, err := s.store.Pool().Acquire(ctx)
	if err != nil {
		return fmt.Errorf("keys: listen: %w", err)
	}
	conn := pc.Hijack() // ours alone: it never goes back to the pool in LISTEN state
	defer func() {
		cctx, cancel := context.WithTimeout(context.Background(), closeTimeout)
		defer cancel()
		_ = conn.Close(cctx)
	}()
	if _, err := conn.Exec(ctx, "LISTEN "+pgx.Identifier{keyring.NotifyChannel}.Sanitize()); err != nil {
		return fmt.Errorf("keys: listen: %w", err)
	}
	s.lonce.Do(func() { close(s.listening) })
	// Changes made while nobody listened were not announced to us.
	if err := s.resync(ctx); err != nil && ctx.Err() == nil {
		s.log.Warn().Err(err).Msg("key store re-read after LISTEN failed")
	}
	for {
		n, err := conn.WaitForNotification(ctx)
		if err != nil {
			return fmt.Errorf("keys: listen: %w", err)
		}
		s.notified(ctx, n.Payload)
	}
}

// notified handles one payload of keyring.NotifyChannel. The payload only
// says where to look: the key store is read again.
func (s *Source) notified(ctx context.Context, payload string) {
	n, err := keyring.ParseNotification(payload)
	if err != nil {
		s.log.Debug().Err(err).Msg("ignored a malformed key store notification")
		return
	}
	s.dropActive(n.Keyring, nil)
	s.smu.Lock()
	id, ok := s.rings[n.Keyring]
	s.smu.Unlock()
	if ok {
		// At once, before the re-read: a disabled version must stop
		// serving even if the read below fails.
		s.cache.Invalidate(id, n.Version)
	}
	rctx, cancel := context.WithTimeout(ctx, s.loadTimeout)
	defer cancel()
	vs, err := s.store.Versions(rctx, n.Keyring)
	if err != nil {
		if ctx.Err() == nil && !errors.Is(err, keyring.ErrNotFound) {
			s.log.Warn().Err(err).Str("keyring", n.Keyring).Msg("key store re-read after a notification failed")
		}
		return
	}
	s.apply(vs, map[string]bool{n.Keyring: true})
}

// resync reads every version's state and applies it.
func (s *Source) resync(ctx context.Context) error {
	rctx, cancel := context.WithTimeout(ctx, s.loadTimeout)
	defer cancel()
	vs, err := s.store.List(rctx)
	if err != nil {
		return err
	}
	s.apply(vs, nil)
	return nil
}

// apply compares versions read from the key store with what was seen
// before. A version whose state changed, or that is seen for the first
// time in a state that forbids decryption, is invalidated in the key
// cache. A remembered active version that the key store no longer calls
// active is forgotten. complete lists rings of which vs holds every
// version; nil means vs holds every version of every ring.
func (s *Source) apply(vs []keyring.Version, complete map[string]bool) {
	activeOf := map[string]keycache.ID{}
	covered := map[string]bool{}
	s.smu.Lock()
	for _, v := range vs {
		if v.Purpose != keyring.PurposeEncryption {
			continue
		}
		id := keycache.ID{KeyringID: v.KeyringID, Version: v.Version}
		s.rings[v.Keyring] = v.KeyringID
		covered[v.Keyring] = true
		old, seen := s.known[id]
		s.known[id] = v.State
		if (seen && old != v.State) || (!seen && !v.State.CanDecrypt()) {
			s.cache.Invalidate(id.KeyringID, id.Version)
		}
		if v.State == keyring.StateActive {
			activeOf[v.Keyring] = id
		}
	}
	s.smu.Unlock()
	for ring := range complete {
		covered[ring] = true
	}

	var stale []string
	s.amu.RLock()
	for ring, a := range s.actives {
		if complete != nil && !covered[ring] {
			continue // not part of this read
		}
		if want, ok := activeOf[ring]; !ok || want.KeyringID != a.id || want.Version != a.version {
			stale = append(stale, ring)
		}
	}
	s.amu.RUnlock()
	for _, ring := range stale {
		s.dropActive(ring, nil)
	}
}

// learnRing records a ring's id (from a read of its active version), so
// that a notification naming the ring can invalidate at once.
func (s *Source) learnRing(ring string, id uint32) {
	s.smu.Lock()
	s.rings[ring] = id
	s.smu.Unlock()
}
