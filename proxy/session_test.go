package proxy

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"
)

func TestCancelRequestMapped(t *testing.T) {
	cancelled := make(chan struct{}, 1)
	fake := newFakePG(t, trustScript(cancelled))
	p := startProxy(t, fake.addr(), nil)
	conn := connect(t, p.connString(""))
	sess := fake.nextSession(t)
	// The client sees the server's real process id (pg_backend_pid() and
	// pg_terminate_backend() must agree with the driver) but never the
	// server's secret.
	if conn.PID() != sess.pid {
		t.Fatalf("client got process id %d, the server's is %d", conn.PID(), sess.pid)
	}
	if bytes.Equal(conn.SecretKey(), sess.secret) || len(conn.SecretKey()) != len(sess.secret) {
		t.Fatalf("client got the server's secret, or one of another length (%x)", conn.SecretKey())
	}

	// A cancel with a wrong secret is dropped.
	bad := dialRaw(t, p.addr)
	wrong := append([]byte(nil), conn.SecretKey()...)
	wrong[0] ^= 0xff
	req, _ := (&pgproto3.CancelRequest{ProcessID: conn.PID(), SecretKey: wrong}).Encode(nil)
	if _, err := bad.conn.Write(req); err != nil {
		t.Fatal(err)
	}
	bad.expectClosed(t)
	select {
	case m := <-fake.cancels:
		t.Fatalf("forged cancel forwarded: %+v", m)
	case <-time.After(50 * time.Millisecond):
	}

	// pg_sleep-style: a running query cancelled through the proxy.
	errc := make(chan error, 1)
	go func() {
		_, err := conn.Exec(context.Background(), "sleep").ReadAll()
		errc <- err
	}()
	time.Sleep(20 * time.Millisecond) // let the query reach the server
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := conn.CancelRequest(ctx); err != nil {
		t.Fatal(err)
	}
	select {
	case m := <-fake.cancels:
		if m.ProcessID != sess.pid || !bytes.Equal(m.SecretKey, sess.secret) {
			t.Fatalf("server got cancel %d/%x, want %d/%x", m.ProcessID, m.SecretKey, sess.pid, sess.secret)
		}
		cancelled <- struct{}{}
	case <-time.After(5 * time.Second):
		t.Fatal("cancel not forwarded")
	}
	var pgErr *pgconn.PgError
	if err := <-errc; !errors.As(err, &pgErr) || pgErr.Code != "57014" {
		t.Fatalf("query error = %v, want 57014", err)
	}
	if got := p.srv.Stats().CancelRequests; got != 2 {
		t.Fatalf("cancel requests = %d, want 2", got)
	}

	// The key is forgotten with its session.
	conn.Close(ctx)
	waitFor(t, "cancel key removed", func() bool { return p.srv.Stats().CancelKeys == 0 })
}

