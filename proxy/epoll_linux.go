//go:build linux

package proxy

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"sync"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// The epoll engine is pgcloak's hot path for sessions whose both sockets are
// plain TCP or Unix sockets. After the handshake a session hands its two file
// descriptors to one of a few event-loop threads, which then forward bytes
// with one read and one write per batch, straight from a shared buffer.
//
// Why not two goroutines per session: on a request/response protocol every
// message makes a goroutine park in the netpoller and another thread wake it,
// and the Go scheduler's spinning and futex wake-ups cost more CPU than the
// forwarding itself (measured: ~24 µs of proxy CPU per pgbench select with
// io.Copy goroutines, ~17 µs with an event loop, PgBouncer ~17 µs). The
// event loop makes exactly epoll_wait + read + write per batch, the same
// system calls PgBouncer makes, and no scheduler work.
//
// Frames are still walked as they pass (type + bounded length), so the loop
// knows message boundaries: it rejects hostile length fields, and it injects
// proxy errors (shutdown, upstream death) only between messages.

// epollEngine owns a fixed set of event loops. It is safe for concurrent use.
type epollEngine struct {
	loops []*eventLoop
	mu    sync.Mutex
	next  int
}

// newEpollEngine starts n event-loop threads.
func newEpollEngine(n int) (*epollEngine, error) {
	if n < 1 {
		n = 1
	}
	e := &epollEngine{}
	for i := 0; i < n; i++ {
		l, err := newEventLoop()
		if err != nil {
			e.close()
			return nil, err
		}
		e.loops = append(e.loops, l)
		go l.run()
	}
	return e, nil
}

// close stops all loops; pairs still attached are closed.
func (e *epollEngine) close() {
	for _, l := range e.loops {
		l.stop()
	}
}

// pairConfig describes a session handed to the engine.
type pairConfig struct {
	// client and server are non-blocking raw descriptors. The engine owns
	// and closes them from the moment run is called.
	client, server int
	// toServer and toClient are bytes already read during the handshake
	// that still have to be forwarded, in order, before anything else.
	toServer, toClient []byte
	// maxMsgLen bounds every frame's length field.
	maxMsgLen int
	// finalMsg returns the ErrorResponse to send the client when ctx is
	// done (called once, on the loop thread; may return nil).
	finalMsg func() []byte
	// upstreamGone is sent to the client when the server closes or breaks
	// the connection without a FATAL of its own; protocolErr when either
	// side sends a malformed frame. Either may be nil.
	upstreamGone, protocolErr []byte
}

// pairResult says how a pair ended.
type pairResult struct {
	Err                error // nil: the client closed cleanly
	BytesFromClient    int64
	BytesFromServer    int64
	ClientProtocolErr  bool // the client sent a malformed frame
	ServerProtocolErr  bool // the server sent a malformed frame
	UpstreamTerminated bool // the server closed or failed
	// LingerFD, when >= 0, is the client socket, still open and already
	// shut down for writing after pgcloak's own final message: the caller
	// drains and closes it, so that the kernel does not reset the
	// connection before the client has read the message.
	LingerFD int
}

// run forwards between the pair's sockets until one side closes, a frame is
// malformed, or ctx is done. When ctx is done, cfg.finalMsg() is written to
// the client at the next message boundary of the server→client stream and
// the pair ends. run blocks; the calling goroutine sleeps without any
// wake-up meanwhile.
func (e *epollEngine) run(ctx context.Context, cfg pairConfig) pairResult {
	e.mu.Lock()
	l := e.loops[e.next%len(e.loops)]
	e.next++
	e.mu.Unlock()

	p := &pair{loop: l, done: make(chan struct{}), onUpstreamGone: cfg.upstreamGone, onProtocolErr: cfg.protocolErr}
	p.res.LingerFD = -1
	p.c = half{fd: cfg.client, pair: p, fromClient: true, fr: frameTracker{max: cfg.maxMsgLen}, pending: cfg.toClient}
	p.s = half{fd: cfg.server, pair: p, fr: frameTracker{max: cfg.maxMsgLen}, pending: cfg.toServer}
	p.c.peer, p.s.peer = &p.s, &p.c
	// Leftover bytes have to be walked too, so that the trackers start in
	// the right place: toServer came from the client, toClient from the
	// server.
	if _, err := p.c.fr.scan(cfg.toServer); err != nil {
		unix.Close(cfg.client)
		unix.Close(cfg.server)
		return pairResult{Err: err, ClientProtocolErr: true, LingerFD: -1}
	}
	if _, err := p.s.fr.scan(cfg.toClient); err != nil {
		unix.Close(cfg.client)
		unix.Close(cfg.server)
		return pairResult{Err: err, UpstreamTerminated: true, LingerFD: -1}
	}
	l.submit(func() { l.attach(p) })

	select {
	case <-p.done:
	case <-ctx.Done():
		l.submit(func() {
			var msg []byte
			if cfg.finalMsg != nil {
				msg = cfg.finalMsg()
			}
			l.terminate(p, msg)
		})
		<-p.done
	}
	return p.res
}

