package proxy

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgproto3"
)

// maxHandshakeMsgLen bounds any message during authentication (GSSAPI tokens
// and SASL messages are the largest, well below this).
const maxHandshakeMsgLen = 1 << 20

// handshake runs everything before the relay, under HandshakeTimeout:
// the client's startup (TLS, cancel), the connection to the server, and the
// authentication exchange up to the first ReadyForQuery. On error the client
// has been sent an ErrorResponse when there is one to send.
func (s *session) handshake(ctx context.Context) (err error) {
	deadline := time.Now().Add(s.srv.opts.HandshakeTimeout)
	_ = s.clientRaw.SetDeadline(deadline)
	defer func() {
		if err != nil {
			err = s.stop(err)
			if !errors.Is(err, errCancelDone) {
				s.srv.stats.handshakeFailures.Add(1)
				if _, _, ok := sqlstateOf(err); ok {
					s.writeClientFinal()
					s.lingerClose()
				}
			}
		}
	}()

	st, err := s.acceptStartup(ctx)
	if err != nil {
		return err
	}
	s.params = st.params
	s.user, s.database, s.appName = st.params["user"], st.params["database"], st.params["application_name"]
	if s.database == "" {
		s.database = s.user
	}
	s.log.Debug().Str("user", s.user).Str("database", s.database).Str("application_name", s.appName).
		Bool("tls", s.clientTLS).Msg("startup")

	if err := s.connectUpstream(ctx, deadline); err != nil {
		return err
	}
	s.clientBuf = newFrameBuf(s.srv.bufs)
	s.serverBuf = newFrameBuf(s.srv.bufs)
	if _, err := s.server.Write(st.raw); err != nil {
		return s.handshakeIOErr(false, err)
	}
	s.bytesUp += uint64(len(st.raw))
	s.srv.stats.bytesUp.Add(uint64(len(st.raw)))
	if err := s.relayAuth(); err != nil {
		return err
	}

	// Clear the handshake deadlines, then make sure no stop slipped in
	// before (stop sets its deadlines after recording its reason).
	_ = s.clientRaw.SetDeadline(time.Time{})
	_ = s.serverRaw.SetDeadline(time.Time{})
	if r := s.reason(); r != nil {
		return r
	}
	s.log.Debug().Bool("client_tls", s.clientTLS).Bool("server_tls", s.serverTLS).
		Dur("took", time.Since(s.started)).Msg("session ready")
	return nil
}

// handshakeIOErr classifies an I/O error on the client (fromClient) or the
// server connection during the handshake.
func (s *session) handshakeIOErr(fromClient bool, err error) error {
	if r := s.reason(); r != nil {
		return r // stopped (shutdown): the deadline fired on purpose
	}
	var se *sessionError
	switch {
	case errors.As(err, &se):
		return err
	case isTimeout(err):
		return newError(ErrHandshakeTimeout, "", err)
	case fromClient:
		return newError(errClientGone, "", err)
	default:
		return newError(ErrUpstreamLost, "", err)
	}
}

// relayAuth relays the authentication exchange: the server's messages to the
// client until ReadyForQuery (or an ErrorResponse), and the client's answer
// to each authentication request that expects one. Password and SASL
// messages pass through as opaque bytes and are never logged. Two messages
// are changed: AuthenticationSASL loses its channel-binding mechanisms when
// TLS is used on either leg (channel binding cannot cross a proxy), and
// BackendKeyData is replaced by a proxy-issued key. Messages for the client
// are collected and written in one go before the proxy waits for input.
func (s *session) relayAuth() error {
	var out []byte
	flush := func() error {
		if len(out) == 0 {
			return nil
		}
		n, err := s.client.Write(out)
		s.bytesDown += uint64(n)
		s.srv.stats.bytesDown.Add(uint64(n))
		out = out[:0]
		if err != nil {
			return s.handshakeIOErr(true, err)
		}
		return nil
	}
	for {
		if !s.serverBuf.hasFrame(maxHandshakeMsgLen) {
			if err := flush(); err != nil {
				return err
			}
		}
		f, err := s.serverBuf.next(s.server, maxHandshakeMsgLen)
		if err != nil {
			return s.handshakeIOErr(false, err)
		}
		switch f[0] {
		case 'R':
			answer, err := s.authRequest(f, &out)
			if err != nil {
				return err
			}
			if answer {
				if err := flush(); err != nil {
					return err
				}
				if err := s.relayClientAuthAnswer(); err != nil {
					return err
				}
			}
		case 'K':
			if out, err = s.swapBackendKey(f, out); err != nil {
				return err
			}
		case 'E':
			out = append(out, f...)
			if err := flush(); err != nil {
				return err
			}
			s.log.Info().Str("sqlstate", errorCode(f)).Msg("server refused the connection")
			if s.saslClientBinds {
				s.log.Warn().Msg("SCRAM with TLS on both legs: the client supports channel binding, which cannot " +
					"cross pgcloak, and PostgreSQL refuses such clients on a TLS connection; " +
					"set channel_binding=disable in the client, or give pgcloak the server's own certificate")
			}
			return errUpstreamRejected
		case 'Z':
			out = append(out, f...)
			return flush()
		default: // ParameterStatus, NoticeResponse, NegotiateProtocolVersion, …
			out = append(out, f...)
		}
	}
}

