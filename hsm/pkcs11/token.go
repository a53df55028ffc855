package pkcs11

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"

	p11 "github.com/miekg/pkcs11"

	"github.com/pgcloak/pgcloak/crypto/secret"
	"github.com/pgcloak/pgcloak/hsm"
)

// Pool size bounds.
const (
	DefaultSessionPoolSize = 4
	MaxSessionPoolSize     = 256
)

// Opts configures a token connection and, for New, the KEK on it.
type Opts struct {
	// Module is the path of the PKCS#11 library (config: module).
	Module string
	// TokenLabel selects the token (config: token_label).
	TokenLabel string
	// PIN is the user (CKU_USER) PIN. The caller reads it from the variable
	// named by pin_env; the provider keeps its own copy (for re-login after
	// a token reset) and zeroes it on Close.
	PIN secret.Bytes
	// KeyLabel is the CKA_LABEL of the AES KEK (config: key_label). Used by
	// New; OpenToken ignores it.
	KeyLabel string
	// SessionPoolSize bounds concurrent PKCS#11 operations (0 = 4).
	SessionPoolSize int
	// AllowExtractableKey lets New accept a KEK that is extractable or not
	// sensitive. Off by default: pgcloak's promise is that the KEK never
	// leaves the HSM, and CreateKey never makes such a key.
	AllowExtractableKey bool
}

// Token is a logged-in connection to one token: the loaded module, the slot
// and a bounded pool of sessions. It is safe for concurrent use. A Provider
// owns one; the CLI uses one directly to create and inspect keys.
type Token struct {
	mod   *module
	ctx   *p11.Ctx
	label string
	slot  uint
	pin   secret.Bytes

	sem  chan struct{} // one slot per session that may exist
	done chan struct{} // closed by Close

	mu     sync.Mutex
	idle   []session
	gen    uint64 // bumped when a failure suggests every session is stale
	closed bool

	opened atomic.Int64 // sessions opened over the Token's life
}

// session is a pooled session handle and the generation it was opened in.
type session struct {
	h   p11.SessionHandle
	gen uint64
}

// OpenToken loads the module (once per process), finds the token by label,
// opens a session and logs in as CKU_USER. ctx bounds nothing inside the
// PKCS#11 library (its calls cannot be interrupted); it is checked between
// steps.
func OpenToken(ctx context.Context, opts Opts) (*Token, error) {
	if opts.TokenLabel == "" {
		return nil, errors.New("pkcs11: token_label is empty")
	}
	if opts.PIN.Len() == 0 {
		return nil, fmt.Errorf("pkcs11: token %q: PIN is empty (set the variable named by pin_env)", opts.TokenLabel)
	}
	size := opts.SessionPoolSize
	if size == 0 {
		size = DefaultSessionPoolSize
	}
	if size < 1 || size > MaxSessionPoolSize {
		return nil, fmt.Errorf("pkcs11: session_pool_size must be 1 to %d, got %d", MaxSessionPoolSize, size)
	}
	mod, err := openModule(opts.Module)
	if err != nil {
		return nil, err
	}
	t := &Token{
		mod:   mod,
		ctx:   mod.ctx,
		label: opts.TokenLabel,
		pin:   secret.New(opts.PIN.Expose()),
		sem:   make(chan struct{}, size),
		done:  make(chan struct{}),
	}
	if err := t.setup(ctx); err != nil {
		t.pin.Zero()
		closeModule(mod)
		return nil, err
	}
	mod.addLogin(t.slot)
	return t, nil
}

// setup finds the slot, checks the mechanism and logs in on a first session.
func (t *Token) setup(ctx context.Context) error {
	slot, err := findSlot(t.ctx, t.label)
	if err != nil {
		return err
	}
	t.slot = slot
	if err := ctx.Err(); err != nil {
		return err
	}
	mi, err := t.ctx.GetMechanismInfo(slot, []*p11.Mechanism{p11.NewMechanism(p11.CKM_AES_GCM, nil)})
	if err != nil {
		return newError("C_GetMechanismInfo(CKM_AES_GCM)", t.label, err, false)
	}
	if mi.Flags&p11.CKF_ENCRYPT == 0 || mi.Flags&p11.CKF_DECRYPT == 0 {
		return fmt.Errorf("pkcs11: token %q: CKM_AES_GCM does not support encrypt and decrypt", t.label)
	}
	h, err := t.open(false, false)
	if err != nil {
		return err
	}
	t.idle = append(t.idle, session{h: h})
	return nil
}

