package proxy

import (
	"crypto/tls"
	"fmt"
	"time"

	"github.com/rs/zerolog"
)

// UpstreamTLS says whether and how the proxy uses TLS towards PostgreSQL.
// The numbers are part of no format; they only give the zero value a meaning
// (invalid).
type UpstreamTLS int

const (
	UpstreamTLSInvalid    UpstreamTLS = 0
	UpstreamTLSDisable    UpstreamTLS = 1 // never ask for TLS
	UpstreamTLSPrefer     UpstreamTLS = 2 // ask; fall back to plaintext when the server says N
	UpstreamTLSRequire    UpstreamTLS = 3 // ask; fail when refused; no certificate check
	UpstreamTLSVerifyFull UpstreamTLS = 4 // ask; verify chain and host name
)

func (m UpstreamTLS) String() string {
	switch m {
	case UpstreamTLSDisable:
		return "disable"
	case UpstreamTLSPrefer:
		return "prefer"
	case UpstreamTLSRequire:
		return "require"
	case UpstreamTLSVerifyFull:
		return "verify-full"
	}
	return fmt.Sprintf("UpstreamTLS(%d)", int(m))
}

// ParseUpstreamTLS maps the configuration spelling to an UpstreamTLS.
func ParseUpstreamTLS(s string) (UpstreamTLS, error) {
	for _, m := range []UpstreamTLS{UpstreamTLSDisable, UpstreamTLSPrefer, UpstreamTLSRequire, UpstreamTLSVerifyFull} {
		if m.String() == s {
			return m, nil
		}
	}
	return UpstreamTLSInvalid, fmt.Errorf("proxy: unknown upstream tls mode %q (want disable, prefer, require or verify-full)", s)
}

// Opts configures a Server. Build it with validated values (the config
// package does this for the CLI); New checks it once more.
type Opts struct {
	// UpstreamAddr is the PostgreSQL server, host:port.
	UpstreamAddr string
	// UpstreamTLS selects TLS towards the server. UpstreamTLSConfig holds
	// roots (and ServerName for verify-full); nil uses the system roots.
	UpstreamTLS       UpstreamTLS
	UpstreamTLSConfig *tls.Config

	// ClientTLS, when non-nil, terminates TLS from clients that send an
	// SSLRequest. When nil, the proxy answers 'N' and clients continue in
	// plaintext (or give up if they require TLS).
	ClientTLS *tls.Config

	// HandshakeTimeout bounds startup, TLS and authentication. Default 15s.
	HandshakeTimeout time.Duration
	// ShutdownTimeout is how long Shutdown waits for sessions to finish
	// before sending FATAL 57P01 and closing them. Default 30s.
	ShutdownTimeout time.Duration
	// MaxMessageLen bounds the length field of any message accepted from a
	// client or server (including the 4 length bytes). Default 1 GiB + 1 MiB:
	// PostgreSQL's own limit for a field is 1 GiB.
	MaxMessageLen int
	// BufferSize is the read buffer of each direction of a session; a batch
	// of messages is forwarded with one write per read. It grows only for a
	// message that a filter must see whole and is larger than the buffer.
	// Default 64 KiB.
	BufferSize int

	// EventLoops is the number of event-loop threads that relay sessions
	// with plain sockets on both legs (Linux). 0 picks one per four CPUs
	// (at least one); a negative value disables the event loop so every
	// session uses two goroutines.
	EventLoops int

	// Encryption, when non-nil, encrypts and decrypts the configured
	// columns (see Encryption). Nil: pure pass-through.
	Encryption *Encryption

	// Logger receives structured logs. Every session adds its conn id.
	Logger zerolog.Logger
}
