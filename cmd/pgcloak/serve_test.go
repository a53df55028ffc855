package main

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/pgcloak/pgcloak/internal/tlstest"
)

// fakeUpstream is a minimal PostgreSQL server: it accepts any startup with
// AuthenticationOk and ReadyForQuery, then reads messages and never answers
// them. Each startup's user name is sent on users.
type fakeUpstream struct {
	ln    net.Listener
	users chan string
}

func newFakeUpstream(t *testing.T) *fakeUpstream {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f := &fakeUpstream{ln: ln, users: make(chan string, 8)}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			go f.serve(conn)
		}
	}()
	return f
}

func (f *fakeUpstream) serve(conn net.Conn) {
	defer conn.Close()
	be := pgproto3.NewBackend(conn, conn)
	msg, err := be.ReceiveStartupMessage()
	if err != nil {
		return
	}
	sm, ok := msg.(*pgproto3.StartupMessage)
	if !ok {
		return
	}
	f.users <- sm.Parameters["user"]
	be.Send(&pgproto3.AuthenticationOk{})
	be.Send(&pgproto3.ParameterStatus{Name: "server_version", Value: "15.0"})
	be.Send(&pgproto3.BackendKeyData{ProcessID: 7, SecretKey: []byte{0, 0, 0, 9}})
	be.Send(&pgproto3.ReadyForQuery{TxStatus: 'I'})
	if err := be.Flush(); err != nil {
		return
	}
	for {
		if _, err := be.Receive(); err != nil {
			return
		}
	}
}

// serveConfig writes a configuration that listens on a free port in front
// of upstream.
func serveConfig(t *testing.T, upstream string, extra string) string {
	t.Helper()
	return writeFile(t, t.TempDir(), "pgcloak.toml", fmt.Sprintf(`[server]
listen = "127.0.0.1:0"
%s
[upstream]
addr = %q
tls = "disable"
`, extra, upstream))
}

// connectAndQuery opens a protocol session through the proxy at addr as
// user and leaves a query in flight.
func connectAndQuery(t *testing.T, addr, user string) net.Conn {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	fe := pgproto3.NewFrontend(conn, conn)
	fe.Send(&pgproto3.StartupMessage{ProtocolVersion: pgproto3.ProtocolVersionNumber, Parameters: map[string]string{"user": user, "database": "db"}})
	if err := fe.Flush(); err != nil {
		t.Fatal(err)
	}
	for {
		msg, err := fe.Receive()
		if err != nil {
			t.Fatalf("startup through the proxy: %v", err)
		}
		if _, ok := msg.(*pgproto3.ReadyForQuery); ok {
			break
		}
	}
	fe.Send(&pgproto3.Query{String: "SELECT pg_sleep(1000)"})
	if err := fe.Flush(); err != nil {
		t.Fatal(err)
	}
	return conn
}

var listeningRE = regexp.MustCompile(`"message":"listening"`)

// listeningAddr returns the addr of the single "listening" log line in
// stderr, which must be JSON lines only.
func listeningAddr(t *testing.T, stderr string) string {
	t.Helper()
	var addrs []string
	for _, line := range strings.Split(strings.TrimSpace(stderr), "\n") {
		var rec map[string]any
		if err := json.Unmarshal([]byte(line), &rec); err != nil {
			t.Fatalf("stderr line is not JSON: %q", line)
		}
		if rec["message"] == "listening" {
			if rec["level"] != "info" {
				t.Errorf("listening logged at level %v", rec["level"])
			}
			a, _ := rec["addr"].(string)
			addrs = append(addrs, a)
		}
	}
	if len(addrs) != 1 {
		t.Fatalf("%d listening lines, want exactly 1:\n%s", len(addrs), stderr)
	}
	return addrs[0]
}

func TestServeInProcess(t *testing.T) {
	up := newFakeUpstream(t)
	cfg := serveConfig(t, up.ln.Addr().String(), "")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var stdout, stderr syncBuffer
	done := make(chan int, 1)
	go func() { done <- run(ctx, []string{"--config", cfg, "serve"}, &stdout, &stderr) }()

	waitFor(t, &stderr, listeningRE, 10*time.Second)
	addr := listeningAddr(t, stderr.String())
	if _, port, _ := net.SplitHostPort(addr); port == "0" || port == "" {
		t.Fatalf("listening addr %q does not carry the real port", addr)
	}
	// A client reaches the configured upstream through the proxy.
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatalf("dial the logged address: %v", err)
	}
	fe := pgproto3.NewFrontend(conn, conn)
	fe.Send(&pgproto3.StartupMessage{ProtocolVersion: pgproto3.ProtocolVersionNumber, Parameters: map[string]string{"user": "alice"}})
	if err := fe.Flush(); err != nil {
		t.Fatal(err)
	}
	select {
	case u := <-up.users:
		if u != "alice" {
			t.Errorf("upstream saw user %q, want alice", u)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("startup never reached the upstream")
	}
	conn.Close()

	cancel()
	select {
	case code := <-done:
		if code != 0 {
			t.Errorf("exit %d after cancel, want 0; stderr:\n%s", code, stderr.String())
		}
	case <-time.After(20 * time.Second):
		t.Fatal("serve did not return after cancel")
	}
	if stdout.String() != "" {
		t.Errorf("serve wrote to stdout: %q", stdout.String())
	}
}