// pair is one session inside a loop. All fields but done and res are owned
// by the loop thread; res is published by closing done.
type pair struct {
	loop           *eventLoop
	c, s           half
	done           chan struct{}
	res            pairResult
	closed         bool
	terminating    []byte    // error to send the client at the next boundary
	termDeadline   time.Time // give up waiting for a boundary then
	onUpstreamGone []byte
	onProtocolErr  []byte
	linger         bool // the client socket is handed back to linger (pairResult.LingerFD)
}

// half is one socket of a pair.
type half struct {
	fd         int
	pair       *pair
	peer       *half
	fromClient bool         // this is the client socket
	fr         frameTracker // frames of the bytes read from fd
	pending    []byte       // bytes still to be written to fd
	readOff    bool         // reading paused until peer.pending drains
	wantOut    bool         // EPOLLOUT registered
	parked     bool         // removed from epoll: hung up while reading was paused
}

// frameTracker walks PostgreSQL v3 frames (1 type byte, 4 length bytes
// counting themselves, body) across arbitrary read boundaries without
// copying anything but a split header.
type frameTracker struct {
	hdr    [5]byte
	nhdr   int
	remain int // body bytes left in the current frame
	max    int
	last   byte // type of the last frame whose header was seen
}

var errFrameLength = errors.New("invalid message length")

// scan advances the tracker over p. On a bad length field it returns the
// number of bytes of p before that frame's header, which are whole frames
// (or the rest of one) that may still be forwarded.
func (t *frameTracker) scan(p []byte) (int, error) {
	off := 0
	for off < len(p) {
		if t.remain > 0 {
			if len(p)-off <= t.remain {
				t.remain -= len(p) - off
				return len(p), nil
			}
			off += t.remain
			t.remain = 0
		}
		if t.nhdr == 0 && len(p)-off >= 5 {
			// Fast path: a whole header in the buffer.
			h := p[off : off+5]
			n := int(uint32(h[1])<<24 | uint32(h[2])<<16 | uint32(h[3])<<8 | uint32(h[4]))
			if n < 4 || n > t.max {
				return off, fmt.Errorf("%w %d for message type %q", errFrameLength, n, h[0])
			}
			t.last = h[0]
			off += 5
			t.remain = n - 4
			continue
		}
		start := off - t.nhdr // where this header began (may be in an earlier read)
		c := copy(t.hdr[t.nhdr:], p[off:])
		t.nhdr += c
		off += c
		if t.nhdr < 5 {
			return len(p), nil
		}
		t.nhdr = 0
		n := int(uint32(t.hdr[1])<<24 | uint32(t.hdr[2])<<16 | uint32(t.hdr[3])<<8 | uint32(t.hdr[4]))
		if n < 4 || n > t.max {
			return max(start, 0), fmt.Errorf("%w %d for message type %q", errFrameLength, n, t.hdr[0])
		}
		t.last = t.hdr[0]
		t.remain = n - 4
	}
	return len(p), nil
}

// atBoundary reports whether the stream is between two messages.
func (t *frameTracker) atBoundary() bool { return t.nhdr == 0 && t.remain == 0 }

// eventLoop is one OS thread running epoll over many pairs.
type eventLoop struct {
	epfd   int
	wakefd int // eventfd: submit() writes to it

	mu      sync.Mutex
	cmds    []func()
	stopped bool

	// loop-thread state
	halves []*half // indexed by fd
	buf    []byte
	nterm  int // pairs waiting for a boundary to terminate
}

const loopBufSize = 256 << 10

func newEventLoop() (*eventLoop, error) {
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("proxy: epoll_create1: %w", err)
	}
	wfd, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		unix.Close(epfd)
		return nil, fmt.Errorf("proxy: eventfd: %w", err)
	}
	ev := unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(wfd)}
	if err := unix.EpollCtl(epfd, unix.EPOLL_CTL_ADD, wfd, &ev); err != nil {
		unix.Close(epfd)
		unix.Close(wfd)
		return nil, fmt.Errorf("proxy: epoll_ctl: %w", err)
	}
	return &eventLoop{epfd: epfd, wakefd: wfd, buf: make([]byte, loopBufSize)}, nil
}

