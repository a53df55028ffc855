package proxy

import (
	"context"
	"crypto/tls"
	"encoding/binary"
	"fmt"
	"io"
	"net"

	"github.com/jackc/pgx/v5/pgproto3"
)

// Request codes of the packets a client may open a connection with.
const (
	cancelRequestCode = 80877102
	sslRequestCode    = 80877103
	gssEncRequestCode = 80877104

	// maxStartupPacketLen is PostgreSQL's MAX_STARTUP_PACKET_LENGTH.
	maxStartupPacketLen = 10000
	// tlsHandshakeRecord is the first byte of a TLS ClientHello, sent by
	// clients that negotiate TLS directly (sslnegotiation=direct).
	tlsHandshakeRecord = 0x16
	// alpnPostgres is the ALPN protocol PostgreSQL 17+ uses.
	alpnPostgres = "postgresql"
)

// startup is what the client asked for in its StartupMessage.
type startup struct {
	raw    []byte // the packet as received, length included; forwarded unchanged
	params map[string]string
}

// acceptStartup runs the client side of the connection opening: TLS and
// GSSAPI negotiation, cancel requests, and finally the StartupMessage. It
// reads exactly one packet at a time (never ahead), because the bytes after
// an SSLRequest belong to the TLS handshake.
func (s *session) acceptStartup(ctx context.Context) (*startup, error) {
	tlsDone, gssDone := false, false
	for {
		pkt, direct, err := s.readStartupPacket(!tlsDone)
		if err != nil {
			return nil, err
		}
		if direct {
			if err := s.startClientTLS(ctx, pkt, true); err != nil {
				return nil, err
			}
			tlsDone = true
			continue
		}
		code := binary.BigEndian.Uint32(pkt[4:8])
		switch code {
		case sslRequestCode:
			if tlsDone || len(pkt) != 8 {
				return nil, newError(ErrProtocolViolation, "unexpected SSLRequest", nil)
			}
			if s.srv.clientTLS == nil {
				if err := s.writeClientByte('N'); err != nil {
					return nil, err
				}
				tlsDone = true // PostgreSQL also refuses a second SSLRequest
				continue
			}
			if err := s.writeClientByte('S'); err != nil {
				return nil, err
			}
			if err := s.startClientTLS(ctx, nil, false); err != nil {
				return nil, err
			}
			tlsDone = true
		case gssEncRequestCode:
			if gssDone || s.clientTLS || len(pkt) != 8 {
				return nil, newError(ErrProtocolViolation, "unexpected GSSENCRequest", nil)
			}
			if err := s.writeClientByte('N'); err != nil {
				return nil, err
			}
			gssDone = true
		case cancelRequestCode:
			return nil, s.handleCancel(ctx, pkt)
		default:
			return decodeStartup(pkt)
		}
	}
}

// readStartupPacket reads one length-prefixed packet (length included in the
// result). With tlsAllowed and a TLS configuration, a TLS record header as the
// first byte means direct TLS negotiation; the byte is returned with
// direct=true.
func (s *session) readStartupPacket(tlsAllowed bool) (pkt []byte, direct bool, err error) {
	var hdr [4]byte
	if _, err := io.ReadFull(s.client, hdr[:1]); err != nil {
		return nil, false, s.handshakeIOErr(true, err)
	}
	if hdr[0] == tlsHandshakeRecord && tlsAllowed && s.srv.clientTLS != nil {
		return hdr[:1], true, nil
	}
	if _, err := io.ReadFull(s.client, hdr[1:]); err != nil {
		return nil, false, s.handshakeIOErr(true, err)
	}
	n := binary.BigEndian.Uint32(hdr[:])
	if n < 8 || n > maxStartupPacketLen {
		return nil, false, newError(ErrProtocolViolation, "invalid length of startup packet",
			fmt.Errorf("startup packet length %d", n))
	}
	pkt = make([]byte, n)
	copy(pkt, hdr[:])
	if _, err := io.ReadFull(s.client, pkt[4:]); err != nil {
		return nil, false, s.handshakeIOErr(true, err)
	}
	return pkt, false, nil
}

