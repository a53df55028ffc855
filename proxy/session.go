package proxy

import (
	"context"
	"errors"
	"fmt"
	"net"
	"runtime/debug"
	"sync"
	"time"

	"github.com/rs/zerolog"
)

// stopWriteGrace bounds the writes still allowed after a session was
// stopped (the final error message, a Terminate to the server), so that a
// peer that stopped reading cannot hold a session open.
const stopWriteGrace = 2 * time.Second

// session is one client connection and its upstream connection. The
// session goroutine runs the handshake, then hands the session to a relayer.
//
// Ownership: during the handshake the session goroutine alone reads and
// writes both connections. During the relay, the relayer owns them (see
// relayer). stop may be called from any goroutine at any time.
type session struct {
	id      uint64
	srv     *Server
	log     zerolog.Logger
	started time.Time

	// client and server are the connections the protocol runs over: a
	// *tls.Conn when TLS is used on that leg, else the TCP connection.
	// clientRaw and serverRaw are the TCP connections underneath (for
	// deadlines and file descriptors). serverRaw is set under mu.
	client, clientRaw net.Conn
	server, serverRaw net.Conn
	clientTLS         bool // TLS terminated at the proxy
	serverTLS         bool // TLS towards the server

	// clientBuf and serverBuf hold bytes read from each side and not yet
	// forwarded; the handshake may leave some for the relay.
	clientBuf, serverBuf *frameBuf

	// Startup parameters worth logging; never secrets.
	user, database, appName string
	params                  map[string]string // all startup parameters

	cancelPID    uint32        // the server's process id, as given to the client; 0 until BackendKeyData
	cancelTarget *cancelTarget // the server's key for cancelPID

	// SCRAM bookkeeping for diagnostics: channel-binding mechanisms were
	// removed, and the client then said it supports binding (GS2 flag 'y').
	saslStripped, saslClientBinds bool

	// Bytes forwarded client→server and server→client (handshake included),
	// for the closing log line. Written by the goroutine owning that
	// direction; read after the relay returned.
	bytesUp, bytesDown uint64

	// filters are the relay hooks; nil in pass-through mode.
	filters struct{ up, down frameFilter }

	// stopCtx is cancelled by the first stop, with the stop reason as its
	// cause: relays that cannot be woken by deadlines wait on it.
	stopCtx    context.Context
	stopCancel context.CancelCauseFunc

	mu         sync.Mutex
	stopReason error // first reason the session was stopped for
}

func newSession(srv *Server, id uint64, conn net.Conn) *session {
	s := &session{
		id:        id,
		srv:       srv,
		log:       srv.log.With().Uint64("conn", id).Logger(),
		started:   time.Now(),
		client:    conn,
		clientRaw: conn,
	}
	s.stopCtx, s.stopCancel = context.WithCancelCause(context.Background())
	return s
}

// run serves the session to its end. It never panics.
func (s *session) run(hardStop context.Context) {
	defer s.cleanup()
	stopOnShutdown := context.AfterFunc(hardStop, func() { s.stop(ErrShutdown) })
	defer stopOnShutdown()

	relaying := false
	err := func() (err error) {
		defer s.recoverPanic(&err)
		if err := s.handshake(hardStop); err != nil {
			return err
		}
		relaying = true
		if s.srv.newFilters != nil {
			s.filters.up, s.filters.down = s.srv.newFilters(s)
		}
		err = s.srv.pickRelay(s).relay(s)
		if proxyEnded(err) {
			s.cancelInFlight()
			s.lingerClose()
		}
		return err
	}()
	if !relaying && errors.Is(err, errPanic) {
		s.writeClientFinal() // the handshake owned the client socket
	}
	s.logEnd(err)
}

// proxyEnded reports whether pgcloak itself ended a relaying session
// (shutdown, protocol violation, internal error) rather than one of the
// peers.
func proxyEnded(err error) bool {
	return err != nil && !isQuiet(err) && !errors.Is(err, ErrUpstreamLost)
}

// cancelInFlight asks the server to cancel whatever the session may still be
// running: when pgcloak gives up on a session, the server must not keep
// working (e.g. on a long query) for a client that is gone, and it reads the
// Terminate only once the query ends. Harmless when the backend is idle.
func (s *session) cancelInFlight() {
	if s.cancelTarget == nil {
		return
	}
	timeout := min(s.srv.opts.HandshakeTimeout, stopWriteGrace)
	if err := forwardCancel(context.Background(), s.cancelTarget, timeout); err != nil {
		s.log.Debug().Err(err).Msg("could not cancel the server's work for a terminated session")
	}
}

