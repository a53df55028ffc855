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

// Cancel keys. A client gets a BackendKeyData issued by the proxy, never the
// server's: the proxy's process id is unique among its live sessions and its
// secret is random, of the same length as the server's (4 bytes for protocol
// 3.0, up to 256 for 3.2). A CancelRequest carrying a proxy key is forwarded
// to the server that session is connected to, with the server's real key.

// cancelTarget is where a proxy-issued key points. Immutable once registered.
type cancelTarget struct {
	secret   []byte // the proxy-issued secret the client must present
	addr     string // upstream host:port
	upPID    uint32
	upSecret []byte
}

// cancelRegistry maps proxy-issued process ids to their targets.
type cancelRegistry struct {
	mu   sync.Mutex
	next uint32
	m    map[uint32]*cancelTarget
}

func newCancelRegistry() *cancelRegistry {
	return &cancelRegistry{next: 1, m: make(map[uint32]*cancelTarget)}
}

// maxProxyPID keeps issued ids positive as a signed int32: libpq and some
// drivers store the process id in a signed int.
const maxProxyPID = 1<<31 - 1

// register issues a key for t (filling t.secret) and returns the process id.
func (r *cancelRegistry) register(t *cancelTarget) (uint32, error) {
	n := max(len(t.upSecret), 4)
	t.secret = make([]byte, n)
	if _, err := rand.Read(t.secret); err != nil {
		return 0, fmt.Errorf("proxy: cancel secret: %w", err)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	for range maxProxyPID { // terminates: fewer live sessions than ids
		pid := r.next
		r.next++
		if r.next > maxProxyPID {
			r.next = 1
		}
		if _, used := r.m[pid]; !used {
			r.m[pid] = t
			return pid, nil
		}
	}
	return 0, fmt.Errorf("proxy: no free cancel key")
}

// remove forgets pid; called when its session ends.
func (r *cancelRegistry) remove(pid uint32) {
	r.mu.Lock()
	defer r.mu.Unlock()
	delete(r.m, pid)
}

// lookup returns the target for a key presented by a client, comparing the
// secret in constant time.
func (r *cancelRegistry) lookup(pid uint32, secret []byte) (*cancelTarget, bool) {
	r.mu.Lock()
	t, ok := r.m[pid]
	r.mu.Unlock()
	if !ok || subtle.ConstantTimeCompare(t.secret, secret) != 1 {
		return nil, false
	}
	return t, true
}

// len returns the number of registered keys (for tests and stats).
func (r *cancelRegistry) len() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.m)
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
