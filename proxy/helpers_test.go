package proxy

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"math/big"
	"net"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"
	"github.com/rs/zerolog"
)

// testProxy is a Server serving on a loopback listener for one test.
type testProxy struct {
	srv    *Server
	addr   string
	cancel context.CancelFunc
	done   chan error // Serve's result
}

// startProxy starts a proxy in front of upstream with test-friendly
// defaults; mod may adjust the options.
func startProxy(t testing.TB, upstream string, mod func(*Opts)) *testProxy {
	t.Helper()
	opts := Opts{
		UpstreamAddr:     upstream,
		UpstreamTLS:      UpstreamTLSDisable,
		HandshakeTimeout: 3 * time.Second,
		ShutdownTimeout:  time.Second,
		EventLoops:       testEventLoops,
		Logger:           zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.DebugLevel),
	}
	if mod != nil {
		mod(&opts)
	}
	srv, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	return serveProxy(t, srv)
}

func serveProxy(t testing.TB, srv *Server) *testProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	p := &testProxy{srv: srv, addr: ln.Addr().String(), cancel: cancel, done: make(chan error, 1)}
	go func() { p.done <- srv.Serve(ctx, ln) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-p.done:
			if err != nil {
				t.Errorf("Serve: %v", err)
			}
			p.done <- err
		case <-time.After(10 * time.Second):
			t.Error("Serve did not return")
		}
	})
	return p
}

// stop cancels Serve and returns its result. Safe to call from any goroutine.
func (p *testProxy) stop(t testing.TB) error {
	p.cancel()
	select {
	case err := <-p.done:
		p.done <- err // for Cleanup
		return err
	case <-time.After(10 * time.Second):
		return errors.New("Serve did not return")
	}
}

// connString returns a pgconn connection string for the proxy.
func (p *testProxy) connString(extra string) string {
	s := "postgres://alice:secret@" + p.addr + "/appdb?sslmode=disable&connect_timeout=5"
	if extra != "" {
		s = "postgres://alice:secret@" + p.addr + "/appdb?connect_timeout=5&" + extra
	}
	return s
}

func connect(t testing.TB, connString string) *pgconn.PgConn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := pgconn.Connect(ctx, connString)
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	t.Cleanup(func() { _ = c.Close(context.Background()) })
	return c
}

// echo runs a simple query and returns the single value of the fake's echo row.
func echo(t testing.TB, c *pgconn.PgConn, q string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	res, err := c.Exec(ctx, q).ReadAll()
	if err != nil {
		t.Fatalf("exec %q: %v", q, err)
	}
	if len(res) != 1 || len(res[0].Rows) != 1 {
		t.Fatalf("exec %q: unexpected result %+v", q, res)
	}
	return string(res[0].Rows[0][0])
}

// rawClient is a protocol-level client: a TCP connection plus a pgproto3
// Frontend on it.
type rawClient struct {
	conn net.Conn
	fe   *pgproto3.Frontend
}

func dialRaw(t testing.TB, addr string) *rawClient {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	t.Cleanup(func() { _ = conn.Close() })
	return &rawClient{conn: conn, fe: pgproto3.NewFrontend(conn, conn)}
}

func (c *rawClient) send(t testing.TB, msgs ...pgproto3.FrontendMessage) {
	t.Helper()
	for _, m := range msgs {
		c.fe.Send(m)
	}
	if err := c.fe.Flush(); err != nil {
		t.Fatal(err)
	}
}

func (c *rawClient) recv(t testing.TB) pgproto3.BackendMessage {
	t.Helper()
	m, err := c.fe.Receive()
	if err != nil {
		t.Fatalf("receive: %v", err)
	}
	return m
}

// startup sends a 3.0 StartupMessage and reads up to ReadyForQuery (trust).
func (c *rawClient) startup(t testing.TB, params map[string]string) *pgproto3.BackendKeyData {
	t.Helper()
	c.send(t, &pgproto3.StartupMessage{ProtocolVersion: pgproto3.ProtocolVersion30, Parameters: params})
	return c.untilReady(t)
}

func (c *rawClient) untilReady(t testing.TB) *pgproto3.BackendKeyData {
	t.Helper()
	var key *pgproto3.BackendKeyData
	for {
		switch m := c.recv(t).(type) {
		case *pgproto3.BackendKeyData:
			key = &pgproto3.BackendKeyData{ProcessID: m.ProcessID, SecretKey: append([]byte(nil), m.SecretKey...)}
		case *pgproto3.ReadyForQuery:
			return key
		case *pgproto3.ErrorResponse:
			t.Fatalf("startup failed: %s %s", m.Code, m.Message)
		}
	}
}

// expectFatal reads until an ErrorResponse and checks severity and code,
// then checks that the connection is closed.
func (c *rawClient) expectFatal(t testing.TB, code string) *pgproto3.ErrorResponse {
	t.Helper()
	for {
		m, err := c.fe.Receive()
		if err != nil {
			t.Fatalf("want FATAL %s, got error %v", code, err)
		}
		if e, ok := m.(*pgproto3.ErrorResponse); ok {
			if e.Severity != "FATAL" || e.Code != code {
				t.Fatalf("want FATAL %s, got %s %s %q", code, e.Severity, e.Code, e.Message)
			}
			cp := *e
			c.expectClosed(t)
			return &cp
		}
	}
}

// expectClosed checks that the peer closes the connection (EOF or reset)
// without sending anything more.
func (c *rawClient) expectClosed(t testing.TB) {
	t.Helper()
	m, err := c.fe.Receive()
	if err == nil {
		t.Fatalf("want connection closed, got %T", m)
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		t.Fatalf("connection not closed: %v", err)
	}
}

// testCA is a throwaway CA issuing server certificates for localhost and
// 127.0.0.1.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pool *x509.CertPool
}

func newTestCA(t testing.TB) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "pgcloak test CA"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		IsCA:                  true,
		KeyUsage:              x509.KeyUsageCertSign,
		BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return &testCA{cert: cert, key: key, pool: pool}
}

// serverConfig returns a TLS server configuration with a fresh certificate.
func (ca *testCA) serverConfig(t testing.TB) *tls.Config {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()),
		Subject:      pkix.Name{CommonName: "localhost"},
		DNSNames:     []string{"localhost"},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	return &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}}}
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
