package proxy

import (
	"errors"
	"fmt"
	"io"
	"sync/atomic"

	"golang.org/x/sync/errgroup"
)

// relayer runs the relay phase of a session: from the client's first message
// after ReadyForQuery until either side leaves or the session is stopped.
// It must
//   - forward s.clientBuf's and s.serverBuf's leftovers from the handshake
//     first (the handshake may have read ahead);
//   - end promptly once s.stopCtx is done (s.stop also sets past read
//     deadlines on both connections, which wakes blocking reads);
//   - leave writing to the client to one goroutine, which on exit sends
//     s.finalMessage when it is between messages;
//   - return the reason the session ended (s.stop's first reason).
//
// goroutineRelay is the portable default; Server.pickRelay may choose
// another implementation per session (e.g. an epoll relay for plaintext TCP
// on Linux).
type relayer interface {
	relay(s *session) error
}

// goroutineRelay is two goroutines under an errgroup, one per direction. The
// server→client goroutine is the only writer of the client socket and sends
// the session's final error message; the client→server goroutine is the
// only writer of the server socket.
type goroutineRelay struct{}

var _ relayer = goroutineRelay{}

func (goroutineRelay) relay(s *session) error {
	up := newPump(s.clientBuf, s.client, s.server, s.filters.up, true, s.srv.opts.MaxMessageLen, &s.srv.stats.bytesUp)
	down := newPump(s.serverBuf, s.server, s.client, s.filters.down, false, s.srv.opts.MaxMessageLen, &s.srv.stats.bytesDown)
	var g errgroup.Group
	g.Go(func() error { return s.endClientToServer(up, s.runPump(up)) })
	g.Go(func() error { return s.endServerToClient(down, s.runPump(down)) })
	_ = g.Wait() // the reasons are recorded by s.stop
	s.bytesUp += up.sent
	s.bytesDown += down.sent
	return s.reason()
}

// runPump runs p, turning a panic (a bug, e.g. in a filter) into an error so
// that the direction still ends through its normal exit path.
func (s *session) runPump(p *pump) (err error) {
	defer s.recoverPanic(&err)
	return p.run()
}

// endClientToServer records why the client→server direction ended and, when
// the server is still there and nothing is half-sent, tells it goodbye with
// a Terminate so that it does not log an unexpected EOF.
func (s *session) endClientToServer(p *pump, err error) error {
	var reason error
	switch {
	case errors.Is(err, errTerminate):
		reason = errClientTerminated
	case isReadErr(err):
		reason = errClientGone // EOF, reset, or woken by stop (then stop keeps the first reason)
	case isWriteErr(err):
		reason = newError(ErrUpstreamLost, "", err)
	default:
		reason = err
	}
	reason = s.stop(reason)
	if p.atBoundary() && !errors.Is(reason, ErrUpstreamLost) && !errors.Is(reason, errClientTerminated) {
		s.writeServerGoodbye()
	}
	return reason
}

// endServerToClient records why the server→client direction ended and, as
// the owner of the client socket, sends the session's final error message
// when the client is between messages.
func (s *session) endServerToClient(p *pump, err error) error {
	var reason error
	switch {
	case isReadErr(err):
		reason = newError(ErrUpstreamLost, "", err) // stop keeps an earlier reason (woken)
	case isWriteErr(err):
		reason = errClientGone
	default:
		reason = err
	}
	reason = s.stop(reason)
	if !p.atBoundary() {
		return reason
	}
	if errors.Is(reason, ErrUpstreamLost) && p.lastType == 'E' {
		return reason // the server said why itself (e.g. pg_terminate_backend)
	}
	s.writeClientFinal()
	return reason
}

// pump moves frames from src to dst, one direction of a session. It reads
// into in, walks the complete frames, and writes each batch with a single
// Write. Frames of types nobody wants are streamed (a large one passes in
// pieces and is never held whole); frames the filter wants are held whole
// and replaced by what the filter returns. A pump is the only writer of dst
// while it runs.
type pump struct {
	src     io.Reader
	dst     io.Writer
	in      *frameBuf
	out     []byte // batch assembly, used only when a filter changed a frame of the batch
	scratch []byte // a filter's output before the batch is assembled
	filter  frameFilter
	act     *[256]uint8
	maxLen  int

	passLeft int            // bytes of the current streamed frame still to forward
	lastType byte           // type of the last frame whose header was seen
	sent     uint64         // bytes written to dst
	bytes    *atomic.Uint64 // server-wide counter, added to per batch
}

