//go:build linux

package proxy

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"io"
	mrand "math/rand/v2"
	"net"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// tcpPair returns two connected loopback TCP connections.
func tcpPair(t testing.TB) (*net.TCPConn, *net.TCPConn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	ch := make(chan net.Conn, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			ch <- nil
			return
		}
		ch <- c
	}()
	a, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	b := <-ch
	if b == nil {
		t.Fatal("accept failed")
	}
	return a.(*net.TCPConn), b.(*net.TCPConn)
}

// frame encodes one v3 message.
func frame(typ byte, body []byte) []byte {
	b := make([]byte, 5, 5+len(body))
	b[0] = typ
	binary.BigEndian.PutUint32(b[1:], uint32(4+len(body)))
	return append(b, body...)
}

type engineHarness struct {
	app, db net.Conn // the application's and the database's ends
	res     chan pairResult
	cancel  context.CancelFunc
}

var (
	testCancelMsg   = frame('E', []byte("shutdown\x00"))
	testUpstreamMsg = frame('E', []byte("upstream\x00"))
	testBadMsg      = frame('E', []byte("bad\x00"))
)

func startPair(t *testing.T, e *epollEngine, toServer, toClient []byte) *engineHarness {
	t.Helper()
	app, proxyClient := tcpPair(t)
	proxyServer, db := tcpPair(t)
	cfd, err := detachFD(proxyClient, proxyClient)
	if err != nil {
		t.Fatal(err)
	}
	sfd, err := detachFD(proxyServer, proxyServer)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	h := &engineHarness{app: app, db: db, res: make(chan pairResult, 1), cancel: cancel}
	go func() {
		r := e.run(ctx, pairConfig{client: cfd, server: sfd, toServer: toServer, toClient: toClient, maxMsgLen: 1 << 20,
			finalMsg: func() []byte { return testCancelMsg }, upstreamGone: testUpstreamMsg, protocolErr: testBadMsg})
		if r.LingerFD >= 0 {
			unix.Close(r.LingerFD)
		}
		h.res <- r
	}()
	t.Cleanup(func() { cancel(); app.Close(); db.Close() })
	return h
}

func newTestEngine(t *testing.T) *epollEngine {
	t.Helper()
	e, err := newEpollEngine(1)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.close)
	return e
}

func (h *engineHarness) wait(t *testing.T) pairResult {
	t.Helper()
	select {
	case r := <-h.res:
		return r
	case <-time.After(10 * time.Second):
		t.Fatal("pair did not end")
		return pairResult{}
	}
}

func TestEngineForwardsBothWaysInOrder(t *testing.T) {
	e := newTestEngine(t)
	lead := frame('Q', []byte("early\x00"))
	h := startPair(t, e, lead, nil)

	var want bytes.Buffer
	want.Write(lead)
	for i := 0; i < 200; i++ {
		want.Write(frame('Q', bytes.Repeat([]byte{byte(i)}, i*37)))
	}
	got := make([]byte, want.Len())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		// Write in random-sized pieces so frames straddle reads.
		rest := want.Bytes()[len(lead):]
		for len(rest) > 0 {
			n := 1 + mrand.IntN(min(len(rest), 700))
			if _, err := h.app.Write(rest[:n]); err != nil {
				t.Error(err)
				return
			}
			rest = rest[n:]
		}
	}()
	if _, err := io.ReadFull(h.db, got); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	if !bytes.Equal(got, want.Bytes()) {
		t.Fatal("server received different bytes than the client sent")
	}

	reply := frame('Z', []byte{'I'})
	if _, err := h.db.Write(reply); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, len(reply))
	if _, err := io.ReadFull(h.app, buf); err != nil || !bytes.Equal(buf, reply) {
		t.Fatalf("client got %q, %v; want %q", buf, err, reply)
	}

	h.app.Close()
	r := h.wait(t)
	if r.Err != nil || r.ClientProtocolErr || r.UpstreamTerminated {
		t.Fatalf("clean client close reported %+v", r)
	}
	if r.BytesFromClient != int64(want.Len()-len(lead)) || r.BytesFromServer != int64(len(reply)) {
		t.Fatalf("byte counts %d/%d", r.BytesFromClient, r.BytesFromServer)
	}
	// The server side must be closed too.
	h.db.SetReadDeadline(time.Now().Add(5 * time.Second))
	if n, err := h.db.Read(buf); err != io.EOF {
		t.Fatalf("server side not closed: n=%d err=%v", n, err)
	}
}