// submit runs f on the loop thread.
func (l *eventLoop) submit(f func()) {
	l.mu.Lock()
	l.cmds = append(l.cmds, f)
	l.mu.Unlock()
	var one = [8]byte{1}
	_, _ = unix.Write(l.wakefd, one[:])
}

func (l *eventLoop) stop() {
	l.submit(func() {
		l.mu.Lock()
		l.stopped = true
		l.mu.Unlock()
	})
}

func (l *eventLoop) run() {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	events := make([]unix.EpollEvent, 256)
	var cmds []func()
	for {
		timeout := -1
		if l.nterm > 0 {
			timeout = 50
		}
		n, err := unix.EpollWait(l.epfd, events, timeout)
		if err != nil && err != unix.EINTR {
			panic(fmt.Sprintf("pgcloak: epoll_wait: %v", err)) // cannot happen with a valid epfd
		}
		for i := 0; i < n; i++ {
			fd := int(events[i].Fd)
			if fd == l.wakefd {
				var b [8]byte
				_, _ = unix.Read(l.wakefd, b[:])
				continue
			}
			if fd >= len(l.halves) || l.halves[fd] == nil {
				continue
			}
			l.handle(l.halves[fd], events[i].Events)
		}
		l.mu.Lock()
		cmds, l.cmds = l.cmds, cmds[:0]
		stopped := l.stopped
		l.mu.Unlock()
		for _, f := range cmds {
			f()
		}
		clear(cmds)
		if l.nterm > 0 {
			l.checkTerminations()
		}
		if stopped {
			l.shutdown()
			return
		}
	}
}

func (l *eventLoop) shutdown() {
	for _, h := range l.halves {
		if h != nil {
			l.closePair(h.pair, errors.New("event loop stopped"))
		}
	}
	unix.Close(l.epfd)
	unix.Close(l.wakefd)
}

func (l *eventLoop) setHalf(fd int, h *half) {
	for fd >= len(l.halves) {
		l.halves = append(l.halves, nil)
	}
	l.halves[fd] = h
}

func (l *eventLoop) attach(p *pair) {
	for _, h := range []*half{&p.c, &p.s} {
		l.setHalf(h.fd, h)
		ev := unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLRDHUP, Fd: int32(h.fd)}
		if err := unix.EpollCtl(l.epfd, unix.EPOLL_CTL_ADD, h.fd, &ev); err != nil {
			l.closePair(p, fmt.Errorf("proxy: epoll_ctl add: %w", err))
			return
		}
	}
	// Flush handshake leftovers.
	for _, h := range []*half{&p.c, &p.s} {
		if len(h.pending) > 0 {
			data := h.pending
			h.pending = nil
			if !l.send(h, data) {
				return
			}
		}
	}
}

// handle reacts to readiness of h.
func (l *eventLoop) handle(h *half, ev uint32) {
	p := h.pair
	if ev&(unix.EPOLLOUT|unix.EPOLLHUP|unix.EPOLLERR) != 0 && len(h.pending) > 0 {
		// On a hang-up the write fails and closes the pair.
		if !l.flush(h) {
			return
		}
	}
	if p.closed {
		return
	}
	if h.readOff {
		// EPOLLHUP and EPOLLERR are reported whatever the interest set,
		// and level-triggered: while reading is paused they would make
		// epoll_wait return at once, forever. Take the socket out of
		// epoll until reading resumes; the read then sees the hang-up.
		if ev&(unix.EPOLLHUP|unix.EPOLLERR) != 0 {
			if h.wantOut {
				l.closePair(p, errors.New("socket hung up with data still to write"))
				return
			}
			_ = unix.EpollCtl(l.epfd, unix.EPOLL_CTL_DEL, h.fd, nil)
			h.parked = true
		}
		return
	}
	if ev&(unix.EPOLLIN|unix.EPOLLHUP|unix.EPOLLERR|unix.EPOLLRDHUP) == 0 {
		return
	}
	n, err := rawRead(h.fd, l.buf)
	if err == unix.EAGAIN || err == unix.EINTR {
		return
	}
	if n <= 0 || err != nil {
		if h.fromClient {
			l.closePair(p, nil) // client went away: a normal end
			return
		}
		if p.c.fr.last == 'X' && p.c.fr.atBoundary() {
			l.closePair(p, nil) // the client said goodbye; the server followed
			return
		}
		p.res.UpstreamTerminated = true
		msg := p.onUpstreamGone
		if p.s.fr.last == 'E' {
			msg = nil // the server said why itself (e.g. pg_terminate_backend)
		}
		l.abort(p, msg, fmt.Errorf("server closed the connection: %v", errOrEOF(err)))
		return
	}
	data := l.buf[:n]
	if h.fromClient {
		p.res.BytesFromClient += int64(n)
	} else {
		p.res.BytesFromServer += int64(n)
	}
	good, serr := h.fr.scan(data)
	if serr != nil {
		// Forward the whole frames before the bad one, then end.
		if good > 0 && !l.send(h.peer, data[:good]) {
			return
		}
		if h.fromClient {
			p.res.ClientProtocolErr = true
			l.goodbyeServer(p)
			l.abort(p, p.onProtocolErr, fmt.Errorf("client sent %w", serr))
		} else {
			p.res.ServerProtocolErr = true
			l.abort(p, p.onProtocolErr, fmt.Errorf("server sent %w", serr))
		}
		return
	}
	if !l.send(h.peer, data) {
		return
	}
	if p.terminating != nil && !h.fromClient {
		l.tryTerminate(p)
	}
}