// findSlot returns the slot holding the one initialized token labelled label.
func findSlot(ctx *p11.Ctx, label string) (uint, error) {
	slots, err := ctx.GetSlotList(true)
	if err != nil {
		return 0, newError("C_GetSlotList", label, err, false)
	}
	var found []uint
	var labels []string
	for _, s := range slots {
		ti, err := ctx.GetTokenInfo(s)
		if err != nil {
			continue // a slot that cannot describe itself is not ours
		}
		labels = append(labels, fmt.Sprintf("%q", ti.Label))
		if ti.Label == label && ti.Flags&p11.CKF_TOKEN_INITIALIZED != 0 {
			found = append(found, s)
		}
	}
	switch len(found) {
	case 1:
		return found[0], nil
	case 0:
		slices.Sort(labels)
		have := "none"
		if len(labels) > 0 {
			have = strings.Join(labels, ", ")
		}
		return 0, fmt.Errorf("%w: no initialized token labelled %q (tokens present: %s)", ErrTokenNotFound, label, have)
	default:
		return 0, fmt.Errorf("pkcs11: %d tokens are labelled %q; labels must be unique", len(found), label)
	}
}

// open opens a session (read-write when rw) and makes sure the token is
// logged in. runtime selects the error mapping (see newError).
func (t *Token) open(rw, runtime bool) (p11.SessionHandle, error) {
	flags := uint(p11.CKF_SERIAL_SESSION)
	if rw {
		flags |= p11.CKF_RW_SESSION
	}
	h, err := t.ctx.OpenSession(t.slot, flags)
	if err != nil {
		return 0, newError("C_OpenSession", t.label, err, runtime)
	}
	t.opened.Add(1)
	if err := t.login(h, runtime); err != nil {
		_ = t.ctx.CloseSession(h)
		return 0, err
	}
	return h, nil
}

// login logs the user in unless the token already is (login state is per
// token and process, so it is usually already there).
func (t *Token) login(h p11.SessionHandle, runtime bool) error {
	si, err := t.ctx.GetSessionInfo(h)
	if err != nil {
		return newError("C_GetSessionInfo", t.label, err, runtime)
	}
	switch si.State {
	case p11.CKS_RO_USER_FUNCTIONS, p11.CKS_RW_USER_FUNCTIONS:
		return nil
	}
	// The binding takes a string; that copy cannot be wiped (see doc.go).
	err = t.ctx.Login(h, p11.CKU_USER, string(t.pin.Expose()))
	var pe p11.Error
	if err == nil || (errors.As(err, &pe) && uint(pe) == p11.CKR_USER_ALREADY_LOGGED_IN) {
		return nil
	}
	return newError("C_Login", t.label, err, runtime)
}

// get takes a session from the pool, waiting for a free one until ctx ends.
func (t *Token) get(ctx context.Context) (session, error) {
	if err := t.acquire(ctx); err != nil {
		return session{}, err
	}
	t.mu.Lock()
	if t.closed {
		t.mu.Unlock()
		<-t.sem
		return session{}, ErrClosed
	}
	var stale []p11.SessionHandle
	for len(t.idle) > 0 {
		s := t.idle[len(t.idle)-1]
		t.idle = t.idle[:len(t.idle)-1]
		if s.gen == t.gen {
			t.mu.Unlock()
			t.closeHandles(stale)
			return s, nil
		}
		stale = append(stale, s.h)
	}
	gen := t.gen
	t.mu.Unlock()
	t.closeHandles(stale)
	h, err := t.open(false, true)
	if err != nil {
		<-t.sem
		return session{}, err
	}
	return session{h: h, gen: gen}, nil
}

// acquire takes a semaphore slot, or fails when ctx ends or t closes.
func (t *Token) acquire(ctx context.Context) error {
	select {
	case <-t.done:
		return ErrClosed
	default:
	}
	select {
	case t.sem <- struct{}{}:
		return nil
	case <-t.done:
		return ErrClosed
	case <-ctx.Done():
		return fmt.Errorf("pkcs11: token %q: waiting for a session: %w: %w", t.label, hsm.ErrUnavailable, ctx.Err())
	}
}

