package proxy

import (
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"maps"
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"
)

func TestStartupParametersForwardedUnchanged(t *testing.T) {
	fake := newFakePG(t, trustScript(nil))
	p := startProxy(t, fake.addr(), nil)
	c := dialRaw(t, p.addr)
	params := map[string]string{
		"user":             "alice",
		"database":         "appdb",
		"options":          "-c search_path=app,public -c statement_timeout=5s",
		"application_name": "pgcloak-test ünïcode",
		"replication":      "database",
		"client_encoding":  "UTF8",
	}
	c.startup(t, params)
	got := fake.nextSession(t).startup
	if got.ProtocolVersion != pgproto3.ProtocolVersion30 || !maps.Equal(got.Parameters, params) {
		t.Fatalf("server got %d %v, want %v", got.ProtocolVersion, got.Parameters, params)
	}
}

func TestAuthMethods(t *testing.T) {
	const password = "s3cret pässword"
	scramMechs := []string{"SCRAM-SHA-256"}
	cases := []struct {
		name string
		auth func(c *fakeConn) error
	}{
		{"trust", func(*fakeConn) error { return nil }},
		{"cleartext", func(c *fakeConn) error { return c.authCleartext(password) }},
		{"md5", func(c *fakeConn) error { return c.authMD5(password) }},
		{"scram-sha-256", func(c *fakeConn) error { return c.authSCRAM(password, scramMechs) }},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			fake := newFakePG(t, func(c *fakeConn) {
				if tc.auth(c) != nil || c.ready() != nil {
					return
				}
				c.serveQueries(nil)
			})
			p := startProxy(t, fake.addr(), nil)
			cfg := "postgres://alice:" + strings.ReplaceAll(password, " ", "%20") + "@" + p.addr + "/appdb?sslmode=disable"
			conn := connect(t, cfg)
			if got := echo(t, conn, "hello"); got != "hello" {
				t.Fatalf("echo = %q", got)
			}
			if tc.name == "trust" {
				return
			}
			// The server's own error reaches the client for a wrong password.
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			_, err := pgconn.Connect(ctx, "postgres://alice:wrong@"+p.addr+"/appdb?sslmode=disable")
			var pgErr *pgconn.PgError
			if !errors.As(err, &pgErr) || pgErr.Code != "28P01" || !strings.Contains(pgErr.Message, "password authentication failed") {
				t.Fatalf("wrong password: got %v", err)
			}
			waitFor(t, "handshake failure counted", func() bool { return p.srv.Stats().HandshakeFailures == 1 })
		})
	}
}

func TestSCRAMBothLegsTLS(t *testing.T) {
	ca := newTestCA(t)
	mechs := []string{"SCRAM-SHA-256-PLUS", "SCRAM-SHA-256"}
	script := func(c *fakeConn) {
		if c.authSCRAM("pw", mechs) != nil || c.ready() != nil {
			return
		}
		c.serveQueries(nil)
	}
	connectTLS := func(t *testing.T, p *testProxy, channelBinding string) (*pgconn.PgConn, error) {
		cfg, err := pgconn.ParseConfig("postgres://alice:pw@" + p.addr + "/appdb?sslmode=require&channel_binding=" + channelBinding)
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		return pgconn.ConnectConfig(ctx, cfg)
	}

	t.Run("same certificate: channel binding passes through", func(t *testing.T) {
		shared := ca.serverConfig(t)
		fake := newFakePG(t, script)
		fake.tlsConfig = shared
		p := startProxy(t, fake.addr(), func(o *Opts) {
			o.ClientTLS = shared
			o.UpstreamTLS = UpstreamTLSRequire
		})
		conn, err := connectTLS(t, p, "require")
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close(context.Background())
		sess := fake.nextSession(t)
		sess.mu.Lock()
		defer sess.mu.Unlock()
		if sess.saslMech != "SCRAM-SHA-256-PLUS" || !sess.tls {
			t.Fatalf("mechanism %q over tls=%v", sess.saslMech, sess.tls)
		}
	})

	t.Run("different certificates: binding clients refused by the server, others work", func(t *testing.T) {
		fake := newFakePG(t, script)
		fake.tlsConfig = ca.serverConfig(t)
		p := startProxy(t, fake.addr(), func(o *Opts) {
			o.ClientTLS = ca.serverConfig(t)
			o.UpstreamTLS = UpstreamTLSRequire
		})
		_, err := connectTLS(t, p, "prefer")
		var pgErr *pgconn.PgError
		if !errors.As(err, &pgErr) || pgErr.Code != "28000" {
			t.Fatalf("channel_binding=prefer: got %v, want the server's 28000", err)
		}
		conn, err := connectTLS(t, p, "disable")
		if err != nil {
			t.Fatal(err)
		}
		conn.Close(context.Background())
	})
}