func errOrEOF(err error) error {
	if err == nil {
		return errors.New("EOF")
	}
	return err
}

// send writes data (owned by the caller, may be the loop buffer) to h,
// keeping what the socket does not take. It returns false when the pair was
// closed.
func (l *eventLoop) send(h *half, data []byte) bool {
	if len(h.pending) > 0 {
		h.pending = append(h.pending, data...)
		return true
	}
	w, err := rawWrite(h.fd, data)
	if err != nil && err != unix.EAGAIN && err != unix.EINTR {
		l.closePair(h.pair, fmt.Errorf("write: %w", err))
		return false
	}
	if w < 0 {
		w = 0
	}
	if w == len(data) {
		return true
	}
	// The socket is full: keep the rest, stop reading from the peer until
	// it drains (backpressure), and wait for EPOLLOUT.
	h.pending = append(make([]byte, 0, len(data)-w), data[w:]...)
	return l.setInterest(h.peer, false) && l.setOut(h, true)
}

// flush writes h.pending after EPOLLOUT.
func (l *eventLoop) flush(h *half) bool {
	w, err := rawWrite(h.fd, h.pending)
	if err != nil && err != unix.EAGAIN && err != unix.EINTR {
		l.closePair(h.pair, fmt.Errorf("write: %w", err))
		return false
	}
	if w > 0 {
		h.pending = h.pending[w:]
	}
	if len(h.pending) > 0 {
		return true
	}
	h.pending = nil
	if !l.setOut(h, false) || !l.setInterest(h.peer, true) {
		return false
	}
	if h.fromClient && h.pair.terminating != nil {
		l.tryTerminate(h.pair)
	}
	return !h.pair.closed
}

func (l *eventLoop) setInterest(h *half, read bool) bool {
	if h.readOff == !read {
		return true
	}
	h.readOff = !read
	return l.modify(h)
}

func (l *eventLoop) setOut(h *half, out bool) bool {
	if h.wantOut == out {
		return true
	}
	h.wantOut = out
	return l.modify(h)
}

func (l *eventLoop) modify(h *half) bool {
	// EPOLLRDHUP only with EPOLLIN: it is level-triggered too, so with
	// reading paused it would spin like EPOLLHUP.
	var events uint32
	if !h.readOff {
		events |= unix.EPOLLIN | unix.EPOLLRDHUP
	}
	if h.wantOut {
		events |= unix.EPOLLOUT
	}
	op := unix.EPOLL_CTL_MOD
	if h.parked {
		if events == 0 {
			return true
		}
		op, h.parked = unix.EPOLL_CTL_ADD, false
	}
	ev := unix.EpollEvent{Events: events, Fd: int32(h.fd)}
	if err := unix.EpollCtl(l.epfd, op, h.fd, &ev); err != nil {
		l.closePair(h.pair, fmt.Errorf("proxy: epoll_ctl: %w", err))
		return false
	}
	return true
}

// terminate asks the pair to end with msg sent to the client between two
// server messages.
func (l *eventLoop) terminate(p *pair, msg []byte) {
	if p.closed {
		return
	}
	if p.terminating == nil {
		l.nterm++
	}
	if msg == nil {
		msg = []byte{}
	}
	p.terminating = msg
	p.termDeadline = time.Now().Add(2 * time.Second)
	l.tryTerminate(p)
}

