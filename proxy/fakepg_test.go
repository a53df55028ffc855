package proxy

import (
	"bytes"
	"crypto/hmac"
	"crypto/md5"
	"crypto/pbkdf2"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgproto3"
)

// fakePG is a scripted PostgreSQL backend for protocol tests: it accepts
// connections, handles SSLRequest (TLS when tlsConfig is set) and
// CancelRequest, and runs script for each StartupMessage.
type fakePG struct {
	t         testing.TB
	ln        net.Listener
	tlsConfig *tls.Config
	script    func(c *fakeConn)

	cancels  chan *pgproto3.CancelRequest
	sessions chan *fakeConn // every session, once its startup was received
	wg       sync.WaitGroup
}

// fakeConn is one session on the fake backend.
type fakeConn struct {
	net.Conn
	be      *pgproto3.Backend
	startup *pgproto3.StartupMessage
	tls     bool
	certDER []byte // the fake's own certificate when tls
	pid     uint32
	secret  []byte

	mu       sync.Mutex
	received []pgproto3.FrontendMessage // copies of what the script received via recv
	saslMech string
	gs2      string
}

func newFakePG(t testing.TB, script func(c *fakeConn)) *fakePG {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f := &fakePG{
		t:        t,
		ln:       ln,
		script:   script,
		cancels:  make(chan *pgproto3.CancelRequest, 16),
		sessions: make(chan *fakeConn, 64),
	}
	f.wg.Add(1)
	go f.accept()
	t.Cleanup(func() {
		_ = ln.Close()
		f.wg.Wait()
	})
	return f
}

func (f *fakePG) addr() string { return f.ln.Addr().String() }

func (f *fakePG) accept() {
	defer f.wg.Done()
	for {
		conn, err := f.ln.Accept()
		if err != nil {
			return
		}
		f.wg.Add(1)
		go func() {
			defer f.wg.Done()
			defer conn.Close()
			_ = conn.SetDeadline(time.Now().Add(20 * time.Second))
			f.serve(conn)
		}()
	}
}

func (f *fakePG) serve(conn net.Conn) {
	c := &fakeConn{Conn: conn, be: pgproto3.NewBackend(conn, conn), pid: 4242}
	c.secret = make([]byte, 4)
	_, _ = rand.Read(c.secret)
	for {
		msg, err := c.be.ReceiveStartupMessage()
		if err != nil {
			return
		}
		switch m := msg.(type) {
		case *pgproto3.SSLRequest:
			if f.tlsConfig == nil || c.tls {
				_, _ = conn.Write([]byte{'N'})
				continue
			}
			_, _ = conn.Write([]byte{'S'})
			tc := tls.Server(conn, f.tlsConfig)
			if err := tc.Handshake(); err != nil {
				return
			}
			c.Conn = tc
			c.be = pgproto3.NewBackend(tc, tc)
			c.tls = true
			c.certDER = f.tlsConfig.Certificates[0].Certificate[0]
		case *pgproto3.GSSEncRequest:
			_, _ = conn.Write([]byte{'N'})
		case *pgproto3.CancelRequest:
			cp := *m
			cp.SecretKey = append([]byte(nil), m.SecretKey...)
			f.cancels <- &cp
			return
		case *pgproto3.StartupMessage:
			cp := *m
			cp.Parameters = make(map[string]string, len(m.Parameters))
			for k, v := range m.Parameters {
				cp.Parameters[k] = v
			}
			c.startup = &cp
			f.sessions <- c
			if f.script != nil {
				f.script(c)
			}
			return
		}
	}
}

// nextSession returns the next session the fake backend started.
func (f *fakePG) nextSession(t testing.TB) *fakeConn {
	t.Helper()
	select {
	case c := <-f.sessions:
		return c
	case <-time.After(5 * time.Second):
		t.Fatal("fake backend: no session")
		return nil
	}
}

func (c *fakeConn) send(msgs ...pgproto3.BackendMessage) error {
	for _, m := range msgs {
		c.be.Send(m)
	}
	return c.be.Flush()
}

// ready finishes the startup: AuthenticationOk, parameters, key, ReadyForQuery.
func (c *fakeConn) ready() error {
	return c.send(&pgproto3.AuthenticationOk{},
		&pgproto3.ParameterStatus{Name: "server_version", Value: "15.99"},
		&pgproto3.ParameterStatus{Name: "client_encoding", Value: "UTF8"},
		&pgproto3.ParameterStatus{Name: "standard_conforming_strings", Value: "on"},
		&pgproto3.BackendKeyData{ProcessID: c.pid, SecretKey: c.secret},
		&pgproto3.ReadyForQuery{TxStatus: 'I'})
}