func (t *Token) closeHandles(hs []p11.SessionHandle) {
	for _, h := range hs {
		_ = t.ctx.CloseSession(h) // it is stale: failure is expected
	}
}

// put returns a healthy session to the pool.
func (t *Token) put(s session) {
	t.mu.Lock()
	keep := !t.closed && s.gen == t.gen
	if keep {
		t.idle = append(t.idle, s)
	}
	t.mu.Unlock()
	if !keep {
		_ = t.ctx.CloseSession(s.h)
	}
	<-t.sem
}

// discard closes a session that failed. With all set, every idle session is
// considered stale too (a device error, a token reset, a logout).
func (t *Token) discard(s session, all bool) {
	t.mu.Lock()
	if all && s.gen == t.gen {
		t.gen++
	}
	t.mu.Unlock()
	_ = t.ctx.CloseSession(s.h)
	<-t.sem
}

// do runs fn on a pooled session. When fn fails because the session, the
// device or a cached handle went bad, the session is dropped and fn runs once
// more on a fresh session (re-logging in if the token forgot the login), so
// the provider recovers from a token reset without a restart. fn must return
// errors made by newError (or classify-able binding errors).
func (t *Token) do(ctx context.Context, fn func(h p11.SessionHandle) error) error {
	var err error
	for attempt := range 2 {
		if cerr := ctx.Err(); cerr != nil {
			if err != nil {
				return err
			}
			return fmt.Errorf("pkcs11: token %q: %w: %w", t.label, hsm.ErrUnavailable, cerr)
		}
		var s session
		s, err = t.get(ctx)
		if err != nil {
			if attempt == 0 && retryable(err) {
				continue
			}
			return err
		}
		err = fn(s.h)
		if err == nil {
			t.put(s)
			return nil
		}
		if !retryable(err) {
			t.put(s)
			return err
		}
		t.discard(s, true)
	}
	return err
}

func retryable(err error) bool {
	switch classify(err) {
	case classSession, classDevice, classKey:
		return true
	}
	return false
}

// withRW runs fn on a dedicated read-write session (creating token objects
// needs one); it counts against the pool size and is closed afterwards.
func (t *Token) withRW(ctx context.Context, fn func(h p11.SessionHandle) error) error {
	if err := t.acquire(ctx); err != nil {
		return err
	}
	defer func() { <-t.sem }()
	t.mu.Lock()
	closed := t.closed
	t.mu.Unlock()
	if closed {
		return ErrClosed
	}
	h, err := t.open(true, false)
	if err != nil {
		return err
	}
	defer t.ctx.CloseSession(h)
	return fn(h)
}

// Label returns the token label.
func (t *Token) Label() string { return t.label }

// SessionsOpened reports how many sessions the Token has opened in its life:
// the pool's first ones plus every re-open after a failure.
func (t *Token) SessionsOpened() int64 { return t.opened.Load() }

// Close waits for operations in flight, logs out (when no other Token of
// this process uses the slot), closes every session, releases the module
// (finalizing it with the last reference) and zeroes the PIN. Operations
// after Close fail with ErrClosed.
func (t *Token) Close() error {
	t.mu.Lock()
	if t.closed {
		t.mu.Unlock()
		return nil
	}
	t.closed = true
	close(t.done)
	t.mu.Unlock()
	// Every in-flight operation holds a semaphore slot: taking all of them
	// waits for those to finish.
	for range cap(t.sem) {
		t.sem <- struct{}{}
	}
	t.mu.Lock()
	idle := t.idle
	t.idle = nil
	t.mu.Unlock()

	var errs []error
	if t.mod.dropLogin(t.slot) {
		h, err := t.ctx.OpenSession(t.slot, p11.CKF_SERIAL_SESSION)
		if err == nil {
			if err := t.ctx.Logout(h); err != nil && !isCode(err, p11.CKR_USER_NOT_LOGGED_IN) {
				errs = append(errs, newError("C_Logout", t.label, err, false))
			}
			_ = t.ctx.CloseSession(h)
		}
	}
	for _, s := range idle {
		_ = t.ctx.CloseSession(s.h)
	}
	t.pin.Zero()
	if err := closeModule(t.mod); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

func isCode(err error, code uint) bool {
	var pe p11.Error
	return errors.As(err, &pe) && uint(pe) == code
}
