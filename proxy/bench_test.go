package proxy

import (
	"io"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgproto3"
)

// pgbench select-only, prepared mode: what one transaction puts on the wire.
func selectOnlyWire(tb testing.TB) (request, response []byte) {
	request = frames(tb, &pgproto3.Bind{PreparedStatement: "P0_1", ParameterFormatCodes: []int16{0}, Parameters: [][]byte{[]byte("12345")}},
		&pgproto3.Execute{}, &pgproto3.Sync{})
	response = frames(tb, &pgproto3.BindComplete{}, &pgproto3.DataRow{Values: [][]byte{[]byte("-2841")}},
		&pgproto3.CommandComplete{CommandTag: []byte("SELECT 1")}, &pgproto3.ReadyForQuery{TxStatus: 'I'})
	return request, response
}

// BenchmarkRelayForward measures the frame walk of one batch in memory
// (read from a buffer, walk, one write): the proxy's own work per batch
// without system calls.
func BenchmarkRelayForward(b *testing.B) {
	_, response := selectOnlyWire(b)
	p := newTestPump(&loopReader{response}, io.Discard, nil, DefaultBufferSize, DefaultMaxMessageLen)
	b.SetBytes(int64(len(response)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := p.in.fill(p.src); err != nil {
			b.Fatal(err)
		}
		if err := p.forward(); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkRelayRoundTripTCP is one pgbench-like transaction through a full
// proxy session over loopback TCP: the client writes Bind/Execute/Sync, a raw
// fake server answers with a pre-encoded result. Client and server use raw
// byte I/O, so allocs/op is the proxy's.
func BenchmarkRelayRoundTripTCP(b *testing.B) {
	forEachRelay(b, benchRoundTrip)
}

func benchRoundTrip(b *testing.B, eventLoops int) {
	request, response := selectOnlyWire(b)
	c := benchSession(b, eventLoops, func(fc *fakeConn) {
		buf := make([]byte, len(request))
		for {
			if _, err := io.ReadFull(fc.Conn, buf); err != nil {
				return
			}
			if _, err := fc.Write(response); err != nil {
				return
			}
		}
	})
	buf := make([]byte, len(response))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := c.conn.Write(request); err != nil {
			b.Fatal(err)
		}
		if _, err := io.ReadFull(c.conn, buf); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkRelayStreamTCP streams 8 KiB CopyData frames client→server
// through a proxy session (COPY FROM-like), reporting throughput.
func BenchmarkRelayStreamTCP(b *testing.B) {
	forEachRelay(b, benchStream)
}

// forEachRelay runs f with the event loop and with the goroutine relay.
func forEachRelay(b *testing.B, f func(*testing.B, int)) {
	b.Run("relay=eventloop", func(b *testing.B) { f(b, 0) })
	b.Run("relay=goroutines", func(b *testing.B) { f(b, -1) })
}

func benchStream(b *testing.B, eventLoops int) {
	chunk := frames(b, &pgproto3.CopyData{Data: make([]byte, 8<<10)})
	batch := make([]byte, 0, 8*len(chunk))
	for range 8 {
		batch = append(batch, chunk...)
	}
	c := benchSession(b, eventLoops, func(fc *fakeConn) {
		buf := make([]byte, 256<<10)
		for {
			if _, err := fc.Conn.Read(buf); err != nil {
				return
			}
		}
	})
	b.SetBytes(int64(len(batch)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := c.conn.Write(batch); err != nil {
			b.Fatal(err)
		}
	}
}

// benchSession connects a raw client through a proxy to a fake server that
// runs serve after the startup.
func benchSession(b *testing.B, eventLoops int, serve func(*fakeConn)) *rawClient {
	b.Helper()
	fake := newFakePG(b, func(fc *fakeConn) {
		if fc.ready() != nil {
			return
		}
		_ = fc.SetDeadline(time.Time{})
		serve(fc)
	})
	srv, err := New(Opts{UpstreamAddr: fake.addr(), UpstreamTLS: UpstreamTLSDisable, EventLoops: eventLoops})
	if err != nil {
		b.Fatal(err)
	}
	p := serveProxy(b, srv)
	c := dialRaw(b, p.addr)
	c.startup(b, map[string]string{"user": "bench"})
	_ = c.conn.SetDeadline(time.Time{})
	return c
}