func TestSCRAMChannelBindingStripped(t *testing.T) {
	ca := newTestCA(t)
	mechs := []string{"SCRAM-SHA-256-PLUS", "SCRAM-SHA-256"}
	fake := newFakePG(t, func(c *fakeConn) {
		if c.authSCRAM("pw", mechs) != nil || c.ready() != nil {
			return
		}
		c.serveQueries(nil)
	})

	t.Run("client TLS terminated: PLUS removed, client falls back", func(t *testing.T) {
		p := startProxy(t, fake.addr(), func(o *Opts) { o.ClientTLS = ca.serverConfig(t) })
		conn := connect(t, "postgres://alice:pw@"+p.addr+"/appdb?sslmode=require")
		if got := echo(t, conn, "x"); got != "x" {
			t.Fatalf("echo = %q", got)
		}
		sess := fake.nextSession(t)
		sess.mu.Lock()
		mech, gs2 := sess.saslMech, sess.gs2
		sess.mu.Unlock()
		if mech != "SCRAM-SHA-256" || gs2 != "y" {
			t.Fatalf("client chose %q with GS2 flag %q, want SCRAM-SHA-256 with y", mech, gs2)
		}

		// What the client sees, exactly.
		raw := dialRaw(t, p.addr)
		tc := raw.startTLS(t, ca)
		fe := pgproto3.NewFrontend(tc, tc)
		fe.Send(&pgproto3.StartupMessage{ProtocolVersion: pgproto3.ProtocolVersion30, Parameters: map[string]string{"user": "alice"}})
		if err := fe.Flush(); err != nil {
			t.Fatal(err)
		}
		m, err := fe.Receive()
		if err != nil {
			t.Fatal(err)
		}
		sasl, ok := m.(*pgproto3.AuthenticationSASL)
		if !ok || !slices.Equal(sasl.AuthMechanisms, []string{"SCRAM-SHA-256"}) {
			t.Fatalf("client got %#v", m)
		}
		fake.nextSession(t)
	})

	t.Run("plaintext both legs: list untouched", func(t *testing.T) {
		p := startProxy(t, fake.addr(), nil)
		raw := dialRaw(t, p.addr)
		raw.send(t, &pgproto3.StartupMessage{ProtocolVersion: pgproto3.ProtocolVersion30, Parameters: map[string]string{"user": "alice"}})
		sasl, ok := raw.recv(t).(*pgproto3.AuthenticationSASL)
		if !ok || !slices.Equal(sasl.AuthMechanisms, mechs) {
			t.Fatalf("client got %#v", sasl)
		}
		fake.nextSession(t)
	})
}

// startTLS sends an SSLRequest and starts TLS on the raw connection.
func (c *rawClient) startTLS(t *testing.T, ca *testCA) *tls.Conn {
	t.Helper()
	if _, err := c.conn.Write(sslRequestPacket()); err != nil {
		t.Fatal(err)
	}
	var b [1]byte
	if _, err := c.conn.Read(b[:]); err != nil || b[0] != 'S' {
		t.Fatalf("SSLRequest answer %q, %v", b[0], err)
	}
	tc := tls.Client(c.conn, &tls.Config{RootCAs: ca.pool, ServerName: "localhost"})
	if err := tc.Handshake(); err != nil {
		t.Fatal(err)
	}
	return tc
}

