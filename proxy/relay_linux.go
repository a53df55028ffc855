//go:build linux

package proxy

import (
	"fmt"
	"net"
	"os"
	"runtime"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// fastRelay owns the epoll engine of a Server. The engine's threads exist
// only while at least one Serve call runs (sessions never outlive Serve).
type fastRelay struct {
	loops int

	mu     sync.Mutex
	refs   int
	engine *epollEngine
}

// newFastRelay returns nil when the event loop is disabled (loops < 0).
func newFastRelay(loops int) *fastRelay {
	if loops < 0 {
		return nil
	}
	if loops == 0 {
		// One loop thread per four CPUs: on small machines the client and
		// the server need the other cores more than a second loop would.
		loops = max(1, runtime.GOMAXPROCS(0)/4)
	}
	return &fastRelay{loops: loops}
}

func (f *fastRelay) acquire() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.refs == 0 {
		e, err := newEpollEngine(f.loops)
		if err != nil {
			return err
		}
		f.engine = e
	}
	f.refs++
	return nil
}

func (f *fastRelay) release() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.refs--
	if f.refs == 0 {
		f.engine.close()
		f.engine = nil
	}
}

func (f *fastRelay) current() *epollEngine {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.engine
}

// pick returns the event-loop relay for sessions it can serve: plain
// TCP/Unix sockets on both legs and no filters. Everything else (TLS on
// either leg, a session that needs message rewriting) takes the portable
// goroutine relay.
func (f *fastRelay) pick(s *session) relayer {
	if f == nil || s.clientTLS || s.serverTLS || s.filters.up != nil || s.filters.down != nil {
		return nil
	}
	if !isPlainSocket(s.client) || !isPlainSocket(s.server) {
		return nil
	}
	e := f.current()
	if e == nil {
		return nil
	}
	return epollRelay{e}
}

func isPlainSocket(c net.Conn) bool {
	switch c.(type) {
	case *net.TCPConn, *net.UnixConn:
		return true
	}
	return false
}

// epollRelay hands a session's sockets to the event loop (epoll_linux.go).
type epollRelay struct{ e *epollEngine }

var _ relayer = epollRelay{}

func (r epollRelay) relay(s *session) error {
	cfd, err := detachFD(s.client.(syscall.Conn), s.client)
	if err != nil {
		return s.stop(fmt.Errorf("proxy: detach client socket: %w", err))
	}
	sfd, err := detachFD(s.server.(syscall.Conn), s.server)
	if err != nil {
		unix.Close(cfd)
		return s.stop(fmt.Errorf("proxy: detach server socket: %w", err))
	}
	// The handshake may have read ahead; those bytes go first, and they
	// are copied because the session's buffers are released on cleanup.
	toServer := append([]byte(nil), s.clientBuf.buffered()...)
	toClient := append([]byte(nil), s.serverBuf.buffered()...)

	res := r.e.run(s.stopCtx, pairConfig{
		client: cfd, server: sfd,
		toServer: toServer, toClient: toClient,
		maxMsgLen:    s.srv.opts.MaxMessageLen,
		finalMsg:     s.finalMessage,
		upstreamGone: appendFatal(nil, ErrUpstreamLost),
		protocolErr:  appendFatal(nil, ErrProtocolViolation),
	})
	s.bytesUp += uint64(res.BytesFromClient)
	s.bytesDown += uint64(res.BytesFromServer)
	s.srv.stats.bytesUp.Add(uint64(res.BytesFromClient))
	s.srv.stats.bytesDown.Add(uint64(res.BytesFromServer))

	var reason error
	switch {
	case res.ClientProtocolErr, res.ServerProtocolErr:
		reason = newError(ErrProtocolViolation, "", res.Err)
	case res.UpstreamTerminated:
		reason = newError(ErrUpstreamLost, "", res.Err)
	case res.Err == nil:
		reason = errClientGone
	default:
		reason = res.Err // errTerminated: stop already recorded why
	}
	reason = s.stop(reason)
	if res.LingerFD >= 0 {
		lingerFD(res.LingerFD)
	}
	return reason
}

// lingerFD drains a client socket that pgcloak has already shut down for
// writing after its final message, then closes it: closing a socket with
// unread input makes the kernel send a reset, which can destroy the message
// before the client reads it.
func lingerFD(fd int) {
	f := os.NewFile(uintptr(fd), "pgcloak-client")
	c, err := net.FileConn(f) // dups fd
	f.Close()
	if err != nil {
		return
	}
	defer c.Close()
	_ = c.SetReadDeadline(time.Now().Add(lingerTime))
	var buf [512]byte
	for total := 0; total < 64<<10; {
		n, err := c.Read(buf[:])
		total += n
		if err != nil {
			return
		}
	}
}