// decodeStartup validates a StartupMessage. Protocol 3.x is accepted (the
// server negotiates minor versions it does not know with
// NegotiateProtocolVersion, which is relayed); anything else is refused as
// PostgreSQL does.
func decodeStartup(pkt []byte) (*startup, error) {
	version := binary.BigEndian.Uint32(pkt[4:8])
	if version>>16 != 3 {
		return nil, newError(ErrUnsupportedProtocol, "",
			fmt.Errorf("protocol %d.%d", version>>16, version&0xffff))
	}
	body := pkt[4:]
	if version != pgproto3.ProtocolVersion30 && version != pgproto3.ProtocolVersion32 {
		// pgproto3 decodes 3.0 and 3.2 only; the parameters are laid out the same.
		body = append([]byte(nil), body...)
		binary.BigEndian.PutUint32(body, pgproto3.ProtocolVersion30)
	}
	var m pgproto3.StartupMessage
	if err := m.Decode(body); err != nil {
		return nil, newError(ErrProtocolViolation, "invalid startup packet", err)
	}
	return &startup{raw: pkt, params: m.Parameters}, nil
}

// writeClientByte answers an SSLRequest or GSSENCRequest.
func (s *session) writeClientByte(b byte) error {
	if _, err := s.client.Write([]byte{b}); err != nil {
		return s.handshakeIOErr(true, err)
	}
	return nil
}

// startClientTLS terminates TLS from the client. prefix holds bytes already
// read from the TLS stream (direct negotiation). With direct negotiation the
// client must select the "postgresql" ALPN protocol, as PostgreSQL requires.
func (s *session) startClientTLS(ctx context.Context, prefix []byte, direct bool) error {
	var under net.Conn = s.clientRaw
	if len(prefix) > 0 {
		under = &prefixConn{Conn: s.clientRaw, prefix: prefix}
	}
	tc := tls.Server(under, s.srv.clientTLS)
	if err := tc.HandshakeContext(ctx); err != nil {
		if r := s.reason(); r != nil {
			return r
		}
		return newError(errClientGone, "", fmt.Errorf("client tls handshake: %w", err))
	}
	s.client = tc // from here on, errors reach the client through TLS
	s.clientTLS = true
	if direct && tc.ConnectionState().NegotiatedProtocol != alpnPostgres {
		return newError(ErrProtocolViolation, "direct TLS connection without ALPN protocol \"postgresql\"", nil)
	}
	return nil
}

// prefixConn replays bytes already read before reading from Conn.
type prefixConn struct {
	net.Conn
	prefix []byte
}

func (c *prefixConn) Read(p []byte) (int, error) {
	if len(c.prefix) > 0 {
		n := copy(p, c.prefix)
		c.prefix = c.prefix[n:]
		return n, nil
	}
	return c.Conn.Read(p)
}

// handleCancel forwards a CancelRequest carrying a proxy-issued key and ends
// the connection, as PostgreSQL does, without any answer.
func (s *session) handleCancel(ctx context.Context, pkt []byte) error {
	s.srv.stats.cancelRequests.Add(1)
	var m pgproto3.CancelRequest
	if err := m.Decode(pkt[4:]); err != nil {
		return newError(ErrProtocolViolation, "invalid cancel request", err)
	}
	t, ok := s.srv.cancels.lookup(m.ProcessID, m.SecretKey)
	if !ok {
		s.log.Debug().Uint32("pid", m.ProcessID).Msg("cancel request with an unknown key ignored")
		return errCancelDone
	}
	if err := forwardCancel(ctx, t, s.srv.opts.HandshakeTimeout); err != nil {
		s.log.Warn().Err(err).Uint32("pid", m.ProcessID).Msg("cancel request not delivered")
		return errCancelDone
	}
	s.log.Debug().Uint32("pid", m.ProcessID).Msg("cancel request forwarded")
	return errCancelDone
}