func TestEngineBackpressureLargeTransfer(t *testing.T) {
	e := newTestEngine(t)
	h := startPair(t, e, nil, nil)
	// 24 MiB of DataRow frames from the server to a slow client.
	body := make([]byte, 64<<10)
	rand.Read(body)
	msg := frame('D', body)
	const count = 384
	go func() {
		for i := 0; i < count; i++ {
			if _, err := h.db.Write(msg); err != nil {
				return
			}
		}
	}()
	got := make([]byte, len(msg))
	for i := 0; i < count; i++ {
		if i%64 == 0 {
			time.Sleep(20 * time.Millisecond) // let socket buffers fill
		}
		if _, err := io.ReadFull(h.app, got); err != nil {
			t.Fatalf("frame %d: %v", i, err)
		}
		if !bytes.Equal(got, msg) {
			t.Fatalf("frame %d corrupted", i)
		}
	}
	h.app.Close()
	if r := h.wait(t); r.BytesFromServer != int64(count*len(msg)) {
		t.Fatalf("BytesFromServer = %d", r.BytesFromServer)
	}
}

func TestEngineRejectsHostileLength(t *testing.T) {
	for _, tc := range []struct {
		name string
		hdr  []byte
	}{
		{"huge", []byte{'Q', 0x7f, 0xff, 0xff, 0xff}},
		{"too small", []byte{'Q', 0, 0, 0, 3}},
		{"over max", []byte{'Q', 0, 0x10, 0, 1}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newTestEngine(t)
			h := startPair(t, e, nil, nil)
			good := frame('Q', []byte("SELECT 1\x00"))
			if _, err := h.app.Write(append(append([]byte{}, good...), tc.hdr...)); err != nil {
				t.Fatal(err)
			}
			r := h.wait(t)
			if !r.ClientProtocolErr || !errors.Is(r.Err, errFrameLength) {
				t.Fatalf("result %+v", r)
			}
			got, _ := io.ReadAll(h.app)
			if !bytes.Equal(got, testBadMsg) {
				t.Fatalf("client got %q, want the protocol error", got)
			}
			// The good frame reached the server, then a Terminate;
			// nothing of the bad frame did.
			h.db.SetReadDeadline(time.Now().Add(5 * time.Second))
			want := append(append([]byte{}, good...), terminateMsg[:]...)
			if n, _ := io.ReadAll(h.db); !bytes.Equal(n, want) {
				t.Fatalf("server received %q, want %q", n, want)
			}
		})
	}
}

func TestEngineUpstreamDeathTellsClient(t *testing.T) {
	e := newTestEngine(t)
	h := startPair(t, e, nil, nil)
	h.db.Close()
	r := h.wait(t)
	if !r.UpstreamTerminated {
		t.Fatalf("result %+v", r)
	}
	got, _ := io.ReadAll(h.app)
	if !bytes.Equal(got, testUpstreamMsg) {
		t.Fatalf("client got %q", got)
	}
}

func TestEngineCancelWaitsForMessageBoundary(t *testing.T) {
	e := newTestEngine(t)
	h := startPair(t, e, nil, nil)
	row := frame('D', bytes.Repeat([]byte("x"), 100))
	// Half a message from the server, then shutdown.
	if _, err := h.db.Write(row[:50]); err != nil {
		t.Fatal(err)
	}
	time.Sleep(50 * time.Millisecond)
	h.cancel()
	time.Sleep(50 * time.Millisecond)
	select {
	case r := <-h.res:
		t.Fatalf("pair ended mid-message: %+v", r)
	default:
	}
	if _, err := h.db.Write(row[50:]); err != nil {
		t.Fatal(err)
	}
	r := h.wait(t)
	if !errors.Is(r.Err, errTerminated) {
		t.Fatalf("result %+v", r)
	}
	got, _ := io.ReadAll(h.app)
	if want := append(append([]byte{}, row...), testCancelMsg...); !bytes.Equal(got, want) {
		t.Fatalf("client got %q, want the row then the shutdown error", got)
	}
}