func (c *fakeConn) fatal(code, msg string) error {
	return c.send(&pgproto3.ErrorResponse{Severity: "FATAL", SeverityUnlocalized: "FATAL", Code: code, Message: msg})
}

// authCleartext asks for a password and checks it.
func (c *fakeConn) authCleartext(password string) error {
	if err := c.send(&pgproto3.AuthenticationCleartextPassword{}); err != nil {
		return err
	}
	_ = c.be.SetAuthType(pgproto3.AuthTypeCleartextPassword)
	msg, err := c.be.Receive()
	if err != nil {
		return err
	}
	pm, ok := msg.(*pgproto3.PasswordMessage)
	if !ok || pm.Password != password {
		_ = c.fatal("28P01", "password authentication failed for user \""+c.startup.Parameters["user"]+"\"")
		return errors.New("bad password")
	}
	return nil
}

// authMD5 runs MD5 password authentication.
func (c *fakeConn) authMD5(password string) error {
	salt := [4]byte{1, 2, 3, 4}
	if err := c.send(&pgproto3.AuthenticationMD5Password{Salt: salt}); err != nil {
		return err
	}
	_ = c.be.SetAuthType(pgproto3.AuthTypeMD5Password)
	msg, err := c.be.Receive()
	if err != nil {
		return err
	}
	inner := md5hex([]byte(password + c.startup.Parameters["user"]))
	want := "md5" + md5hex(append([]byte(inner), salt[:]...))
	pm, ok := msg.(*pgproto3.PasswordMessage)
	if !ok || pm.Password != want {
		_ = c.fatal("28P01", "password authentication failed for user \""+c.startup.Parameters["user"]+"\"")
		return errors.New("bad password")
	}
	return nil
}

func md5hex(b []byte) string {
	s := md5.Sum(b)
	return hex.EncodeToString(s[:])
}

// authSCRAM runs the server side of SCRAM-SHA-256 (RFC 5802/7677), offering
// mechs. It records the mechanism and GS2 header the client chose. Like
// PostgreSQL, it refuses GS2 flag 'y' on a TLS connection (a downgrade) and
// checks tls-server-end-point binding data against its own certificate.
func (c *fakeConn) authSCRAM(password string, mechs []string) error {
	if err := c.send(&pgproto3.AuthenticationSASL{AuthMechanisms: mechs}); err != nil {
		return err
	}
	_ = c.be.SetAuthType(pgproto3.AuthTypeSASL)
	msg, err := c.be.Receive()
	if err != nil {
		return err
	}
	ir, ok := msg.(*pgproto3.SASLInitialResponse)
	if !ok {
		return fmt.Errorf("want SASLInitialResponse, got %T", msg)
	}
	first := string(ir.Data)
	parts := strings.SplitN(first, ",", 3)
	if len(parts) != 3 {
		return errors.New("bad client-first-message")
	}
	c.mu.Lock()
	c.saslMech, c.gs2 = ir.AuthMechanism, parts[0]
	c.mu.Unlock()
	if c.tls && parts[0] == "y" {
		_ = c.fatal("28000", "SCRAM channel binding negotiation error")
		return errors.New("gs2 y over TLS")
	}
	gs2Header := parts[0] + "," + parts[1] + ","
	bare := parts[2]
	var clientNonce string
	for _, attr := range strings.Split(bare, ",") {
		if v, ok := strings.CutPrefix(attr, "r="); ok {
			clientNonce = v
		}
	}
	salt := make([]byte, 16)
	_, _ = rand.Read(salt)
	sn := make([]byte, 18)
	_, _ = rand.Read(sn)
	nonce := clientNonce + base64.StdEncoding.EncodeToString(sn)
	serverFirst := fmt.Sprintf("r=%s,s=%s,i=4096", nonce, base64.StdEncoding.EncodeToString(salt))
	if err := c.send(&pgproto3.AuthenticationSASLContinue{Data: []byte(serverFirst)}); err != nil {
		return err
	}
	_ = c.be.SetAuthType(pgproto3.AuthTypeSASLContinue)
	msg, err = c.be.Receive()
	if err != nil {
		return err
	}
	rsp, ok := msg.(*pgproto3.SASLResponse)
	if !ok {
		return fmt.Errorf("want SASLResponse, got %T", msg)
	}
	final := string(rsp.Data)
	i := strings.LastIndex(final, ",p=")
	if i < 0 {
		return errors.New("bad client-final-message")
	}
	withoutProof, proof64 := final[:i], final[i+3:]
	cbind := []byte(gs2Header)
	if strings.HasPrefix(gs2Header, "p=tls-server-end-point") {
		h := sha256.Sum256(c.certDER) // ECDSA-SHA256 test certificates
		cbind = append(cbind, h[:]...)
	}
	if !strings.HasPrefix(withoutProof, "c="+base64.StdEncoding.EncodeToString(cbind)+",") {
		_ = c.fatal("28000", "SCRAM channel binding check failed")
		return errors.New("channel binding mismatch")
	}
	authMessage := bare + "," + serverFirst + "," + withoutProof
	salted, err := pbkdf2.Key(sha256.New, password, salt, 4096, 32)
	if err != nil {
		return err
	}
	clientKey := hmacSHA256(salted, "Client Key")
	storedKey := sha256.Sum256(clientKey)
	sig := hmacSHA256(storedKey[:], authMessage)
	proof, err := base64.StdEncoding.DecodeString(proof64)
	if err != nil || len(proof) != len(sig) {
		return errors.New("bad proof")
	}
	for j := range proof {
		proof[j] ^= sig[j]
	}
	if got := sha256.Sum256(proof); !hmac.Equal(got[:], storedKey[:]) {
		_ = c.fatal("28P01", "password authentication failed for user \""+c.startup.Parameters["user"]+"\"")
		return errors.New("bad password")
	}
	serverSig := hmacSHA256(hmacSHA256(salted, "Server Key"), authMessage)
	return c.send(&pgproto3.AuthenticationSASLFinal{Data: []byte("v=" + base64.StdEncoding.EncodeToString(serverSig))})
}