func sslRequestPacket() []byte {
	var b [8]byte
	binary.BigEndian.PutUint32(b[0:], 8)
	binary.BigEndian.PutUint32(b[4:], sslRequestCode)
	return b[:]
}

func TestClientTLS(t *testing.T) {
	ca := newTestCA(t)
	fake := newFakePG(t, trustScript(nil))

	t.Run("no certificate: N, then plaintext", func(t *testing.T) {
		p := startProxy(t, fake.addr(), nil)
		conn := connect(t, p.connString("sslmode=prefer"))
		if echo(t, conn, "a") != "a" {
			t.Fatal("echo")
		}
		fake.nextSession(t)
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if _, err := pgconn.Connect(ctx, p.connString("sslmode=require")); err == nil {
			t.Fatal("sslmode=require succeeded without TLS")
		}
	})

	for _, negotiation := range []string{"postgres", "direct"} {
		t.Run("terminated, negotiation "+negotiation, func(t *testing.T) {
			p := startProxy(t, fake.addr(), func(o *Opts) { o.ClientTLS = ca.serverConfig(t) })
			cfg, err := pgconn.ParseConfig(p.connString("sslmode=verify-full&sslnegotiation=" + negotiation))
			if err != nil {
				t.Fatal(err)
			}
			cfg.TLSConfig = &tls.Config{RootCAs: ca.pool, ServerName: "localhost"}
			if negotiation == "direct" {
				cfg.TLSConfig.NextProtos = []string{"postgresql"}
			}
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			conn, err := pgconn.ConnectConfig(ctx, cfg)
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close(ctx)
			if _, ok := conn.Conn().(*tls.Conn); !ok {
				t.Fatal("client connection is not TLS")
			}
			if echo(t, conn, "b") != "b" {
				t.Fatal("echo")
			}
			if s := fake.nextSession(t); s.tls {
				t.Fatal("upstream leg uses TLS with UpstreamTLSDisable")
			}
		})
	}
}

func TestUpstreamTLS(t *testing.T) {
	ca := newTestCA(t)
	other := newTestCA(t)
	tlsFake := newFakePG(t, trustScript(nil))
	tlsFake.tlsConfig = ca.serverConfig(t)
	plainFake := newFakePG(t, trustScript(nil))

	cases := []struct {
		name    string
		fake    *fakePG
		mode    UpstreamTLS
		roots   *testCA
		wantTLS bool
		wantErr bool
	}{
		{"disable", tlsFake, UpstreamTLSDisable, nil, false, false},
		{"prefer with TLS server", tlsFake, UpstreamTLSPrefer, nil, true, false},
		{"prefer with plaintext server", plainFake, UpstreamTLSPrefer, nil, false, false},
		{"require", tlsFake, UpstreamTLSRequire, nil, true, false},
		{"require refused", plainFake, UpstreamTLSRequire, nil, false, true},
		{"verify-full", tlsFake, UpstreamTLSVerifyFull, ca, true, false},
		{"verify-full wrong CA", tlsFake, UpstreamTLSVerifyFull, other, false, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p := startProxy(t, tc.fake.addr(), func(o *Opts) {
				o.UpstreamTLS = tc.mode
				if tc.roots != nil {
					o.UpstreamTLSConfig = &tls.Config{RootCAs: tc.roots.pool}
				}
			})
			c := dialRaw(t, p.addr)
			c.send(t, &pgproto3.StartupMessage{ProtocolVersion: pgproto3.ProtocolVersion30, Parameters: map[string]string{"user": "alice"}})
			if tc.wantErr {
				e := c.expectFatal(t, "08006")
				if !strings.Contains(e.Message, "TLS") {
					t.Fatalf("message %q does not mention TLS", e.Message)
				}
				return
			}
			c.untilReady(t)
			if s := tc.fake.nextSession(t); s.tls != tc.wantTLS {
				t.Fatalf("upstream TLS = %v, want %v", s.tls, tc.wantTLS)
			}
		})
	}
}

