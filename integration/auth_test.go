package integration

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/pgcloak/pgcloak/internal/pgtest"
	"github.com/pgcloak/pgcloak/internal/tlstest"
)

func TestAuth(t *testing.T) {
	c := shared.get(t)
	p := startProxy(t, proxyConfig{Upstream: c.Addr()})
	for _, r := range allRoles() {
		t.Run(r.method, func(t *testing.T) {
			ctx := ctxT(t, 30*time.Second)
			conn, err := tryConnect(ctx, p.DSN(r.name, r.password, "app"), 0)
			if err != nil {
				t.Fatalf("%s user through pgcloak: %v", r.method, err)
			}
			defer conn.Close(context.Background())
			var who string
			if err := conn.QueryRow(ctx, "SELECT current_user").Scan(&who); err != nil || who != r.name {
				t.Fatalf("current_user %q, %v", who, err)
			}
			if r.method == pgtest.MethodTrust {
				return
			}
			_, err = tryConnect(ctx, p.DSN(r.name, "wrong-"+r.password, "app"), 0)
			if got := sqlState(err); got != "28P01" {
				t.Fatalf("wrong password: got %v (SQLSTATE %q), want the server's 28P01", err, got)
			}
			if err != nil && strings.Contains(err.Error(), r.password) {
				t.Fatal("error message contains the password")
			}
		})
	}
	t.Run("UnknownRole", func(t *testing.T) {
		_, err := tryConnect(ctxT(t, 30*time.Second), p.DSN("no_such_role", "x", "app"), 0)
		if got := sqlState(err); got != "28P01" {
			t.Fatalf("unknown role: got %v, want 28P01", err)
		}
	})
	t.Run("UnknownDatabase", func(t *testing.T) {
		_, err := tryConnect(ctxT(t, 30*time.Second), p.DSN(roles.scram.name, roles.scram.password, "no_such_db"), 0)
		if got := sqlState(err); got != "3D000" {
			t.Fatalf("unknown database: got %v, want 3D000", err)
		}
	})
	t.Run("StartupParameters", func(t *testing.T) {
		ctx := ctxT(t, 30*time.Second)
		conn := connect(t, p.DSN(roles.scram.name, roles.scram.password, "app", "application_name=it-app", "options=-c search_path=pg_catalog -c statement_timeout=12345"), 0)
		var app, sp, st string
		if err := conn.QueryRow(ctx, "SELECT current_setting('application_name'), current_setting('search_path'), current_setting('statement_timeout')").Scan(&app, &sp, &st); err != nil {
			t.Fatal(err)
		}
		if app != "it-app" || sp != "pg_catalog" || st != "12345ms" {
			t.Fatalf("startup parameters not relayed: application_name=%q search_path=%q statement_timeout=%q", app, sp, st)
		}
	})
	mustWork(t, p)
}

// tlsFiles issues a certificate for 127.0.0.1 from a fresh CA and writes
// ca.crt, server.crt and server.key into a temp dir.
func tlsFiles(t *testing.T) tlstest.Files {
	t.Helper()
	ca, err := tlstest.NewCA()
	if err != nil {
		t.Fatal(err)
	}
	f, err := ca.WriteFiles(t.TempDir(), "127.0.0.1", "localhost")
	if err != nil {
		t.Fatal(err)
	}
	return f
}