func TestServeErrors(t *testing.T) {
	// Configuration problems: printed as FILE:LINE, exit 2, nothing served.
	bad := writeFile(t, t.TempDir(), "bad.toml", "[upstream]\naddr = \"h:1\"\ntls = \"sometimes\"\n")
	code, _, stderr := runCLI(t, "--config", bad, "serve")
	if code != 2 || !strings.HasPrefix(stderr, bad+":3: upstream.tls: ") {
		t.Errorf("bad config: exit %d, stderr %q", code, stderr)
	}
	// Encrypted columns without a key store: a configuration error (exit
	// 2) before anything is touched — no upstream connection, no KEK call.
	touched := make(chan string, 4)
	watch := func(name string) string {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { ln.Close() })
		go func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				touched <- name
				c.Close()
			}
		}()
		return ln.Addr().String()
	}
	enc := writeFile(t, t.TempDir(), "enc.toml", fmt.Sprintf(`[server]
listen = "127.0.0.1:0"
[upstream]
addr = %q
[kek.kms]
type = "awskms"
key_id = "alias/pgcloak"
region = "eu-west-1"
endpoint = "http://%s"
[classification.internal]
kek = "kms"
[[column]]
table = "customers"
column = "email"
type = "text"
classification = "internal"
`, watch("upstream"), watch("kms")))
	code, _, stderr = runCLI(t, "--config", enc, "serve")
	if code != 2 || !strings.Contains(stderr, "keystore.dsn: required") || strings.Contains(stderr, "listening") {
		t.Errorf("encrypted columns without a key store: exit %d, stderr %q", code, stderr)
	}
	select {
	case what := <-touched:
		t.Errorf("serve contacted the %s before refusing", what)
	case <-time.After(100 * time.Millisecond):
	}
	// The address is taken: a runtime error, exit 1.
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	p := writeFile(t, t.TempDir(), "busy.toml", fmt.Sprintf("[server]\nlisten = %q\n[upstream]\naddr = \"127.0.0.1:1\"\ntls = \"disable\"\n", busy.Addr()))
	code, _, stderr = runCLI(t, "--config", p, "serve")
	if code != 1 || !strings.Contains(stderr, "listen on "+busy.Addr().String()) {
		t.Errorf("address in use: exit %d, stderr %q", code, stderr)
	}
	// Unusable TLS files are a configuration error, exit 2.
	dir := t.TempDir()
	writeFile(t, dir, "c.pem", "not a certificate")
	writeFile(t, dir, "k.pem", "not a key")
	p = writeFile(t, dir, "tls.toml", "[server]\nlisten = \"127.0.0.1:0\"\ntls_cert = \"c.pem\"\ntls_key = \"k.pem\"\n[upstream]\naddr = \"127.0.0.1:1\"\n")
	code, _, stderr = runCLI(t, "--config", p, "serve")
	if code != 2 || !strings.Contains(stderr, "server.tls_cert / server.tls_key") {
		t.Errorf("bad TLS files: exit %d, stderr %q", code, stderr)
	}
	p = writeFile(t, dir, "ca.toml", "[server]\nlisten = \"127.0.0.1:0\"\n[upstream]\naddr = \"db:5432\"\ntls = \"verify-full\"\ntls_ca = \"c.pem\"\n")
	code, _, stderr = runCLI(t, "--config", p, "serve")
	if code != 2 || !strings.Contains(stderr, "upstream.tls_ca: "+filepath.Join(dir, "c.pem")+" holds no PEM certificate") {
		t.Errorf("bad CA file: exit %d, stderr %q", code, stderr)
	}
}