func TestGSSENCRequestRefused(t *testing.T) {
	fake := newFakePG(t, trustScript(nil))
	p := startProxy(t, fake.addr(), nil)
	c := dialRaw(t, p.addr)
	var req [8]byte
	binary.BigEndian.PutUint32(req[0:], 8)
	binary.BigEndian.PutUint32(req[4:], gssEncRequestCode)
	if _, err := c.conn.Write(req[:]); err != nil {
		t.Fatal(err)
	}
	var b [1]byte
	if _, err := c.conn.Read(b[:]); err != nil || b[0] != 'N' {
		t.Fatalf("GSSENCRequest answer %q, %v", b[0], err)
	}
	c.startup(t, map[string]string{"user": "alice"})
}

func TestProtocol32KeysAndNegotiation(t *testing.T) {
	secret := make([]byte, 32)
	for i := range secret {
		secret[i] = byte(i)
	}
	fake := newFakePG(t, func(c *fakeConn) {
		c.secret = secret
		_ = c.send(&pgproto3.NegotiateProtocolVersion{NewestMinorProtocol: 2, UnrecognizedOptions: []string{"_pq_.test"}})
		_ = c.ready()
		c.serveQueries(nil)
	})
	p := startProxy(t, fake.addr(), nil)
	c := dialRaw(t, p.addr)
	c.send(t, &pgproto3.StartupMessage{ProtocolVersion: pgproto3.ProtocolVersion32, Parameters: map[string]string{"user": "alice", "_pq_.test": "1"}})
	var key *pgproto3.BackendKeyData
	sawNegotiate := false
	for key == nil || !sawNegotiate {
		switch m := c.recv(t).(type) {
		case *pgproto3.NegotiateProtocolVersion:
			sawNegotiate = slices.Equal(m.UnrecognizedOptions, []string{"_pq_.test"})
		case *pgproto3.BackendKeyData:
			key = &pgproto3.BackendKeyData{ProcessID: m.ProcessID, SecretKey: append([]byte(nil), m.SecretKey...)}
		case *pgproto3.ReadyForQuery:
			t.Fatalf("ReadyForQuery before key (%v) / negotiation (%v)", key, sawNegotiate)
		}
	}
	if len(key.SecretKey) != 32 || string(key.SecretKey) == string(secret) || key.ProcessID != 4242 {
		t.Fatalf("client key %d/%x leaks or has the wrong length", key.ProcessID, key.SecretKey)
	}
	if got := fake.nextSession(t).startup.ProtocolVersion; got != pgproto3.ProtocolVersion32 {
		t.Fatalf("server got protocol %d", got)
	}
}

func TestBadStartupPackets(t *testing.T) {
	fake := newFakePG(t, trustScript(nil))
	p := startProxy(t, fake.addr(), nil)
	packet := func(version uint32, body string, length int) []byte {
		b := make([]byte, 8, 8+len(body))
		binary.BigEndian.PutUint32(b[0:], uint32(length))
		binary.BigEndian.PutUint32(b[4:], version)
		return append(b, body...)
	}
	cases := []struct {
		name string
		pkt  []byte
		code string
	}{
		{"too long", packet(pgproto3.ProtocolVersion30, "", 10001), "08P01"},
		{"absurd length", packet(pgproto3.ProtocolVersion30, "", 1<<31-1), "08P01"},
		{"too short", packet(pgproto3.ProtocolVersion30, "", 7), "08P01"},
		{"protocol 2.0", packet(2<<16, "user\x00a\x00\x00", 8+len("user\x00a\x00\x00")), "0A000"},
		{"unterminated parameters", packet(pgproto3.ProtocolVersion30, "user\x00a", 8+len("user\x00a")), "08P01"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := dialRaw(t, p.addr)
			if _, err := c.conn.Write(tc.pkt); err != nil {
				t.Fatal(err)
			}
			c.expectFatal(t, tc.code)
		})
	}
	// The proxy still serves others.
	c := dialRaw(t, p.addr)
	c.startup(t, map[string]string{"user": "alice"})
	if got := p.srv.Stats().HandshakeFailures; got != uint64(len(cases)) {
		t.Fatalf("handshake failures = %d, want %d", got, len(cases))
	}
}