// authRequest appends the authentication request f for the client to *out
// and reports whether the client must answer it.
func (s *session) authRequest(f []byte, out *[]byte) (answer bool, err error) {
	if len(f) < headerLen+4 {
		return false, newError(ErrProtocolViolation, "", errors.New("short authentication message from server"))
	}
	switch binary.BigEndian.Uint32(f[headerLen:]) {
	case pgproto3.AuthTypeOk, pgproto3.AuthTypeSASLFinal:
		*out = append(*out, f...)
		return false, nil
	case pgproto3.AuthTypeSASL:
		if !s.clientTLS && !s.serverTLS || s.channelBindingPassesThrough() {
			*out = append(*out, f...)
			return true, nil
		}
		o, err := stripChannelBinding(f, *out)
		*out = o
		s.saslStripped = true
		return true, err
	case pgproto3.AuthTypeCleartextPassword, pgproto3.AuthTypeMD5Password, pgproto3.AuthTypeSASLContinue:
		*out = append(*out, f...)
		return true, nil
	default:
		// GSSAPI/SSPI: whether the client answers the last GSSContinue
		// depends on the GSS context state, which a relay cannot see.
		// SCM credentials and Kerberos V5 are long obsolete.
		return false, newError(ErrUnsupported, "authentication method not supported by pgcloak", nil)
	}
}

// channelBindingPassesThrough reports whether SCRAM channel binding works
// through the proxy: tls-server-end-point binds to the server certificate
// alone, so when pgcloak shows clients the very certificate the server shows
// pgcloak, the client's binding data is what the server expects.
func (s *session) channelBindingPassesThrough() bool {
	if !s.clientTLS || !s.serverTLS || s.srv.clientLeaf == nil {
		return false
	}
	tc, ok := s.server.(*tls.Conn)
	if !ok {
		return false
	}
	peers := tc.ConnectionState().PeerCertificates
	return len(peers) > 0 && bytes.Equal(peers[0].Raw, s.srv.clientLeaf)
}

// stripChannelBinding re-encodes an AuthenticationSASL without the
// channel-binding ("-PLUS") mechanisms, appending it to out.
func stripChannelBinding(f, out []byte) ([]byte, error) {
	var m pgproto3.AuthenticationSASL
	if err := m.Decode(f[headerLen:]); err != nil {
		return out, newError(ErrProtocolViolation, "", err)
	}
	keep := m.AuthMechanisms[:0]
	for _, mech := range m.AuthMechanisms {
		if !strings.HasSuffix(mech, "-PLUS") {
			keep = append(keep, mech)
		}
	}
	if len(keep) == 0 {
		return out, newError(ErrUnsupported,
			"the server offers only SASL mechanisms with channel binding, which cannot pass through pgcloak", nil)
	}
	m.AuthMechanisms = keep
	o, err := m.Encode(out)
	if err != nil {
		return out, newError(ErrProtocolViolation, "", err)
	}
	return o, nil
}

// relayClientAuthAnswer forwards the client's password / SASL / GSSAPI
// response to the server.
func (s *session) relayClientAuthAnswer() error {
	f, err := s.clientBuf.next(s.client, maxHandshakeMsgLen)
	if err != nil {
		return s.handshakeIOErr(true, err)
	}
	switch f[0] {
	case 'p':
		if s.saslStripped && s.serverTLS && !s.saslClientBinds {
			s.saslClientBinds = gs2Flag(f) == 'y'
		}
	case 'X':
		return errClientGone // e.g. psql asking for a password: it reconnects
	default:
		return newError(ErrProtocolViolation, "expected an authentication response", nil)
	}
	n, err := s.server.Write(f)
	s.bytesUp += uint64(n)
	s.srv.stats.bytesUp.Add(uint64(n))
	if err != nil {
		return s.handshakeIOErr(false, err)
	}
	return nil
}

// gs2Flag returns the GS2 channel-binding flag ('n', 'y' or 'p') of a
// SASLInitialResponse frame, or 0.
func gs2Flag(f []byte) byte {
	body := f[headerLen:]
	i := bytes.IndexByte(body, 0) // end of the mechanism name
	if i < 0 || len(body) < i+1+4+1 {
		return 0
	}
	return body[i+1+4]
}

// swapBackendKey registers the server's cancel key and appends the
// proxy-issued BackendKeyData for the client to out.
func (s *session) swapBackendKey(f, out []byte) ([]byte, error) {
	var k pgproto3.BackendKeyData
	if err := k.Decode(f[headerLen:]); err != nil || len(k.SecretKey) > 256 {
		return out, newError(ErrProtocolViolation, "", errors.New("invalid BackendKeyData from server"))
	}
	if s.cancelTarget != nil {
		s.srv.cancels.remove(s.cancelPID, s.cancelTarget)
		s.cancelPID, s.cancelTarget = 0, nil
	}
	t := &cancelTarget{addr: s.srv.opts.UpstreamAddr, upPID: k.ProcessID, upSecret: k.SecretKey}
	pid, err := s.srv.cancels.register(t)
	if err != nil {
		return out, err
	}
	s.cancelPID, s.cancelTarget = pid, t
	return (&pgproto3.BackendKeyData{ProcessID: pid, SecretKey: t.secret}).Encode(out)
}

// errorCode extracts the SQLSTATE ('C' field) of an ErrorResponse frame for
// logging; the message text is not logged (it may quote values).
func errorCode(f []byte) string {
	body := f[headerLen:]
	for len(body) > 1 {
		typ := body[0]
		end := 1
		for end < len(body) && body[end] != 0 {
			end++
		}
		if typ == 'C' {
			return string(body[1:end])
		}
		body = body[min(end+1, len(body)):]
	}
	return ""
}
