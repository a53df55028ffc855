package integration

import (
	"context"
	"errors"
	"net"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// refusesWithin waits until new connections to addr are refused.
func refusesWithin(t *testing.T, addr string, d time.Duration) {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		nc, err := net.DialTimeout("tcp", addr, time.Second)
		if err != nil {
			return
		}
		nc.Close()
		if time.Now().After(deadline) {
			t.Fatalf("still accepting connections %v after SIGTERM", d)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestShutdownTimeout: SIGTERM with an idle session and one inside a long
// query; after shutdown_timeout both get FATAL 57P01 and the proxy exits 0.
func TestShutdownTimeout(t *testing.T) {
	c := shared.get(t)
	const timeout = 2 * time.Second
	p := startProxy(t, proxyConfig{Upstream: c.Addr(), ShutdownTimeout: timeout.String()})
	dsn := p.DSN(roles.scram.name, roles.scram.password, "app")
	idle := connect(t, dsn, 0)
	busy := connect(t, dsn, 0)
	ctx := ctxT(t, time.Minute)
	if err := idle.Ping(ctx); err != nil {
		t.Fatal(err)
	}

	errc := make(chan error, 1)
	go func() {
		// context.Background: this query must end because of the proxy,
		// not because pgx cancels it.
		_, err := busy.Exec(context.Background(), "SELECT pg_sleep(30) /* shutdown-busy */")
		errc <- err
	}()
	waitActive(t, c, "pg_sleep(30) /* shutdown-busy */")

	sent := time.Now()
	p.stopped = true
	p.Signal(t, syscall.SIGTERM)
	refusesWithin(t, p.Addr, time.Second)

	select {
	case err := <-errc:
		took := time.Since(sent)
		if got := sqlState(err); got != "57P01" {
			t.Errorf("busy client: got %v (SQLSTATE %q), want FATAL 57P01", err, got)
		}
		if took < timeout-500*time.Millisecond {
			t.Errorf("busy client cut off after %v, before shutdown_timeout %v", took, timeout)
		}
	case <-time.After(timeout + 10*time.Second):
		t.Fatal("busy client still waiting 10s after shutdown_timeout")
	}
	p.Wait(t, 10*time.Second)
	if p.exitErr != nil {
		t.Errorf("exit after SIGTERM: %v", p.exitErr)
	}
	if _, err := idle.Exec(ctx, "SELECT 1"); sqlState(err) != "57P01" {
		t.Errorf("idle client after shutdown: got %v, want FATAL 57P01", err)
	}
	if len(p.logs.find(func(l logLine) bool { return l.Message == "stopped" })) == 0 {
		t.Error("no \"stopped\" log line")
	}

	// The server must not keep running the abandoned query for 30 s.
	conn := superConn(t, c)
	deadline := time.Now().Add(5 * time.Second)
	for {
		var n int
		if err := conn.QueryRow(ctx, "SELECT count(*) FROM pg_stat_activity WHERE state = 'active' AND query LIKE '%shutdown-busy%' AND pid <> pg_backend_pid()").Scan(&n); err != nil {
			t.Fatal(err)
		}
		if n == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Errorf("the server still runs the terminated session's query 5s after pgcloak exited (proxy did not cancel it)")
			_, _ = conn.Exec(ctx, "SELECT pg_cancel_backend(pid) FROM pg_stat_activity WHERE query LIKE '%shutdown-busy%' AND pid <> pg_backend_pid()")
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestShutdownDrains: sessions that finish within shutdown_timeout are
// not disturbed, and the proxy exits as soon as the last one is gone.
func TestShutdownDrains(t *testing.T) {
	c := shared.get(t)
	p := startProxy(t, proxyConfig{Upstream: c.Addr(), ShutdownTimeout: "30s"})
	dsn := p.DSN(roles.scram.name, roles.scram.password, "app")
	ctx := ctxT(t, time.Minute)
	idle, err := tryConnect(ctx, dsn, 0)
	if err != nil {
		t.Fatal(err)
	}
	busy, err := tryConnect(ctx, dsn, pgx.QueryExecModeSimpleProtocol)
	if err != nil {
		t.Fatal(err)
	}
	type result struct {
		v   int
		err error
	}
	done := make(chan result, 1)
	go func() {
		var v int
		err := busy.QueryRow(ctx, "SELECT 42 FROM pg_sleep(1.5) /* drain-busy */").Scan(&v)
		done <- result{v, err}
	}()
	waitActive(t, c, "drain-busy")
	p.stopped = true
	p.Signal(t, syscall.SIGTERM)
	refusesWithin(t, p.Addr, time.Second)

	r := <-done
	if r.err != nil || r.v != 42 {
		t.Fatalf("query in flight at SIGTERM: %d, %v; want it to finish", r.v, r.err)
	}
	// The idle session still works until its client leaves.
	var n int
	if err := idle.QueryRow(ctx, "SELECT 7").Scan(&n); err != nil || n != 7 {
		t.Fatalf("idle session during drain: %d %v", n, err)
	}
	if p.Exited() {
		t.Fatal("proxy exited while sessions were open")
	}
	closedAt := time.Now()
	_ = busy.Close(ctx)
	_ = idle.Close(ctx)
	p.Wait(t, 10*time.Second)
	if took := time.Since(closedAt); took > 5*time.Second {
		t.Errorf("proxy exited %v after the last session closed; want promptly (shutdown_timeout is 30s)", took)
	}
	if p.exitErr != nil {
		t.Errorf("exit after SIGTERM: %v", p.exitErr)
	}
}

// TestShutdownSecondSignal: a second signal exits at once, as the
// "shutting down" log line promises.
func TestShutdownSecondSignal(t *testing.T) {
	c := shared.get(t)
	p := startProxy(t, proxyConfig{Upstream: c.Addr(), ShutdownTimeout: "60s"})
	busy := connect(t, p.DSN(roles.scram.name, roles.scram.password, "app"), 0)
	errc := make(chan error, 1)
	go func() {
		_, err := busy.Exec(context.Background(), "SELECT pg_sleep(20) /* second-signal */")
		errc <- err
	}()
	pid := waitActive(t, c, "second-signal")
	t.Cleanup(func() {
		conn, err := tryConnect(context.Background(), c.SuperDSN(), 0)
		if err == nil {
			_, _ = conn.Exec(context.Background(), "SELECT pg_cancel_backend($1)", pid)
			_ = conn.Close(context.Background())
		}
	})
	p.stopped = true
	p.Signal(t, syscall.SIGTERM)
	refusesWithin(t, p.Addr, time.Second)
	time.Sleep(200 * time.Millisecond)
	start := time.Now()
	p.Signal(t, syscall.SIGTERM)
	p.Wait(t, 10*time.Second)
	if took := time.Since(start); took > 5*time.Second {
		t.Errorf("second SIGTERM: exited after %v", took)
	}
	select {
	case err := <-errc:
		if err == nil {
			t.Error("busy query succeeded although the proxy exited")
		}
	case <-time.After(10 * time.Second):
		t.Error("busy client not told about the exit")
	}
	var ee interface{ ExitCode() int }
	if errors.As(p.exitErr, &ee) {
		t.Logf("exit code after the second signal: %d", ee.ExitCode())
	}
}