func TestUpstreamUnreachable(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // nothing listens there now
	p := startProxy(t, addr, nil)
	c := dialRaw(t, p.addr)
	c.send(t, &pgproto3.StartupMessage{ProtocolVersion: pgproto3.ProtocolVersion30, Parameters: map[string]string{"user": "alice"}})
	e := c.expectFatal(t, "08006")
	if strings.Contains(e.Message, addr) {
		t.Fatalf("message %q reveals the upstream address", e.Message)
	}
}

func TestHandshakeTimeout(t *testing.T) {
	t.Run("silent client", func(t *testing.T) {
		fake := newFakePG(t, trustScript(nil))
		p := startProxy(t, fake.addr(), func(o *Opts) { o.HandshakeTimeout = 150 * time.Millisecond })
		c := dialRaw(t, p.addr)
		start := time.Now()
		c.expectFatal(t, "08006")
		if d := time.Since(start); d < 100*time.Millisecond || d > 3*time.Second {
			t.Fatalf("closed after %v", d)
		}
		waitFor(t, "session gone", func() bool { return p.srv.Stats().SessionsActive == 0 })
	})
	t.Run("silent server", func(t *testing.T) {
		release := make(chan struct{})
		defer close(release)
		fake := newFakePG(t, func(c *fakeConn) { <-release })
		p := startProxy(t, fake.addr(), func(o *Opts) { o.HandshakeTimeout = 150 * time.Millisecond })
		c := dialRaw(t, p.addr)
		c.send(t, &pgproto3.StartupMessage{ProtocolVersion: pgproto3.ProtocolVersion30, Parameters: map[string]string{"user": "alice"}})
		c.expectFatal(t, "08006")
	})
}

func TestServerAuthErrorEndsSession(t *testing.T) {
	fake := newFakePG(t, func(c *fakeConn) {
		_ = c.fatal("3D000", "database \"nope\" does not exist")
	})
	p := startProxy(t, fake.addr(), nil)
	c := dialRaw(t, p.addr)
	c.send(t, &pgproto3.StartupMessage{ProtocolVersion: pgproto3.ProtocolVersion30, Parameters: map[string]string{"user": "alice", "database": "nope"}})
	e := c.expectFatal(t, "3D000")
	if !strings.Contains(e.Message, "nope") {
		t.Fatalf("server message not relayed: %q", e.Message)
	}
}

func TestGSSAPIAuthRefused(t *testing.T) {
	fake := newFakePG(t, func(c *fakeConn) { _ = c.send(&pgproto3.AuthenticationGSS{}) })
	p := startProxy(t, fake.addr(), nil)
	c := dialRaw(t, p.addr)
	c.send(t, &pgproto3.StartupMessage{ProtocolVersion: pgproto3.ProtocolVersion30, Parameters: map[string]string{"user": "alice"}})
	c.expectFatal(t, "0A000")
}

func TestDirectTLSWithoutALPNRefused(t *testing.T) {
	ca := newTestCA(t)
	fake := newFakePG(t, trustScript(nil))
	p := startProxy(t, fake.addr(), func(o *Opts) { o.ClientTLS = ca.serverConfig(t) })
	raw := dialRaw(t, p.addr)
	tc := tls.Client(raw.conn, &tls.Config{RootCAs: ca.pool, ServerName: "localhost"}) // no ALPN
	if err := tc.Handshake(); err != nil {
		t.Fatal(err)
	}
	c := &rawClient{conn: tc, fe: pgproto3.NewFrontend(tc, tc)}
	c.expectFatal(t, "08P01") // readable: sent inside TLS
}