func TestClientTLS(t *testing.T) {
	c := shared.get(t)
	f := tlsFiles(t)
	p := startProxy(t, proxyConfig{Upstream: c.Addr(), TLSCert: f.Cert, TLSKey: f.Key})
	for _, r := range []role{roles.scram, roles.md5} {
		t.Run("verify-full/"+r.method, func(t *testing.T) {
			conn := connect(t, p.DSN(r.name, r.password, "app", "sslmode=verify-full", "sslrootcert="+f.CA), 0)
			if _, ok := conn.PgConn().Conn().(*tls.Conn); !ok {
				t.Fatalf("client connection is %T, not TLS", conn.PgConn().Conn())
			}
			var n int
			if err := conn.QueryRow(t.Context(), "SELECT count(*) FROM generate_series(1, 100000)").Scan(&n); err != nil || n != 100000 {
				t.Fatalf("query over TLS: %d %v", n, err)
			}
		})
	}
	t.Run("WrongCA", func(t *testing.T) {
		other := tlsFiles(t)
		_, err := tryConnect(ctxT(t, 30*time.Second), p.DSN(roles.scram.name, roles.scram.password, "app", "sslmode=verify-full", "sslrootcert="+other.CA), 0)
		if err == nil || !strings.Contains(err.Error(), "certificate") {
			t.Fatalf("verify-full with the wrong CA: got %v, want a certificate error", err)
		}
	})
	t.Run("PlaintextStillAllowed", func(t *testing.T) {
		conn := connect(t, p.DSN(roles.scram.name, roles.scram.password, "app"), 0)
		if _, ok := conn.PgConn().Conn().(*tls.Conn); ok {
			t.Fatal("sslmode=disable got TLS")
		}
	})
	t.Run("GarbageInsteadOfTLSHandshake", func(t *testing.T) {
		before := p.logs.count("connection closed")
		nc, err := net.Dial("tcp", p.Addr)
		if err != nil {
			t.Fatal(err)
		}
		defer nc.Close()
		_ = nc.SetDeadline(time.Now().Add(10 * time.Second))
		if _, err := nc.Write([]byte{0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f}); err != nil { // SSLRequest
			t.Fatal(err)
		}
		b := make([]byte, 1)
		if _, err := io.ReadFull(nc, b); err != nil || b[0] != 'S' {
			t.Fatalf("SSLRequest answered %q, %v; want 'S'", b, err)
		}
		if _, err := nc.Write([]byte("this is not a TLS ClientHello\r\n\r\n")); err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadAll(nc); errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatal("proxy kept the connection open after a broken TLS handshake")
		}
		p.waitCount(t, "connection closed", before+1, 10*time.Second)
	})
	t.Run("Psql", func(t *testing.T) {
		psql := clientBinary(t, c, "psql")
		out, errOut, err := runTool(t, 30*time.Second, psql, roles.scram.password, "-X", "-At", "-d",
			p.DSN(roles.scram.name, "", "app", "sslmode=verify-full", "sslrootcert="+f.CA),
			"-c", "SELECT 'tls ok'")
		if err != nil || out != "tls ok\n" {
			t.Fatalf("psql verify-full: %q %v\n%s", out, err, errOut)
		}
	})
	mustWork(t, p)
}

func TestNoClientTLSConfigured(t *testing.T) {
	c := shared.get(t)
	p := startProxy(t, proxyConfig{Upstream: c.Addr()})
	ctx := ctxT(t, 30*time.Second)
	_, err := tryConnect(ctx, p.DSN(roles.scram.name, roles.scram.password, "app", "sslmode=require"), 0)
	if err == nil {
		t.Fatal("sslmode=require succeeded against a proxy without a certificate")
	}
	conn := connect(t, p.DSN(roles.scram.name, roles.scram.password, "app", "sslmode=prefer"), 0)
	if _, ok := conn.PgConn().Conn().(*tls.Conn); ok {
		t.Fatal("sslmode=prefer got TLS from a proxy without a certificate")
	}
	mustWork(t, p)
}