func newPump(in *frameBuf, src io.Reader, dst io.Writer, f frameFilter, terminate bool, maxLen int, bytes *atomic.Uint64) *pump {
	return &pump{src: src, dst: dst, in: in, filter: f, act: actionTable(f, terminate), maxLen: maxLen, bytes: bytes}
}

// errTerminate ends a direction after a forwarded Terminate message.
var errTerminate = errors.New("proxy: terminate forwarded")

// pumpIOError tells reads from writes apart, so that the session can say
// which side went away.
type pumpIOError struct {
	write bool
	err   error
}

func (e *pumpIOError) Error() string {
	if e.write {
		return "write: " + e.err.Error()
	}
	return "read: " + e.err.Error()
}
func (e *pumpIOError) Unwrap() error { return e.err }

func isReadErr(err error) bool {
	var e *pumpIOError
	return errors.As(err, &e) && !e.write
}

func isWriteErr(err error) bool {
	var e *pumpIOError
	return errors.As(err, &e) && e.write
}

// atBoundary reports whether dst is between messages, i.e. whether an extra
// message could be written to it now without corrupting the stream.
func (p *pump) atBoundary() bool { return p.passLeft == 0 }

// run forwards until an error: a read or write error (*pumpIOError), a
// protocol violation, a filter error, or errTerminate.
func (p *pump) run() error {
	if len(p.in.buffered()) > 0 { // leftovers from the handshake
		if err := p.forward(); err != nil {
			return err
		}
	}
	for {
		n, rerr := p.in.fill(p.src)
		if n > 0 {
			if err := p.forward(); err != nil {
				return err
			}
		}
		if rerr != nil {
			return &pumpIOError{err: rerr}
		}
	}
}

// forward walks the buffered bytes, writes every complete frame (and the
// available part of a streamed frame) with one Write, and keeps the rest for
// the next read. It allocates nothing unless a filter asks for it.
func (p *pump) forward() error {
	b := p.in
	start := b.r
	copying := false // the batch is assembled in p.out (a filter changed something)
	var stop error
	b.need = 0
walk:
	for b.r < b.w {
		avail := b.w - b.r
		if p.passLeft > 0 {
			k := min(p.passLeft, avail)
			if copying {
				p.out = append(p.out, b.buf[b.r:b.r+k]...)
			}
			b.r += k
			p.passLeft -= k
			continue
		}
		if avail < headerLen {
			b.need = headerLen
			break
		}
		typ := b.buf[b.r]
		total, err := frameTotal(b.buf[b.r:], p.maxLen)
		if err != nil {
			stop = err
			break
		}
		p.lastType = typ
		switch p.act[typ] {
		case actPass:
			k := min(total, avail)
			if copying {
				p.out = append(p.out, b.buf[b.r:b.r+k]...)
			}
			b.r += k
			p.passLeft = total - k
		case actFilter, actTerminate:
			if avail < total {
				b.need = total
				break walk
			}
			frame := b.buf[b.r : b.r+total : b.r+total]
			if p.act[typ] == actTerminate {
				if copying {
					p.out = append(p.out, frame...)
				}
				b.r += total
				stop = errTerminate
				break walk
			}
			dst := p.out
			if !copying {
				dst = p.scratch[:0]
			}
			out, err := p.filter.filter(frame, dst)
			if err == errKeep {
				if copying {
					p.out = append(p.out, frame...)
				}
				b.r += total
				continue
			}
			if err != nil {
				stop = err // the batch so far is still forwarded
				break walk
			}
			if copying {
				p.out = out
			} else {
				// First change in this batch: the frames before it, then
				// the filter's output.
				p.scratch = out
				p.out = append(append(p.out[:0], b.buf[start:b.r]...), out...)
				copying = true
			}
			b.r += total
		}
	}
	batch := b.buf[start:b.r]
	if copying {
		batch = p.out
	}
	if len(batch) > 0 {
		n, err := p.dst.Write(batch)
		p.sent += uint64(n)
		p.bytes.Add(uint64(n))
		if err != nil {
			return &pumpIOError{write: true, err: err}
		}
	}
	if copying && cap(p.out) > 4*b.pool.size {
		p.out = nil // do not keep a huge assembly buffer around
	}
	if cap(p.scratch) > 4*b.pool.size {
		p.scratch = nil
	}
	if b.r == b.w && b.need == 0 {
		b.r, b.w = 0, 0
	}
	return stop
}

// String names the pump's state for panics and debugging; it never shows
// message contents.
func (p *pump) String() string {
	return fmt.Sprintf("pump{buffered=%d passLeft=%d last=%q}", p.in.w-p.in.r, p.passLeft, p.lastType)
}
