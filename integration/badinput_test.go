package integration

import (
	"encoding/binary"
	"errors"
	"io"
	"net"
	"os"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgproto3"
)

// TestBadInput sends hostile or broken bytes to the proxy. Each connection
// must be closed by the proxy (or end cleanly), with a log line and no
// error/panic-level noise, and the proxy must keep serving.
func TestBadInput(t *testing.T) {
	c := shared.get(t)
	const handshake = 2 * time.Second
	p := startProxy(t, proxyConfig{Upstream: c.Addr(), HandshakeTimeout: handshake.String()})

	startup := func(params map[string]string) []byte {
		b, err := (&pgproto3.StartupMessage{ProtocolVersion: pgproto3.ProtocolVersionNumber, Parameters: params}).Encode(nil)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	be32 := func(vs ...uint32) []byte {
		var b []byte
		for _, v := range vs {
			b = binary.BigEndian.AppendUint32(b, v)
		}
		return b
	}
	full := startup(map[string]string{"user": roles.trust.name, "database": "app"})

	cases := []struct {
		name      string
		send      []byte
		closeSide bool          // client closes its write side after sending
		within    time.Duration // the proxy must have closed by then
	}{
		{"HTTPRequest", []byte("GET / HTTP/1.1\r\nHost: pgcloak\r\n\r\n"), false, 5 * time.Second},
		{"RandomBytes", []byte("\x00\x00\x00\x10\xde\xad\xbe\xef\x01\x02\x03\x04\x05\x06\x07\x08garbage"), false, 5 * time.Second},
		{"UnknownProtocolVersion", be32(16, 0x00090000, 0, 0), false, 5 * time.Second},
		{"LengthTooSmall", be32(2, 0x00030000), false, 5 * time.Second},
		{"AbsurdLength", be32(0x7fffffff, 0x00030000), false, 5 * time.Second},
		{"NegativeLength", be32(0xffffffff, 0x00030000), false, 5 * time.Second},
		{"TruncatedStartupThenClose", full[:len(full)/2], true, 5 * time.Second},
		{"TruncatedStartupThenSilence", full[:len(full)/2], false, handshake + 5*time.Second},
		{"NeverSpeaks", nil, false, handshake + 5*time.Second},
		{"SSLRequestThenGarbage", append(be32(8, 80877103), []byte("\x16\x03\x01garbage-not-tls")...), false, handshake + 5*time.Second},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			before := p.logs.count("connection closed")
			rssBefore := p.RSS(t)
			nc, err := net.Dial("tcp", p.Addr)
			if err != nil {
				t.Fatal(err)
			}
			defer nc.Close()
			start := time.Now()
			if len(tc.send) > 0 {
				if _, err := nc.Write(tc.send); err != nil {
					t.Fatalf("write: %v", err)
				}
			}
			if tc.closeSide {
				_ = nc.(*net.TCPConn).CloseWrite()
			}
			_ = nc.SetReadDeadline(time.Now().Add(tc.within))
			reply, err := io.ReadAll(nc)
			if errors.Is(err, os.ErrDeadlineExceeded) {
				t.Fatalf("proxy left the connection open for %v (read %q)", tc.within, reply)
			}
			t.Logf("closed after %v; proxy replied %q (err %v)", time.Since(start).Round(time.Millisecond), truncate(string(reply), 200), err)
			checkReply(t, reply)
			lines := p.waitCount(t, "connection closed", before+1, 10*time.Second)
			last := lines[len(lines)-1]
			if last.Level == "error" || last.Level == "panic" || last.Level == "fatal" {
				t.Errorf("bad input logged at %s level: %s", last.Level, last.Raw)
			}
			if rss := p.RSS(t); rss-rssBefore > 256<<20 {
				t.Errorf("proxy RSS grew by %d MiB on bad input", (rss-rssBefore)>>20)
			}
			mustWork(t, p)
		})
	}

	t.Run("AbsurdLengthAfterLogin", func(t *testing.T) {
		// After a successful login, a message header announcing 2 GiB.
		before := p.logs.count("connection closed")
		nc, err := net.Dial("tcp", p.Addr)
		if err != nil {
			t.Fatal(err)
		}
		defer nc.Close()
		_ = nc.SetDeadline(time.Now().Add(15 * time.Second))
		fe := pgproto3.NewFrontend(nc, nc)
		fe.Send(&pgproto3.StartupMessage{ProtocolVersion: pgproto3.ProtocolVersionNumber, Parameters: map[string]string{"user": roles.trust.name, "database": "app"}})
		if err := fe.Flush(); err != nil {
			t.Fatal(err)
		}
		for {
			msg, err := fe.Receive()
			if err != nil {
				t.Fatalf("login: %v", err)
			}
			if _, ok := msg.(*pgproto3.ReadyForQuery); ok {
				break
			}
			if e, ok := msg.(*pgproto3.ErrorResponse); ok {
				t.Fatalf("login: %s", e.Message)
			}
		}
		rssBefore := p.RSS(t)
		if _, err := nc.Write(append([]byte{'Q'}, be32(0x7fffffff)...)); err != nil {
			t.Fatal(err)
		}
		_, _ = nc.Write([]byte("SELECT 1"))
		reply, err := io.ReadAll(nc)
		if errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("proxy kept the connection open after a 2 GiB length field (read %q)", reply)
		}
		t.Logf("proxy replied %q (err %v)", truncate(string(reply), 200), err)
		checkReply(t, reply)
		p.waitCount(t, "connection closed", before+1, 10*time.Second)
		if rss := p.RSS(t); rss-rssBefore > 256<<20 {
			t.Errorf("proxy RSS grew by %d MiB", (rss-rssBefore)>>20)
		}
		mustWork(t, p)
	})
}

// checkReply accepts silence or PostgreSQL backend messages (an 'N' to an
// SSLRequest, ErrorResponse) as the proxy's last words; anything else
// means it wrote something a client cannot parse.
func checkReply(t *testing.T, reply []byte) {
	t.Helper()
	if len(reply) > 0 && reply[0] == 'N' {
		reply = reply[1:]
	}
	for len(reply) > 0 {
		if len(reply) < 5 {
			t.Fatalf("proxy sent a truncated message %q", reply)
		}
		n := int(binary.BigEndian.Uint32(reply[1:5]))
		if n < 4 || 1+n > len(reply) {
			t.Fatalf("proxy sent a malformed message %q", truncate(string(reply), 100))
		}
		if reply[0] != 'E' {
			t.Fatalf("proxy sent message %q to a bad client, want only ErrorResponse", reply[0])
		}
		reply = reply[1+n:]
	}
}
