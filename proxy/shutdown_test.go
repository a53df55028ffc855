package proxy

import (
	"net"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgproto3"
)

func TestShutdownTerminatesRemainingSessions(t *testing.T) {
	fake := newFakePG(t, trustScript(nil))
	p := startProxy(t, fake.addr(), func(o *Opts) {
		o.ShutdownTimeout = 200 * time.Millisecond
		o.HandshakeTimeout = time.Minute
	})
	idle := dialRaw(t, p.addr)
	idle.startup(t, map[string]string{"user": "alice"})
	busy := dialRaw(t, p.addr)
	busy.startup(t, map[string]string{"user": "alice"})
	// A client that connected but never finished its handshake.
	silent := dialRaw(t, p.addr)
	waitFor(t, "three sessions", func() bool { return p.srv.Stats().SessionsActive == 3 })

	start := time.Now()
	errc := make(chan error, 1)
	go func() { errc <- p.stop(t) }()

	// During the grace period sessions keep working.
	time.Sleep(50 * time.Millisecond)
	busy.send(t, &pgproto3.Query{String: "during grace"})
	if row, ok := busy.recvUntilRow(t); !ok || string(row.Values[0]) != "during grace" {
		t.Fatal("session did not work during the grace period")
	}
	// New connections are refused.
	if c, err := net.DialTimeout("tcp", p.addr, time.Second); err == nil {
		c.Close()
		t.Fatal("listener still accepting")
	}

	for name, c := range map[string]*rawClient{"idle": idle, "busy": busy, "silent": silent} {
		e := c.expectFatal(t, "57P01")
		if e.Message != "terminating connection because pgcloak is shutting down" {
			t.Fatalf("%s: message %q", name, e.Message)
		}
	}
	if err := <-errc; err != nil {
		t.Fatalf("Serve returned %v", err)
	}
	if d := time.Since(start); d < 200*time.Millisecond || d > 5*time.Second {
		t.Fatalf("shutdown took %v", d)
	}
	if n := p.srv.Stats().SessionsActive; n != 0 {
		t.Fatalf("%d sessions active after Serve returned", n)
	}
}

func TestShutdownWaitsOnlyAsLongAsSessions(t *testing.T) {
	fake := newFakePG(t, trustScript(nil))
	p := startProxy(t, fake.addr(), func(o *Opts) { o.ShutdownTimeout = 5 * time.Second })
	c := dialRaw(t, p.addr)
	c.startup(t, map[string]string{"user": "alice"})
	start := time.Now()
	errc := make(chan error, 1)
	go func() { errc <- p.stop(t) }()
	time.Sleep(50 * time.Millisecond)
	c.send(t, &pgproto3.Terminate{})
	c.expectClosed(t) // no 57P01: the client left by itself
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("shutdown took %v although the only session ended", d)
	}
}

// recvUntilRow reads until a DataRow and then up to ReadyForQuery.
func (c *rawClient) recvUntilRow(t *testing.T) (*pgproto3.DataRow, bool) {
	t.Helper()
	var row *pgproto3.DataRow
	for {
		switch m := c.recv(t).(type) {
		case *pgproto3.DataRow:
			row = &pgproto3.DataRow{Values: [][]byte{append([]byte(nil), m.Values[0]...)}}
		case *pgproto3.ReadyForQuery:
			return row, row != nil
		case *pgproto3.ErrorResponse:
			return nil, false
		}
	}
}

func TestShutdownCancelsQueryInFlight(t *testing.T) {
	cancelled := make(chan struct{}, 1)
	fake := newFakePG(t, trustScript(cancelled))
	p := startProxy(t, fake.addr(), func(o *Opts) { o.ShutdownTimeout = 100 * time.Millisecond })
	c := dialRaw(t, p.addr)
	c.startup(t, map[string]string{"user": "alice"})
	sess := fake.nextSession(t)
	c.send(t, &pgproto3.Query{String: "sleep"})
	time.Sleep(20 * time.Millisecond)
	errc := make(chan error, 1)
	go func() { errc <- p.stop(t) }()
	c.expectFatal(t, "57P01")
	select {
	case m := <-fake.cancels:
		if m.ProcessID != sess.pid {
			t.Fatalf("cancel for %d, want %d", m.ProcessID, sess.pid)
		}
		cancelled <- struct{}{}
	case <-time.After(5 * time.Second):
		t.Fatal("the server was not asked to cancel the running query")
	}
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
}
