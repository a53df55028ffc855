package integration

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"golang.org/x/sync/errgroup"
)

// TestConcurrentConnections holds 200 client connections open through one
// proxy at the same time, each running a few queries.
func TestConcurrentConnections(t *testing.T) {
	c := shared.get(t)
	p := startProxy(t, proxyConfig{Upstream: c.Addr()})
	const clients = 200
	ctx := ctxT(t, 2*time.Minute)
	var (
		mu    sync.Mutex
		conns []*pgx.Conn
	)
	defer func() {
		for _, conn := range conns {
			_ = conn.Close(context.Background())
		}
	}()
	// Connect all first (bounded parallelism: SCRAM costs CPU), so that all
	// 200 sessions are open at once.
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(20)
	for i := 0; i < clients; i++ {
		mode := execModes[i%len(execModes)]
		g.Go(func() error {
			conn, err := tryConnect(gctx, p.DSN(roles.scram.name, roles.scram.password, "app", fmt.Sprintf("application_name=conc-%d", i)), mode)
			if err != nil {
				return fmt.Errorf("client %d connect: %w", i, err)
			}
			mu.Lock()
			conns = append(conns, conn)
			mu.Unlock()
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		t.Fatal(err)
	}
	var open int
	if err := superConn(t, c).QueryRow(ctx, "SELECT count(*) FROM pg_stat_activity WHERE application_name LIKE 'conc-%'").Scan(&open); err != nil {
		t.Fatal(err)
	}
	if open != clients {
		t.Fatalf("%d backends open, want %d", open, clients)
	}
	g, gctx = errgroup.WithContext(ctx)
	for i, conn := range conns {
		g.Go(func() error {
			for j := 0; j < 5; j++ {
				var got string
				want := fmt.Sprintf("client-%d-query-%d", i, j)
				if err := conn.QueryRow(gctx, "SELECT $1::text || ''", want).Scan(&got); err != nil {
					return fmt.Errorf("client %d query %d: %w", i, j, err)
				}
				if got != want {
					return fmt.Errorf("client %d got another session's result: %q, want %q", i, got, want)
				}
			}
			var n int64
			if err := conn.QueryRow(gctx, "SELECT sum(g) FROM generate_series(1, 1000) g").Scan(&n); err != nil || n != 500500 {
				return fmt.Errorf("client %d: %d %v", i, n, err)
			}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		t.Fatal(err)
	}
	mustWork(t, p)
}

// TestTerminateBackend kills one backend with pg_terminate_backend: that
// client gets FATAL 57P01, the others and the proxy carry on.
func TestTerminateBackend(t *testing.T) {
	c := shared.get(t)
	p := startProxy(t, proxyConfig{Upstream: c.Addr()})
	ctx := ctxT(t, time.Minute)
	dsn := p.DSN(roles.scram.name, roles.scram.password, "app")
	victim := connect(t, dsn, 0)
	others := []*pgx.Conn{connect(t, dsn, 0), connect(t, dsn, pgx.QueryExecModeSimpleProtocol), connect(t, dsn, 0)}
	var victimPID int
	if err := victim.QueryRow(ctx, "SELECT pg_backend_pid()").Scan(&victimPID); err != nil {
		t.Fatal(err)
	}

	errc := make(chan error, 1)
	go func() {
		_, err := victim.Exec(ctx, "SELECT pg_sleep(20) /* victim */")
		errc <- err
	}()
	if pid := waitActive(t, c, "pg_sleep(20) /* victim */"); pid != victimPID {
		t.Fatalf("active backend %d, victim is %d", pid, victimPID)
	}
	var ok bool
	if err := superConn(t, c).QueryRow(ctx, "SELECT pg_terminate_backend($1)", victimPID).Scan(&ok); err != nil || !ok {
		t.Fatalf("pg_terminate_backend: %v %v", ok, err)
	}
	select {
	case err := <-errc:
		if got := sqlState(err); got != "57P01" {
			t.Fatalf("terminated client: got %v (SQLSTATE %q), want FATAL 57P01", err, got)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("terminated client did not notice within 10s")
	}
	if !victim.IsClosed() {
		// The connection is dead; any use must fail, not hang.
		if err := victim.Ping(ctxT(t, 10*time.Second)); err == nil {
			t.Fatal("terminated connection still answers")
		}
	}
	for i, conn := range others {
		var n int
		if err := conn.QueryRow(ctx, "SELECT $1::int * 2", i).Scan(&n); err != nil || n != 2*i {
			t.Fatalf("other client %d after terminate: %d %v", i, n, err)
		}
	}
	mustWork(t, p)
	closed := p.waitCount(t, "connection closed", 1, 10*time.Second)
	for _, l := range closed {
		if l.Level == "error" || l.Level == "panic" {
			t.Errorf("terminated backend logged at %s: %s", l.Level, l.Raw)
		}
	}
}
