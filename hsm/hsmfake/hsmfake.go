package hsmfake

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pgcloak/pgcloak/crypto/secret"
	"github.com/pgcloak/pgcloak/hsm"
	"github.com/pgcloak/pgcloak/hsm/internal/blob"
)

// KEK is an in-memory key-encryption key. The zero value is not usable; call
// New. It is safe for concurrent use.
type KEK struct {
	aead cipher.AEAD

	unavailable atomic.Bool
	delay       atomic.Int64 // nanoseconds

	mu   sync.Mutex
	gate chan struct{} // non-nil while blocked; closed by the release func

	wraps, unwraps     atomic.Int64
	unavailableErrors  atomic.Int64
	unwrapAuthFailures atomic.Int64
	waiting            atomic.Int64
}

var _ hsm.KEK = (*KEK)(nil)

// Calls counts calls since New or the last ResetCalls.
type Calls struct {
	Wrap   int64 // every Wrap call, failed ones included
	Unwrap int64 // every Unwrap call, failed ones included
	// Unavailable counts calls that failed with ErrUnavailable (switch on,
	// or ctx ended while delayed/blocked).
	Unavailable int64
	// UnwrapFailed counts Unwrap calls that failed with hsm.ErrUnwrap.
	UnwrapFailed int64
}

// New returns a KEK under a fresh random key: two fakes never unwrap each
// other's blobs.
func New() *KEK {
	key := make([]byte, 32)
	defer clear(key)
	if _, err := rand.Read(key); err != nil {
		panic("hsmfake: crypto/rand: " + err.Error())
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		panic("hsmfake: " + err.Error())
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		panic("hsmfake: " + err.Error())
	}
	return &KEK{aead: aead}
}

// SetUnavailable switches the simulated outage on or off. While on, Wrap and
// Unwrap fail with an error wrapping hsm.ErrUnavailable (they are still
// counted).
func (k *KEK) SetUnavailable(on bool) { k.unavailable.Store(on) }

// SetDelay makes every call wait d first (0 = no delay). A call whose ctx ends
// during the wait fails with an error wrapping both hsm.ErrUnavailable and
// the ctx error, as a real provider does when the HSM is slow.
func (k *KEK) SetDelay(d time.Duration) { k.delay.Store(int64(d)) }

// Block makes every call wait until release is called (or its ctx ends).
// Use Waiting to know when callers have arrived. release is idempotent.
func (k *KEK) Block() (release func()) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.gate == nil {
		k.gate = make(chan struct{})
	}
	gate := k.gate
	var once sync.Once
	return func() {
		once.Do(func() {
			k.mu.Lock()
			defer k.mu.Unlock()
			close(gate)
			if k.gate == gate {
				k.gate = nil
			}
		})
	}
}

// Waiting reports how many calls are currently held by Block or SetDelay.
func (k *KEK) Waiting() int { return int(k.waiting.Load()) }

// Calls returns the counters.
func (k *KEK) Calls() Calls {
	return Calls{
		Wrap:         k.wraps.Load(),
		Unwrap:       k.unwraps.Load(),
		Unavailable:  k.unavailableErrors.Load(),
		UnwrapFailed: k.unwrapAuthFailures.Load(),
	}
}

// ResetCalls sets every counter to zero.
func (k *KEK) ResetCalls() {
	k.wraps.Store(0)
	k.unwraps.Store(0)
	k.unavailableErrors.Store(0)
	k.unwrapAuthFailures.Store(0)
}

// enter applies the delay, the block and the outage switch.
func (k *KEK) enter(ctx context.Context, op string) error {
	k.mu.Lock()
	gate := k.gate
	k.mu.Unlock()
	d := time.Duration(k.delay.Load())
	if gate != nil || d > 0 {
		k.waiting.Add(1)
		err := wait(ctx, gate, d)
		k.waiting.Add(-1)
		if err != nil {
			k.unavailableErrors.Add(1)
			return fmt.Errorf("hsmfake: %s: %w: %w", op, hsm.ErrUnavailable, err)
		}
	}
	if err := ctx.Err(); err != nil {
		k.unavailableErrors.Add(1)
		return fmt.Errorf("hsmfake: %s: %w: %w", op, hsm.ErrUnavailable, err)
	}
	if k.unavailable.Load() {
		k.unavailableErrors.Add(1)
		return fmt.Errorf("hsmfake: %s: simulated outage: %w", op, hsm.ErrUnavailable)
	}
	return nil
}

func wait(ctx context.Context, gate chan struct{}, d time.Duration) error {
	if d > 0 {
		t := time.NewTimer(d)
		defer t.Stop()
		select {
		case <-t.C:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	if gate != nil {
		select {
		case <-gate:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
}

// Wrap encrypts dek, authenticating aad.
func (k *KEK) Wrap(ctx context.Context, dek secret.Bytes, aad []byte) ([]byte, error) {
	k.wraps.Add(1)
	if err := k.enter(ctx, "wrap"); err != nil {
		return nil, err
	}
	out, err := blob.Seal(k.aead, dek.Expose(), aad)
	if err != nil {
		return nil, fmt.Errorf("hsmfake: wrap: %w", err)
	}
	return out, nil
}

// Unwrap reverses Wrap; altered blobs or associated data fail with
// hsm.ErrUnwrap.
func (k *KEK) Unwrap(ctx context.Context, wrapped, aad []byte) (secret.Bytes, error) {
	k.unwraps.Add(1)
	if err := k.enter(ctx, "unwrap"); err != nil {
		return secret.Bytes{}, err
	}
	pt, err := blob.Open(k.aead, wrapped, aad)
	if err != nil {
		k.unwrapAuthFailures.Add(1)
		return secret.Bytes{}, err
	}
	defer clear(pt)
	return secret.New(pt), nil
}