func (l *eventLoop) tryTerminate(p *pair) {
	if p.closed || p.terminating == nil {
		return
	}
	if !p.s.fr.atBoundary() || len(p.c.pending) > 0 {
		return
	}
	msg := p.terminating
	p.terminating = nil
	l.nterm--
	l.goodbyeServer(p)
	l.sendFinal(p, msg)
	l.closePair(p, errTerminated)
}

// goodbyeServer sends the server a Terminate when the client→server stream
// is between messages, so that the backend ends without logging an
// unexpected EOF.
func (l *eventLoop) goodbyeServer(p *pair) {
	if p.c.fr.atBoundary() && len(p.s.pending) == 0 {
		_, _ = rawWrite(p.s.fd, terminateMsg[:])
	}
}

// sendFinal writes pgcloak's own last message to the client and shuts the
// socket down for writing; closePair then hands it to the caller to linger.
func (l *eventLoop) sendFinal(p *pair, msg []byte) {
	if len(msg) == 0 {
		return
	}
	_, _ = rawWrite(p.c.fd, msg)
	if unix.Shutdown(p.c.fd, unix.SHUT_WR) == nil {
		p.linger = true
	}
}

var errTerminated = errors.New("terminated by pgcloak")

func (l *eventLoop) checkTerminations() {
	now := time.Now()
	for _, h := range l.halves {
		if h == nil || !h.fromClient || h.pair.terminating == nil {
			continue
		}
		if now.After(h.pair.termDeadline) {
			// No boundary in sight (a client not reading, a huge row):
			// close without the message rather than corrupt the stream.
			p := h.pair
			p.terminating = nil
			l.nterm--
			l.closePair(p, errTerminated)
		}
	}
}

// abort ends the pair after an error, telling the client with msg when the
// server→client stream is between messages and nothing is queued.
func (l *eventLoop) abort(p *pair, msg []byte, err error) {
	if p.s.fr.atBoundary() && len(p.c.pending) == 0 {
		l.sendFinal(p, msg)
	}
	l.closePair(p, err)
}

func (l *eventLoop) closePair(p *pair, err error) {
	if p.closed {
		return
	}
	p.closed = true
	if p.terminating != nil {
		p.terminating = nil
		l.nterm--
	}
	for _, h := range []*half{&p.c, &p.s} {
		_ = unix.EpollCtl(l.epfd, unix.EPOLL_CTL_DEL, h.fd, nil)
		if h.fd < len(l.halves) && l.halves[h.fd] == h {
			l.halves[h.fd] = nil
		}
		if h == &p.c && p.linger {
			p.res.LingerFD = h.fd
		} else {
			unix.Close(h.fd)
		}
		h.pending = nil
	}
	p.res.Err = err
	close(p.done)
}

// rawRead and rawWrite are read(2) and write(2) on non-blocking sockets.
// They never block, so they skip the runtime's syscall bookkeeping.
func rawRead(fd int, p []byte) (int, error) {
	r, _, e := syscall.RawSyscall(syscall.SYS_READ, uintptr(fd), uintptr(unsafe.Pointer(unsafe.SliceData(p))), uintptr(len(p)))
	if e != 0 {
		return -1, e
	}
	return int(r), nil
}

func rawWrite(fd int, p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	r, _, e := syscall.RawSyscall(syscall.SYS_WRITE, uintptr(fd), uintptr(unsafe.Pointer(unsafe.SliceData(p))), uintptr(len(p)))
	if e != 0 {
		return -1, e
	}
	return int(r), nil
}

// detachFD takes the descriptor out of a net.Conn-like value: it duplicates
// it, closes the original (which removes it from the Go netpoller), and sets
// the duplicate non-blocking. The caller owns the returned descriptor.
func detachFD(c syscall.Conn, closer interface{ Close() error }) (int, error) {
	rc, err := c.SyscallConn()
	if err != nil {
		return -1, err
	}
	nfd := -1
	var derr error
	cerr := rc.Control(func(fd uintptr) {
		nfd, derr = unix.FcntlInt(fd, unix.F_DUPFD_CLOEXEC, 0)
	})
	if cerr != nil {
		return -1, cerr
	}
	if derr != nil {
		return -1, derr
	}
	_ = closer.Close()
	if err := unix.SetNonblock(nfd, true); err != nil {
		unix.Close(nfd)
		return -1, err
	}
	return nfd, nil
}