func hmacSHA256(key []byte, msg string) []byte {
	h := hmac.New(sha256.New, key)
	h.Write([]byte(msg))
	return h.Sum(nil)
}

// serveQueries answers simple queries until Terminate or EOF:
//   - "sleep": waits for cancel (a value on c's cancel channel) then 57014;
//   - "die": closes the connection without a word;
//   - "terminate me": FATAL 57P01 then close (like pg_terminate_backend);
//   - anything else: one row echoing the query text.
//
// Every received message is recorded.
func (c *fakeConn) serveQueries(cancelled <-chan struct{}) {
	for {
		msg, err := c.be.Receive()
		if err != nil {
			return
		}
		c.record(msg)
		switch m := msg.(type) {
		case *pgproto3.Terminate:
			return
		case *pgproto3.Query:
			switch m.String {
			case "sleep":
				select {
				case <-cancelled:
				case <-time.After(10 * time.Second):
				}
				_ = c.send(&pgproto3.ErrorResponse{Severity: "ERROR", Code: "57014", Message: "canceling statement due to user request"},
					&pgproto3.ReadyForQuery{TxStatus: 'I'})
			case "die":
				return
			case "terminate me":
				_ = c.fatal("57P01", "terminating connection due to administrator command")
				return
			default:
				_ = c.send(echoResponse(m.String)...)
			}
		case *pgproto3.Sync:
			_ = c.send(&pgproto3.ReadyForQuery{TxStatus: 'I'})
		}
	}
}

func echoResponse(s string) []pgproto3.BackendMessage {
	return []pgproto3.BackendMessage{
		&pgproto3.RowDescription{Fields: []pgproto3.FieldDescription{{Name: []byte("echo"), DataTypeOID: 25, DataTypeSize: -1, TypeModifier: -1}}},
		&pgproto3.DataRow{Values: [][]byte{[]byte(s)}},
		&pgproto3.CommandComplete{CommandTag: []byte("SELECT 1")},
		&pgproto3.ReadyForQuery{TxStatus: 'I'},
	}
}

// record keeps a deep copy of msg (pgproto3 messages are flyweights).
func (c *fakeConn) record(msg pgproto3.FrontendMessage) {
	enc, err := msg.Encode(nil)
	if err != nil {
		return
	}
	var cp pgproto3.FrontendMessage
	switch msg.(type) {
	case *pgproto3.Query:
		cp = &pgproto3.Query{}
	case *pgproto3.Terminate:
		cp = &pgproto3.Terminate{}
	case *pgproto3.Sync:
		cp = &pgproto3.Sync{}
	case *pgproto3.Parse:
		cp = &pgproto3.Parse{}
	default:
		return
	}
	if err := cp.Decode(enc[5:]); err != nil {
		return
	}
	c.mu.Lock()
	c.received = append(c.received, cp)
	c.mu.Unlock()
}

func (c *fakeConn) messages() []pgproto3.FrontendMessage {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]pgproto3.FrontendMessage(nil), c.received...)
}

// trustScript is the default session: trust auth, then echo queries.
func trustScript(cancelled <-chan struct{}) func(c *fakeConn) {
	return func(c *fakeConn) {
		if c.ready() != nil {
			return
		}
		c.serveQueries(cancelled)
	}
}

// readAll drains r until EOF or error (bounded), for asserting closes.
func readAll(r io.Reader) []byte {
	var b bytes.Buffer
	_, _ = io.Copy(&b, io.LimitReader(r, 1<<20))
	return b.Bytes()
}
