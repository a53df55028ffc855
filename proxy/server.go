package proxy

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/rs/zerolog"
)

// Defaults for zero Opts fields.
const (
	DefaultHandshakeTimeout = 15 * time.Second
	DefaultShutdownTimeout  = 30 * time.Second
	DefaultMaxMessageLen    = 1<<30 + 1<<20
	DefaultBufferSize       = 64 << 10

	// minBufferSize keeps a relay buffer able to hold a message header.
	minBufferSize = 16
	// pooledBuffers bounds the idle relay buffers kept for new sessions.
	pooledBuffers = 256
)

// Server accepts client connections and runs one session per connection.
// Create it with New; it is safe for concurrent use.
type Server struct {
	opts        Opts
	log         zerolog.Logger
	clientTLS   *tls.Config // nil: answer SSLRequest with 'N'
	clientLeaf  []byte      // the one certificate clients are shown, when unambiguous (DER)
	upstreamTLS *tls.Config // nil: UpstreamTLSDisable
	cancels     *cancelRegistry
	bufs        *bufPool
	nextConnID  atomic.Uint64
	stats       counters

	// fast is the event-loop relay (Linux); nil when disabled.
	fast *fastRelay
	// pickRelay chooses the relay implementation for a session whose
	// handshake is done: the event loop when it can serve the session,
	// else the portable goroutine relay.
	pickRelay func(*session) relayer
	// newFilters returns the relay hooks for a session whose handshake is
	// done (client→server, server→client); nil or nil results mean pure
	// pass-through. The encryption layer will set it.
	newFilters func(*session) (up, down frameFilter)
	// cloak is the encryption layer; nil in pass-through mode.
	cloak *cloakServer
}

// New validates opts, fills in defaults and returns a Server.
func New(opts Opts) (*Server, error) {
	if _, _, err := net.SplitHostPort(opts.UpstreamAddr); err != nil {
		return nil, fmt.Errorf("proxy: upstream address %q: %w", opts.UpstreamAddr, err)
	}
	switch opts.UpstreamTLS {
	case UpstreamTLSDisable, UpstreamTLSPrefer, UpstreamTLSRequire, UpstreamTLSVerifyFull:
	default:
		return nil, fmt.Errorf("proxy: upstream tls mode %v is not valid", opts.UpstreamTLS)
	}
	var err error
	if opts.HandshakeTimeout, err = positiveOr(opts.HandshakeTimeout, DefaultHandshakeTimeout, "handshake timeout"); err != nil {
		return nil, err
	}
	if opts.ShutdownTimeout, err = positiveOr(opts.ShutdownTimeout, DefaultShutdownTimeout, "shutdown timeout"); err != nil {
		return nil, err
	}
	switch {
	case opts.MaxMessageLen == 0:
		opts.MaxMessageLen = DefaultMaxMessageLen
	case opts.MaxMessageLen < 4 || opts.MaxMessageLen > 1<<31-1:
		return nil, fmt.Errorf("proxy: max message length %d out of range [4, 2^31-1]", opts.MaxMessageLen)
	}
	switch {
	case opts.BufferSize == 0:
		opts.BufferSize = DefaultBufferSize
	case opts.BufferSize < minBufferSize:
		return nil, fmt.Errorf("proxy: buffer size %d below %d", opts.BufferSize, minBufferSize)
	}

	s := &Server{
		opts:    opts,
		log:     opts.Logger,
		cancels: newCancelRegistry(),
		bufs:    newBufPool(opts.BufferSize, pooledBuffers),
	}
	if opts.ClientTLS != nil {
		if len(opts.ClientTLS.Certificates) == 0 && opts.ClientTLS.GetCertificate == nil && opts.ClientTLS.GetConfigForClient == nil {
			return nil, errors.New("proxy: client tls configuration has no certificate")
		}
		s.clientTLS = opts.ClientTLS.Clone()
		if len(s.clientTLS.NextProtos) == 0 {
			s.clientTLS.NextProtos = []string{alpnPostgres}
		}
		c := s.clientTLS
		if len(c.Certificates) == 1 && c.GetCertificate == nil && c.GetConfigForClient == nil && len(c.Certificates[0].Certificate) > 0 {
			s.clientLeaf = c.Certificates[0].Certificate[0]
		}
	}
	if s.upstreamTLS, err = upstreamTLSConfig(&opts); err != nil {
		return nil, err
	}
	if opts.Encryption != nil {
		cs, err := newCloakServer(opts.Encryption)
		if err != nil {
			return nil, err
		}
		cs.stats = &s.stats
		s.cloak = cs
		s.newFilters = func(sess *session) (frameFilter, frameFilter) {
			c := newCloak(cs, sess, sess.params)
			return newCloakUp(c), newCloakDown(c)
		}
	}
	s.fast = newFastRelay(opts.EventLoops)
	s.pickRelay = func(sess *session) relayer {
		if r := s.fast.pick(sess); r != nil {
			return r
		}
		return goroutineRelay{}
	}
	return s, nil
}

