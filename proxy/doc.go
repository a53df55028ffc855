// Package proxy is pgcloak's PostgreSQL wire-protocol proxy: the listener,
// per-connection sessions (startup, TLS, authentication relay, cancel-key
// mapping), frame forwarding between client and server, SQLSTATE mapping of
// pgcloak's own errors, and graceful shutdown.
//
// proxy never parses SQL itself; later, rewrite plans are applied here.
//
// # Layout
//
//   - server.go: New, Serve (accept loop, two-phase shutdown); stats.go.
//   - session.go: one session per connection; stop (first reason wins,
//     wakes blocked I/O), cleanup, panic containment.
//   - startup.go, upstream.go, handshake.go: the handshake under
//     HandshakeTimeout: SSLRequest / direct TLS / GSSENCRequest /
//     CancelRequest / StartupMessage from the client, dial and TLS towards
//     the server, authentication relay up to ReadyForQuery.
//   - cancel.go: proxy-issued cancel keys and their forwarding.
//   - frame.go, relay.go, filter.go: the relay phase. A relayer runs it;
//     the portable one is two goroutines (one per direction) walking frames
//     in a reusable buffer and writing each batch with one write. Message
//     types a frameFilter wants are handed to it whole (the hook for
//     encryption); all others are streamed untouched.
//   - errors.go: the sentinels and their SQLSTATEs (the only such mapping).
package proxy
