package proxy

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"fmt"
	"io"
	"net"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgproto3"
)

// Cancel keys. A client gets the server's real process id (so that
// pg_backend_pid(), pg_terminate_backend() and server logs agree with what
// the driver reports) and a secret issued by the proxy, random and of the
// same length as the server's (4 bytes for protocol 3.0, up to 256 for 3.2).
// The server's own secret never leaves the proxy. A CancelRequest carrying a
// proxy-issued key is forwarded to the server that session is connected to,
// with the server's real key.

// cancelTarget is where a proxy-issued key points. Immutable once registered.
type cancelTarget struct {
	secret   []byte // the proxy-issued secret the client must present
	addr     string // upstream host:port
	upPID    uint32
	upSecret []byte
}

// cancelRegistry maps process ids to the targets registered under them.
// Live backends of one server have distinct ids, but a session may outlive
// its backend briefly and the id be reused, so an id may hold several
// targets; the secret tells them apart.
type cancelRegistry struct {
	mu sync.Mutex
	m  map[uint32][]*cancelTarget
}

func newCancelRegistry() *cancelRegistry {
	return &cancelRegistry{m: make(map[uint32][]*cancelTarget)}
}

// register issues a secret for t (filling t.secret) and files t under the
// server's process id, which it returns.
func (r *cancelRegistry) register(t *cancelTarget) (uint32, error) {
	n := max(len(t.upSecret), 4)
	t.secret = make([]byte, n)
	if _, err := rand.Read(t.secret); err != nil {
		return 0, fmt.Errorf("proxy: cancel secret: %w", err)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.m[t.upPID] = append(r.m[t.upPID], t)
	return t.upPID, nil
}

// remove forgets t, registered under pid; called when its session ends.
func (r *cancelRegistry) remove(pid uint32, t *cancelTarget) {
	r.mu.Lock()
	defer r.mu.Unlock()
	ts := r.m[pid]
	for i, x := range ts {
		if x == t {
			ts = append(ts[:i], ts[i+1:]...)
			break
		}
	}
	if len(ts) == 0 {
		delete(r.m, pid)
	} else {
		r.m[pid] = ts
	}
}

// lookup returns the target for a key presented by a client, comparing
// secrets in constant time.
func (r *cancelRegistry) lookup(pid uint32, secret []byte) (*cancelTarget, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, t := range r.m[pid] {
		if subtle.ConstantTimeCompare(t.secret, secret) == 1 {
			return t, true
		}
	}
	return nil, false
}

// len returns the number of registered keys (for tests and stats).
func (r *cancelRegistry) len() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, ts := range r.m {
		n += len(ts)
	}
	return n
}

// forwardCancel sends the server's own key for t in a plain CancelRequest on
// a short connection of its own (PostgreSQL accepts cancel requests without
// TLS and without authentication), then waits for the server to close it so
// that the client's cancel returns only once the server has the request.
func forwardCancel(ctx context.Context, t *cancelTarget, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp", t.addr)
	if err != nil {
		return newError(ErrUpstreamUnavailable, "", err)
	}
	defer c.Close()
	if dl, ok := ctx.Deadline(); ok {
		_ = c.SetDeadline(dl)
	}
	msg, err := (&pgproto3.CancelRequest{ProcessID: t.upPID, SecretKey: t.upSecret}).Encode(nil)
	if err != nil {
		return fmt.Errorf("proxy: encode cancel: %w", err)
	}
	if _, err := c.Write(msg); err != nil {
		return newError(ErrUpstreamLost, "", err)
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(c, 1<<10)) // the server sends nothing and closes
	return nil
}