func positiveOr(d, def time.Duration, what string) (time.Duration, error) {
	switch {
	case d == 0:
		return def, nil
	case d < 0:
		return 0, fmt.Errorf("proxy: %s %v is negative", what, d)
	}
	return d, nil
}

// Serve accepts connections on ln until ctx is cancelled, then shuts down
// gracefully: it stops accepting (closing ln), waits up to ShutdownTimeout
// for the sessions to end, then sends FATAL 57P01 to the remaining clients
// (between messages) and closes them. It returns nil after a shutdown caused
// by ctx, or the listener's error (after the same shutdown) when accepting
// failed for another reason. Serve may run on several listeners at once.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	if s.fast != nil {
		if err := s.fast.acquire(); err != nil {
			return fmt.Errorf("proxy: start event loop: %w", err)
		}
		defer s.fast.release()
	}
	hardStop, hardCancel := context.WithCancel(context.WithoutCancel(ctx))
	defer hardCancel()
	var sessions sync.WaitGroup

	closeLn := context.AfterFunc(ctx, func() { _ = ln.Close() })
	defer closeLn()
	s.log.Info().Str("addr", ln.Addr().String()).Msg("listening")

	acceptErr := s.acceptLoop(ctx, ln, hardStop, &sessions)
	_ = ln.Close()

	done := make(chan struct{})
	go func() {
		sessions.Wait()
		close(done)
	}()
	active := s.stats.sessionsActive.Load()
	if active > 0 {
		s.log.Info().Int64("sessions", active).Dur("timeout", s.opts.ShutdownTimeout).Msg("waiting for sessions to end")
	}
	timer := time.NewTimer(s.opts.ShutdownTimeout)
	defer timer.Stop()
	select {
	case <-done:
	case <-timer.C:
		s.log.Info().Int64("sessions", s.stats.sessionsActive.Load()).Msg("shutdown timeout: terminating sessions")
		hardCancel()
		<-done
	}
	st := s.Stats()
	ev := s.log.Info().Uint64("sessions", st.SessionsAccepted).Uint64("bytes_up", st.BytesUp).Uint64("bytes_down", st.BytesDown)
	if s.cloak != nil {
		ev = ev.Uint64("plan_cache_hits", st.PlanCacheHits).Uint64("plan_cache_misses", st.PlanCacheMisses).
			Uint64("statements_refused", st.StatementsRefused).Uint64("values_encrypted", st.ValuesEncrypted).
			Uint64("values_decrypted", st.ValuesDecrypted).Uint64("decrypt_failures", st.DecryptFailures)
	}
	ev.Msg("stopped")
	if ctx.Err() != nil {
		return nil
	}
	return acceptErr
}

// acceptLoop accepts until ctx is done or the listener fails for good.
func (s *Server) acceptLoop(ctx context.Context, ln net.Listener, hardStop context.Context, sessions *sync.WaitGroup) error {
	var backoff time.Duration
	for {
		conn, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() || isTransientAccept(err) {
				backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
				s.log.Warn().Err(err).Dur("retry_in", backoff).Msg("accept failed")
				select {
				case <-time.After(backoff):
				case <-ctx.Done():
					return nil
				}
				continue
			}
			s.log.Error().Err(err).Msg("accept failed; no longer accepting")
			return fmt.Errorf("proxy: accept: %w", err)
		}
		backoff = 0
		id := s.nextConnID.Add(1)
		s.stats.sessionsAccepted.Add(1)
		s.stats.sessionsActive.Add(1)
		sessions.Add(1)
		go func() {
			defer sessions.Done()
			defer s.stats.sessionsActive.Add(-1)
			sess := newSession(s, id, conn)
			sess.log.Debug().Str("remote", conn.RemoteAddr().String()).Msg("connection accepted")
			sess.run(hardStop)
		}()
	}
}

// isTransientAccept reports accept errors worth retrying: running out of
// file descriptors or a connection aborted before it was accepted.
func isTransientAccept(err error) bool {
	return errors.Is(err, syscall.EMFILE) || errors.Is(err, syscall.ENFILE) ||
		errors.Is(err, syscall.ECONNABORTED) || errors.Is(err, syscall.ENOBUFS) || errors.Is(err, syscall.ENOMEM)
}