func TestFrameTrackerAnySplit(t *testing.T) {
	var stream []byte
	var types []byte
	for i := 0; i < 300; i++ {
		typ := byte('A' + i%26)
		stream = append(stream, frame(typ, bytes.Repeat([]byte{1}, mrand.IntN(40)))...)
		types = append(types, typ)
	}
	for trial := 0; trial < 200; trial++ {
		tr := frameTracker{max: 1 << 20}
		rest := stream
		for len(rest) > 0 {
			n := 1 + mrand.IntN(min(len(rest), 13))
			if _, err := tr.scan(rest[:n]); err != nil {
				t.Fatal(err)
			}
			rest = rest[n:]
		}
		if !tr.atBoundary() || tr.last != types[len(types)-1] {
			t.Fatalf("tracker ended at boundary=%v last=%q", tr.atBoundary(), tr.last)
		}
	}
	tr := frameTracker{max: 1 << 20}
	if _, err := tr.scan(stream[:len(stream)-1]); err != nil || tr.atBoundary() {
		t.Fatalf("truncated stream: err=%v boundary=%v", err, tr.atBoundary())
	}
}

func BenchmarkFrameTrackerScan(b *testing.B) {
	var batch []byte
	for i := 0; i < 4; i++ {
		batch = append(batch, frame('D', make([]byte, 60))...)
	}
	tr := frameTracker{max: 1 << 30}
	b.SetBytes(int64(len(batch)))
	for b.Loop() {
		if _, err := tr.scan(batch); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkEngineRoundTrip measures one request/response through the event
// loop over loopback TCP (the shape of a pgbench select).
func BenchmarkEngineRoundTrip(b *testing.B) {
	e, err := newEpollEngine(1)
	if err != nil {
		b.Fatal(err)
	}
	defer e.close()
	app, pc := tcpPair(b)
	ps, db := tcpPair(b)
	cfd, _ := detachFD(pc, pc)
	sfd, _ := detachFD(ps, ps)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		e.run(ctx, pairConfig{client: cfd, server: sfd, maxMsgLen: 1 << 20})
		close(done)
	}()
	req := append(frame('B', make([]byte, 20)), append(frame('E', make([]byte, 5)), frame('S', nil)...)...)
	resp := append(frame('2', nil), append(frame('D', make([]byte, 12)), append(frame('C', []byte("SELECT 1\x00")), frame('Z', []byte{'I'})...)...)...)
	go func() {
		buf := make([]byte, len(req))
		for {
			if _, err := io.ReadFull(db, buf); err != nil {
				return
			}
			if _, err := db.Write(resp); err != nil {
				return
			}
		}
	}()
	buf := make([]byte, len(resp))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := app.Write(req); err != nil {
			b.Fatal(err)
		}
		if _, err := io.ReadFull(app, buf); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	cancel()
	app.Close()
	db.Close()
	<-done
}

// A client that hangs up while the loop has stopped reading from it
// (backpressure: the server is not reading) must not make epoll_wait
// return at once forever: hang-up events are level-triggered.
func TestEngineNoSpinOnHangUpWhileBackpressured(t *testing.T) {
	e := newTestEngine(t)
	h := startPair(t, e, nil, nil)
	chunk := frame('d', make([]byte, 64<<10))
	wrote := make(chan struct{})
	go func() {
		defer close(wrote)
		h.app.SetWriteDeadline(time.Now().Add(300 * time.Millisecond))
		for {
			if _, err := h.app.Write(chunk); err != nil {
				return // the socket buffers are full: backpressure reached
			}
		}
	}()
	<-wrote
	// An abortive close (RST) is reported as EPOLLHUP|EPOLLERR at once,
	// even though the proxy's receive buffer is full.
	h.app.(*net.TCPConn).SetLinger(0)
	h.app.Close()
	time.Sleep(50 * time.Millisecond)

	cpu := func() time.Duration {
		var ru syscall.Rusage
		if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
			t.Fatal(err)
		}
		return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	}
	before := cpu()
	time.Sleep(500 * time.Millisecond)
	if used := cpu() - before; used > 200*time.Millisecond {
		t.Fatalf("the loop burned %v of CPU in 500ms while a hung-up client waited for backpressure to clear", used)
	}
	// Draining the server side lets the pair see the hang-up and end.
	go io.Copy(io.Discard, h.db)
	if r := h.wait(t); r.Err != nil {
		t.Fatalf("pair ended with %v", r.Err)
	}
}