// stop records reason as why the session ends, unless an earlier reason was
// recorded, and wakes whatever is blocked on the connections: reads fail at
// once, writes get stopWriteGrace to finish. It returns the recorded reason.
func (s *session) stop(reason error) error {
	s.mu.Lock()
	first := s.stopReason == nil
	if first {
		s.stopReason = reason
	}
	reason = s.stopReason
	raws := [2]net.Conn{s.clientRaw, s.serverRaw}
	s.mu.Unlock()
	if first {
		s.stopCancel(reason)
		past, grace := time.Unix(1, 0), time.Now().Add(stopWriteGrace)
		for _, c := range raws {
			if c != nil {
				_ = c.SetReadDeadline(past)
				_ = c.SetWriteDeadline(grace)
			}
		}
	}
	return reason
}

// reason returns why the session was stopped, or nil while it runs.
func (s *session) reason() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.stopReason
}

// setServerRaw publishes the upstream TCP connection so that stop can wake
// it. It returns the stop reason instead when the session was stopped first.
func (s *session) setServerRaw(c net.Conn) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stopReason != nil {
		return s.stopReason
	}
	s.serverRaw, s.server = c, c
	return nil
}

// finalMessage returns the FATAL ErrorResponse the client should get for
// the session's stop reason, or nil when there is none.
func (s *session) finalMessage() []byte {
	return appendFatal(nil, s.reason())
}

// lingerClose half-closes the client connection after a final message and
// drains what the client still sends for a moment, so that closing with
// unread input (which makes the kernel send a reset) cannot destroy the
// error message before the client has read it.
func (s *session) lingerClose() {
	tcp, ok := s.clientRaw.(interface{ CloseWrite() error })
	if !ok || tcp.CloseWrite() != nil {
		return
	}
	_ = s.clientRaw.SetReadDeadline(time.Now().Add(lingerTime))
	var buf [512]byte
	for total := 0; total < 64<<10; {
		n, err := s.clientRaw.Read(buf[:])
		total += n
		if err != nil {
			return
		}
	}
}

// lingerTime bounds lingerClose.
const lingerTime = 250 * time.Millisecond

// writeClientFinal sends the final message for the stop reason to the
// client. Only the goroutine that owns the client socket may call it.
func (s *session) writeClientFinal() {
	msg := s.finalMessage()
	if len(msg) == 0 {
		return
	}
	_ = s.clientRaw.SetWriteDeadline(time.Now().Add(stopWriteGrace))
	if _, err := s.client.Write(msg); err != nil {
		s.log.Debug().Err(err).Msg("could not send the final error to the client")
	}
}

// terminateMsg is a Terminate message ('X', length 4).
var terminateMsg = [...]byte{'X', 0, 0, 0, 4}

// writeServerGoodbye sends Terminate to the server. Only the goroutine that
// owns the server socket may call it.
func (s *session) writeServerGoodbye() {
	if s.server == nil {
		return
	}
	_ = s.serverRaw.SetWriteDeadline(time.Now().Add(stopWriteGrace))
	_, _ = s.server.Write(terminateMsg[:])
}

// recoverPanic turns a panic into an error (logged with its stack) so that
// one broken session never takes the proxy down.
func (s *session) recoverPanic(err *error) {
	if r := recover(); r != nil {
		s.log.Error().Str("panic", fmt.Sprint(r)).Bytes("stack", debug.Stack()).Msg("session panicked")
		*err = s.stop(fmt.Errorf("%w: %v", errPanic, r))
	}
}

// cleanup closes both connections and releases what the session holds.
func (s *session) cleanup() {
	s.stop(errClientGone) // no-op when already stopped; makes late wake-ups harmless
	_ = s.client.Close()
	s.mu.Lock()
	server := s.server
	s.mu.Unlock()
	if server != nil {
		_ = server.Close()
	}
	if s.cancelTarget != nil {
		s.srv.cancels.remove(s.cancelPID, s.cancelTarget)
	}
	if s.clientBuf != nil {
		s.clientBuf.release()
	}
	if s.serverBuf != nil {
		s.serverBuf.release()
	}
}

// logEnd logs the end of the session at a level that fits the reason:
// info for normal ends, warn for what a peer did wrong or what failed
// outside pgcloak (bad input, upstream trouble), error only for bugs.
func (s *session) logEnd(err error) {
	ev := s.log.Info()
	switch {
	case err == nil || isQuiet(err) || errors.Is(err, ErrShutdown):
	case errors.Is(err, errPanic):
		ev = s.log.Error()
	default:
		var se *sessionError
		if errors.As(err, &se) {
			ev = s.log.Warn()
		} else {
			ev = s.log.Error()
		}
	}
	if err != nil {
		ev = ev.Str("reason", err.Error())
	}
	ev.Dur("duration", time.Since(s.started)).
		Uint64("bytes_in", s.bytesUp).Uint64("bytes_out", s.bytesDown).
		Msg("connection closed")
}