// TestUpstreamTLS runs the proxy against an SSL cluster.
func TestUpstreamTLS(t *testing.T) {
	c := newCluster(t, pgtest.Opts{SSL: true})
	backendSSL := func(t *testing.T, conn *pgx.Conn) bool {
		t.Helper()
		var ssl bool
		if err := conn.QueryRow(t.Context(), "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()").Scan(&ssl); err != nil {
			t.Fatal(err)
		}
		return ssl
	}

	t.Run("VerifyFull", func(t *testing.T) {
		p := startProxy(t, proxyConfig{Upstream: c.Addr(), UpstreamTLS: "verify-full", UpstreamCA: c.CACertFile(), UpstreamName: "localhost"})
		for _, r := range allRoles() {
			conn := connect(t, p.DSN(r.name, r.password, "app"), 0)
			if !backendSSL(t, conn) {
				t.Errorf("%s: backend connection is not TLS with upstream tls=verify-full", r.method)
			}
		}
	})
	t.Run("Require", func(t *testing.T) {
		p := startProxy(t, proxyConfig{Upstream: c.Addr(), UpstreamTLS: "require"})
		if conn := connect(t, p.DSN(roles.scram.name, roles.scram.password, "app"), 0); !backendSSL(t, conn) {
			t.Error("backend connection is not TLS with upstream tls=require")
		}
	})
	t.Run("Disable", func(t *testing.T) {
		p := startProxy(t, proxyConfig{Upstream: c.Addr(), UpstreamTLS: "disable"})
		if conn := connect(t, p.DSN(roles.scram.name, roles.scram.password, "app"), 0); backendSSL(t, conn) {
			t.Error("backend connection uses TLS with upstream tls=disable")
		}
	})
	t.Run("VerifyFullWrongCA", func(t *testing.T) {
		other := tlsFiles(t)
		p := startProxy(t, proxyConfig{Upstream: c.Addr(), UpstreamTLS: "verify-full", UpstreamCA: other.CA, UpstreamName: "localhost"})
		_, err := tryConnect(ctxT(t, 30*time.Second), p.DSN(roles.scram.name, roles.scram.password, "app"), 0)
		if err == nil {
			t.Fatal("connected although the server certificate is not signed by tls_ca")
		}
		if p.Exited() {
			t.Fatal("proxy exited after a failed upstream handshake")
		}
	})
	t.Run("VerifyFullWrongName", func(t *testing.T) {
		p := startProxy(t, proxyConfig{Upstream: c.Addr(), UpstreamTLS: "verify-full", UpstreamCA: c.CACertFile(), UpstreamName: "db.example.invalid"})
		_, err := tryConnect(ctxT(t, 30*time.Second), p.DSN(roles.scram.name, roles.scram.password, "app"), 0)
		if err == nil {
			t.Fatal("connected although the server certificate does not name tls_server_name")
		}
		if p.Exited() {
			t.Fatal("proxy exited after a failed upstream handshake")
		}
	})
	t.Run("TLSBothLegsSCRAM", func(t *testing.T) {
		// With TLS terminated at the proxy AND towards the server, channel
		// binding cannot cross pgcloak: the proxy drops
		// SCRAM-SHA-256-PLUS, the client (channel_binding=prefer) then
		// sends the GS2 flag "y", and a TLS-connected PostgreSQL refuses
		// that as a downgrade. Rewriting the flag would break the client's
		// proof. This is a documented limitation (README, "Not supported
		// yet") until pgcloak terminates SCRAM itself; the test pins the
		// failure mode (a clear 28000 and an explaining log line) and the
		// workaround (channel_binding=disable).
		f := tlsFiles(t)
		p := startProxy(t, proxyConfig{Upstream: c.Addr(), UpstreamTLS: "verify-full", UpstreamCA: c.CACertFile(), UpstreamName: "localhost", TLSCert: f.Cert, TLSKey: f.Key})
		dsn := func(extra ...string) string {
			return p.DSN(roles.scram.name, roles.scram.password, "app", append([]string{"sslmode=verify-full", "sslrootcert=" + f.CA}, extra...)...)
		}
		t.Run("pgx/channel_binding=prefer is refused clearly", func(t *testing.T) {
			_, err := tryConnect(ctxT(t, 30*time.Second), dsn(), 0)
			var pgErr *pgconn.PgError
			if !errors.As(err, &pgErr) || pgErr.Code != "28000" {
				t.Fatalf("want the server's 28000 channel binding error, got %v", err)
			}
			// The log line may land just after the client saw the error.
			deadline := time.Now().Add(10 * time.Second)
			for !strings.Contains(p.logs.String(), "channel_binding=disable") {
				if time.Now().After(deadline) {
					t.Fatal("pgcloak did not log how to fix the channel binding refusal")
				}
				time.Sleep(20 * time.Millisecond)
			}
		})
		t.Run("pgx/channel_binding=disable", func(t *testing.T) {
			if conn := connect(t, dsn("channel_binding=disable"), 0); !backendSSL(t, conn) {
				t.Fatal("server leg is not TLS")
			}
		})
		t.Run("pgx/channel_binding=require", func(t *testing.T) {
			// The proxy cannot offer channel binding: refuse, don't hang.
			if _, err := tryConnect(ctxT(t, 30*time.Second), dsn("channel_binding=require"), 0); err == nil {
				t.Fatal("channel_binding=require succeeded through a TLS-terminating proxy")
			}
		})
		t.Run("psql with channel_binding=disable", func(t *testing.T) {
			psql := clientBinary(t, c, "psql")
			out, errOut, err := runTool(t, 30*time.Second, psql, roles.scram.password, "-X", "-At", "-d",
				p.DSN(roles.scram.name, "", "app", "sslmode=verify-full", "sslrootcert="+f.CA, "channel_binding=disable"), "-c", "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
			if err != nil || out != "t\n" {
				t.Fatalf("psql over TLS on both legs: %q %v\n%s", out, err, errOut)
			}
		})
		mustWork(t, p)
	})
}