// TestServeSignals runs pgcloak serve as a child process: SIGTERM shuts it
// down with exit 0; with a query in flight and a long shutdown_timeout, a
// second signal makes it exit at once with 1.
func TestServeSignals(t *testing.T) {
	up := newFakeUpstream(t)
	start := func(t *testing.T, extra string) (*syncBuffer, string, chan error, *os.Process) {
		t.Helper()
		cmd := pgcloakCmd(t, "--config", serveConfig(t, up.ln.Addr().String(), extra), "serve")
		var stderr syncBuffer
		cmd.Stderr = &stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		exited := make(chan error, 1)
		go func() { exited <- cmd.Wait() }()
		t.Cleanup(func() {
			_ = cmd.Process.Kill()
			<-exited
		})
		waitFor(t, &stderr, listeningRE, 20*time.Second)
		return &stderr, listeningAddr(t, stderr.String()), exited, cmd.Process
	}
	exitCodeOf := func(t *testing.T, exited chan error, within time.Duration, stderr *syncBuffer) int {
		t.Helper()
		select {
		case err := <-exited:
			exited <- err // for the cleanup
			if err == nil {
				return 0
			}
			if ee, ok := err.(interface{ ExitCode() int }); ok {
				return ee.ExitCode()
			}
			t.Fatalf("wait: %v", err)
		case <-time.After(within):
			t.Fatalf("still running %v after the signal; stderr:\n%s", within, stderr.String())
		}
		return -1
	}

	t.Run("SIGTERM", func(t *testing.T) {
		stderr, _, exited, proc := start(t, "")
		if err := proc.Signal(syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
		if code := exitCodeOf(t, exited, 20*time.Second, stderr); code != 0 {
			t.Errorf("exit %d after SIGTERM, want 0; stderr:\n%s", code, stderr.String())
		}
		if !strings.Contains(stderr.String(), `"signal":"terminated"`) {
			t.Errorf("shutdown not logged with its signal:\n%s", stderr.String())
		}
	})

	t.Run("second signal", func(t *testing.T) {
		stderr, addr, exited, proc := start(t, `shutdown_timeout = "5m"`)
		connectAndQuery(t, addr, "bob")
		if err := proc.Signal(syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
		waitFor(t, stderr, regexp.MustCompile(`shutting down`), 10*time.Second)
		time.Sleep(200 * time.Millisecond) // the proxy is now waiting for the session
		select {
		case err := <-exited:
			t.Fatalf("exited (%v) before the second signal although a query was in flight; stderr:\n%s", err, stderr.String())
		default:
		}
		if err := proc.Signal(syscall.SIGINT); err != nil {
			t.Fatal(err)
		}
		if code := exitCodeOf(t, exited, 10*time.Second, stderr); code != 1 {
			t.Errorf("exit %d after a second signal, want 1; stderr:\n%s", code, stderr.String())
		}
		if !strings.Contains(stderr.String(), "second signal") {
			t.Errorf("forced exit not logged:\n%s", stderr.String())
		}
	})
}

// TestServeClientTLS checks that [server] tls_cert / tls_key reach the
// proxy: a client asking for TLS gets 'S' and a certificate that verifies.
func TestServeClientTLS(t *testing.T) {
	ca, err := tlstest.NewCA()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	files, err := ca.WriteFiles(dir, "localhost")
	if err != nil {
		t.Fatal(err)
	}
	up := newFakeUpstream(t)
	cfg := serveConfig(t, up.ln.Addr().String(), fmt.Sprintf("tls_cert = %q\ntls_key = %q", files.Cert, files.Key))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var stdout, stderr syncBuffer
	done := make(chan int, 1)
	go func() { done <- run(ctx, []string{"--config", cfg, "serve"}, &stdout, &stderr) }()
	waitFor(t, &stderr, listeningRE, 10*time.Second)
	addr := listeningAddr(t, stderr.String())

	raw, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	_ = raw.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := raw.Write([]byte{0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f}); err != nil { // SSLRequest
		t.Fatal(err)
	}
	answer := make([]byte, 1)
	if _, err := io.ReadFull(raw, answer); err != nil || answer[0] != 'S' {
		t.Fatalf("SSLRequest answered %q, %v; want 'S'", answer, err)
	}
	conn := tls.Client(raw, &tls.Config{RootCAs: ca.Pool(), ServerName: "localhost", NextProtos: []string{"postgresql"}})
	if err := conn.Handshake(); err != nil {
		t.Fatalf("TLS handshake with the configured certificate: %v", err)
	}
	fe := pgproto3.NewFrontend(conn, conn)
	fe.Send(&pgproto3.StartupMessage{ProtocolVersion: pgproto3.ProtocolVersionNumber, Parameters: map[string]string{"user": "carol"}})
	if err := fe.Flush(); err != nil {
		t.Fatal(err)
	}
	select {
	case u := <-up.users:
		if u != "carol" {
			t.Errorf("upstream saw user %q, want carol", u)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("startup over TLS never reached the upstream")
	}
	conn.Close()
	cancel()
	if code := <-done; code != 0 {
		t.Errorf("exit %d; stderr:\n%s", code, stderr.String())
	}
}
