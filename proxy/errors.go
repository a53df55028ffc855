package proxy

import (
	"errors"
	"net"
	"os"

	"github.com/jackc/pgx/v5/pgproto3"
)

// Sentinels for the failures of pgcloak itself that a client can see. Callers
// branch on them with errors.Is; sqlstateOf maps them to the SQLSTATE the
// client receives. This file is the only place where that mapping lives.
var (
	// ErrUpstreamUnavailable: the PostgreSQL server could not be reached or
	// the connection to it could not be set up (08006).
	ErrUpstreamUnavailable = errors.New("proxy: upstream unavailable")
	// ErrUpstreamTLS: TLS towards the server was required but refused or
	// failed (08006).
	ErrUpstreamTLS = errors.New("proxy: upstream tls failed")
	// ErrUpstreamLost: the server connection broke during the session (08006).
	ErrUpstreamLost = errors.New("proxy: upstream connection lost")
	// ErrHandshakeTimeout: startup, TLS and authentication did not finish
	// within HandshakeTimeout (08006).
	ErrHandshakeTimeout = errors.New("proxy: handshake timeout")
	// ErrProtocolViolation: a peer sent bytes that are not valid protocol
	// (08P01).
	ErrProtocolViolation = errors.New("proxy: protocol violation")
	// ErrUnsupportedProtocol: a startup packet asked for a protocol version
	// other than 3.x (0A000, as PostgreSQL answers).
	ErrUnsupportedProtocol = errors.New("proxy: unsupported frontend protocol")
	// ErrShutdown: pgcloak is shutting down (57P01).
	ErrShutdown = errors.New("proxy: shutting down")

	// Defined now for the encryption layer (DESIGN.md §7).

	// ErrUnsupported: a statement uses an encrypted column in a way pgcloak
	// cannot make correct (0A000).
	ErrUnsupported = errors.New("proxy: feature not supported")
	// ErrPlaintextDenied: the role may not see plaintext and the column's
	// policy is on_denied = "error" (42501).
	ErrPlaintextDenied = errors.New("proxy: plaintext access denied")
	// ErrCiphertext: a stored ciphertext failed authentication or is
	// malformed (XX001).
	ErrCiphertext = errors.New("proxy: ciphertext rejected")
	// ErrKeyUnavailable: the key needed is unavailable, disabled or deleted
	// (58000).
	ErrKeyUnavailable = errors.New("proxy: key unavailable")
)

// Reasons a session ends without anything for the client to read. They are
// never mapped to a message.
var (
	errClientGone       = errors.New("proxy: client closed the connection")
	errClientTerminated = errors.New("proxy: client sent Terminate")
	errUpstreamRejected = errors.New("proxy: server refused the connection")
	errCancelDone       = errors.New("proxy: cancel request handled")
)

// errPanic marks a recovered panic (a bug); clients see XX000.
var errPanic = errors.New("proxy: panic")

// SQLSTATE codes used by pgcloak. Written out, never derived.
const (
	sqlstateConnectionFailure  = "08006"
	sqlstateProtocolViolation  = "08P01"
	sqlstateFeatureUnsupported = "0A000"
	sqlstateAdminShutdown      = "57P01"
	sqlstateInsufficientPriv   = "42501"
	sqlstateDataCorrupted      = "XX001"
	sqlstateSystemError        = "58000"
	sqlstateInternalError      = "XX000"
)

// clientErrors maps each sentinel to what the client sees. The message is
// fixed text: causes (addresses, OS errors) go to the log, not to clients.
var clientErrors = []struct {
	err     error
	code    string
	message string
}{
	{ErrShutdown, sqlstateAdminShutdown, "terminating connection because pgcloak is shutting down"},
	{ErrUpstreamTLS, sqlstateConnectionFailure, "pgcloak could not establish a TLS connection to the server"},
	{ErrUpstreamUnavailable, sqlstateConnectionFailure, "pgcloak could not connect to the server"},
	{ErrUpstreamLost, sqlstateConnectionFailure, "server closed the connection unexpectedly"},
	{ErrHandshakeTimeout, sqlstateConnectionFailure, "timeout expired during the connection handshake"},
	{ErrProtocolViolation, sqlstateProtocolViolation, "invalid message from the client or the server"},
	{ErrUnsupportedProtocol, sqlstateFeatureUnsupported, "unsupported frontend protocol: pgcloak supports 3.0 to 3.2"},
	{ErrUnsupported, sqlstateFeatureUnsupported, "feature not supported by pgcloak"},
	{ErrPlaintextDenied, sqlstateInsufficientPriv, "permission denied for plaintext of an encrypted column"},
	{ErrCiphertext, sqlstateDataCorrupted, "encrypted value failed authentication"},
	{ErrKeyUnavailable, sqlstateSystemError, "encryption key unavailable"},
}

// sqlstateOf returns the SQLSTATE and the client-facing message for err, or
// ok=false when err needs no message (the client left, the server already
// answered). Unknown errors become XX000 with a generic message.
func sqlstateOf(err error) (code, message string, ok bool) {
	if err == nil || isQuiet(err) {
		return "", "", false
	}
	var se *sessionError
	for _, ce := range clientErrors {
		if errors.Is(err, ce.err) {
			msg := ce.message
			if errors.As(err, &se) && se.clientMsg != "" {
				msg = se.clientMsg
			}
			return ce.code, msg, true
		}
	}
	return sqlstateInternalError, "internal error in pgcloak", true
}

// isQuiet reports whether err ends a session without a message to the client.
func isQuiet(err error) bool {
	return errors.Is(err, errClientGone) || errors.Is(err, errClientTerminated) ||
		errors.Is(err, errUpstreamRejected) || errors.Is(err, errCancelDone)
}

// sessionError attaches a cause (logged) and optionally a more precise
// client-facing message to a sentinel.
type sessionError struct {
	kind      error  // one of the sentinels above
	clientMsg string // shown to the client instead of the default; no secrets
	cause     error  // logged only; may be nil
}

func (e *sessionError) Error() string {
	s := e.kind.Error()
	if e.clientMsg != "" {
		s += ": " + e.clientMsg
	}
	if e.cause != nil {
		s += ": " + e.cause.Error()
	}
	return s
}

func (e *sessionError) Unwrap() []error {
	if e.cause == nil {
		return []error{e.kind}
	}
	return []error{e.kind, e.cause}
}

// newError wraps cause (may be nil) in kind with an optional client message.
func newError(kind error, clientMsg string, cause error) error {
	return &sessionError{kind: kind, clientMsg: clientMsg, cause: cause}
}

// appendFatal appends a FATAL ErrorResponse for err to dst; dst is returned
// unchanged when err needs no message.
func appendFatal(dst []byte, err error) []byte {
	code, msg, ok := sqlstateOf(err)
	if !ok {
		return dst
	}
	out, encErr := (&pgproto3.ErrorResponse{
		Severity:            "FATAL",
		SeverityUnlocalized: "FATAL",
		Code:                code,
		Message:             msg,
	}).Encode(dst)
	if encErr != nil { // only on NUL bytes in fixed text: a bug
		return dst
	}
	return out
}

// isTimeout reports whether err is a deadline expiry on a connection.
func isTimeout(err error) bool {
	if errors.Is(err, os.ErrDeadlineExceeded) {
		return true
	}
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}