func TestCancelOverTLS(t *testing.T) {
	ca := newTestCA(t)
	cancelled := make(chan struct{}, 1)
	fake := newFakePG(t, trustScript(cancelled))
	p := startProxy(t, fake.addr(), func(o *Opts) { o.ClientTLS = ca.serverConfig(t) })
	conn := connect(t, p.connString("sslmode=require"))
	sess := fake.nextSession(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := conn.CancelRequest(ctx); err != nil {
		t.Fatal(err)
	}
	select {
	case m := <-fake.cancels:
		if m.ProcessID != sess.pid {
			t.Fatalf("server got cancel for %d", m.ProcessID)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("cancel not forwarded")
	}
}

func TestTerminateForwarded(t *testing.T) {
	fake := newFakePG(t, trustScript(nil))
	p := startProxy(t, fake.addr(), nil)
	c := dialRaw(t, p.addr)
	c.startup(t, map[string]string{"user": "alice"})
	sess := fake.nextSession(t)
	c.send(t, &pgproto3.Query{String: "one"}, &pgproto3.Terminate{})
	readAll(c.conn) // the proxy closes the client side once Terminate is forwarded
	waitFor(t, "Terminate at the server", func() bool {
		msgs := sess.messages()
		return len(msgs) == 2 && msgs[1] != nil && isTerminate(msgs[1])
	})
	waitFor(t, "session closed", func() bool { return p.srv.Stats().SessionsActive == 0 })
}

func isTerminate(m pgproto3.FrontendMessage) bool {
	_, ok := m.(*pgproto3.Terminate)
	return ok
}

func TestFramesSplitAcrossReads(t *testing.T) {
	fake := newFakePG(t, func(c *fakeConn) {
		if c.ready() != nil {
			return
		}
		// Answer each query one byte per write.
		for {
			msg, err := c.be.Receive()
			if err != nil {
				return
			}
			c.record(msg)
			q, ok := msg.(*pgproto3.Query)
			if !ok {
				return
			}
			var out []byte
			for _, m := range echoResponse(q.String) {
				out, _ = m.Encode(out)
			}
			for i := range out {
				if _, err := c.Write(out[i : i+1]); err != nil {
					return
				}
			}
		}
	})
	p := startProxy(t, fake.addr(), func(o *Opts) { o.BufferSize = 16 })
	c := dialRaw(t, p.addr)
	c.startup(t, map[string]string{"user": "alice"})
	sess := fake.nextSession(t)

	queries := []string{"a", strings.Repeat("long query ", 20), "", "z"}
	var wire []byte
	for _, q := range queries {
		wire, _ = (&pgproto3.Query{String: q}).Encode(wire)
	}
	for i := range wire {
		if _, err := c.conn.Write(wire[i : i+1]); err != nil {
			t.Fatal(err)
		}
	}
	for _, q := range queries {
		c.recv(t) // RowDescription
		row, ok := c.recv(t).(*pgproto3.DataRow)
		if !ok || string(row.Values[0]) != q {
			t.Fatalf("row %v, want %q", row, q)
		}
		c.recv(t) // CommandComplete
		c.recv(t) // ReadyForQuery
	}
	msgs := sess.messages()
	if len(msgs) != len(queries) {
		t.Fatalf("server got %d messages, want %d", len(msgs), len(queries))
	}
	for i, m := range msgs {
		if q := m.(*pgproto3.Query).String; q != queries[i] {
			t.Fatalf("server got %q, want %q", q, queries[i])
		}
	}
}

func TestLengthBounds(t *testing.T) {
	header := func(typ byte, l uint32) []byte {
		b := []byte{typ, 0, 0, 0, 0}
		binary.BigEndian.PutUint32(b[1:], l)
		return b
	}
	fromClient := []struct {
		name string
		wire []byte
	}{
		{"absurd", header('Q', 0x7ffffff0)},
		{"negative", header('Q', 0xfffffff0)},
		{"below 4", header('Q', 3)},
		{"above MaxMessageLen", append(header('Q', 2000), make([]byte, 100)...)},
	}
	for _, tc := range fromClient {
		t.Run("client "+tc.name, func(t *testing.T) {
			fake := newFakePG(t, trustScript(nil))
			p := startProxy(t, fake.addr(), func(o *Opts) { o.MaxMessageLen = 1024 })
			c := dialRaw(t, p.addr)
			c.startup(t, map[string]string{"user": "alice"})
			sess := fake.nextSession(t)
			// A good message first, in the same write: it must still arrive.
			good, _ := (&pgproto3.Query{String: "fine"}).Encode(nil)
			if _, err := c.conn.Write(append(good, tc.wire...)); err != nil {
				t.Fatal(err)
			}
			c.expectFatal(t, "08P01")
			waitFor(t, "server saw the good query and Terminate", func() bool {
				msgs := sess.messages()
				return len(msgs) == 2 && msgs[0].(*pgproto3.Query).String == "fine" && isTerminate(msgs[1])
			})
		})
	}
	t.Run("server absurd", func(t *testing.T) {
		fake := newFakePG(t, func(c *fakeConn) {
			_ = c.ready()
			_, _ = c.be.Receive()
			_, _ = c.Write(header('D', 0x7fffffff))
			time.Sleep(time.Second) // the proxy must not wait for the body
		})
		p := startProxy(t, fake.addr(), nil)
		c := dialRaw(t, p.addr)
		c.startup(t, map[string]string{"user": "alice"})
		c.send(t, &pgproto3.Query{String: "x"})
		start := time.Now()
		c.expectFatal(t, "08P01")
		if time.Since(start) > 900*time.Millisecond {
			t.Fatal("proxy waited for the body of an absurd message")
		}
	})
}

func TestUpstreamDeath(t *testing.T) {
	fake := newFakePG(t, trustScript(nil))
	p := startProxy(t, fake.addr(), nil)

	t.Run("silent close: 08006", func(t *testing.T) {
		c := dialRaw(t, p.addr)
		c.startup(t, map[string]string{"user": "alice"})
		c.send(t, &pgproto3.Query{String: "die"})
		c.expectFatal(t, "08006")
	})
	t.Run("server's own FATAL is all the client gets", func(t *testing.T) {
		c := dialRaw(t, p.addr)
		c.startup(t, map[string]string{"user": "alice"})
		c.send(t, &pgproto3.Query{String: "terminate me"})
		c.expectFatal(t, "57P01") // and then closed, with no 08006 after it
	})
	// The proxy serves on.
	conn := connect(t, p.connString(""))
	if echo(t, conn, "still here") != "still here" {
		t.Fatal("echo")
	}
}

// rewriteFilter replaces the text of every Query; it wants 'Q' only.
type rewriteFilter struct{ from, to string }

func (f rewriteFilter) wants(typ byte) bool { return typ == 'Q' }

func (f rewriteFilter) filter(frame, out []byte) ([]byte, error) {
	var q pgproto3.Query
	if err := q.Decode(frame[headerLen:]); err != nil {
		return out, err
	}
	q.String = strings.ReplaceAll(q.String, f.from, f.to)
	return q.Encode(out)
}

func TestFilterHookRewrites(t *testing.T) {
	fake := newFakePG(t, trustScript(nil))
	srv, err := New(Opts{UpstreamAddr: fake.addr(), UpstreamTLS: UpstreamTLSDisable, BufferSize: 16, EventLoops: testEventLoops})
	if err != nil {
		t.Fatal(err)
	}
	srv.newFilters = func(*session) (frameFilter, frameFilter) {
		return rewriteFilter{"secret", "ciphertext"}, nil
	}
	p := serveProxy(t, srv)
	conn := connect(t, p.connString(""))
	long := "select " + strings.Repeat("secret, ", 50)
	if got := echo(t, conn, long); got != strings.ReplaceAll(long, "secret", "ciphertext") {
		t.Fatalf("server saw %q", got)
	}
	if got := echo(t, conn, "plain"); got != "plain" {
		t.Fatalf("server saw %q", got)
	}
}

// panicFilter panics on the first frame of its type.
type panicFilter struct{ typ byte }

func (f panicFilter) wants(typ byte) bool                      { return typ == f.typ }
func (f panicFilter) filter(frame, out []byte) ([]byte, error) { panic("boom") }

func TestPanicInServerToClientFilter(t *testing.T) {
	fake := newFakePG(t, trustScript(nil))
	srv, err := New(Opts{UpstreamAddr: fake.addr(), UpstreamTLS: UpstreamTLSDisable, EventLoops: testEventLoops})
	if err != nil {
		t.Fatal(err)
	}
	srv.newFilters = func(*session) (frameFilter, frameFilter) { return nil, panicFilter{'D'} }
	p := serveProxy(t, srv)
	c := dialRaw(t, p.addr)
	c.startup(t, map[string]string{"user": "alice"})
	c.send(t, &pgproto3.Query{String: "x"})
	c.expectFatal(t, "XX000")
}

func TestPanicInSessionIsContained(t *testing.T) {
	fake := newFakePG(t, trustScript(nil))
	srv, err := New(Opts{UpstreamAddr: fake.addr(), UpstreamTLS: UpstreamTLSDisable, EventLoops: testEventLoops})
	if err != nil {
		t.Fatal(err)
	}
	var used atomic.Bool
	srv.newFilters = func(*session) (frameFilter, frameFilter) {
		if used.CompareAndSwap(false, true) {
			return panicFilter{'Q'}, nil
		}
		return nil, nil
	}
	p := serveProxy(t, srv)
	c := dialRaw(t, p.addr)
	c.startup(t, map[string]string{"user": "alice"})
	c.send(t, &pgproto3.Query{String: "x"})
	c.expectFatal(t, "XX000")
	conn := connect(t, p.connString(""))
	if echo(t, conn, "ok") != "ok" {
		t.Fatal("echo after panic")
	}
}
