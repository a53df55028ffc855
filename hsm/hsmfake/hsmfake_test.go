package hsmfake

import (
	"bytes"
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/pgcloak/pgcloak/crypto/secret"
	"github.com/pgcloak/pgcloak/hsm"
)

var dek = secret.New(bytes.Repeat([]byte{0x42}, 32))

func TestRoundTripAndAuth(t *testing.T) {
	k := New()
	ctx := context.Background()
	w, err := k.Wrap(ctx, dek, []byte("ring=1/v=1"))
	if err != nil {
		t.Fatal(err)
	}
	got, err := k.Unwrap(ctx, w, []byte("ring=1/v=1"))
	if err != nil || !got.Equal(dek) {
		t.Fatalf("round trip: %v", err)
	}
	if _, err := k.Unwrap(ctx, w, []byte("ring=1/v=2")); !errors.Is(err, hsm.ErrUnwrap) {
		t.Fatalf("wrong aad: %v", err)
	}
	bad := bytes.Clone(w)
	bad[len(bad)-1] ^= 1
	if _, err := k.Unwrap(ctx, bad, []byte("ring=1/v=1")); !errors.Is(err, hsm.ErrUnwrap) {
		t.Fatalf("tampered: %v", err)
	}
	if _, err := New().Unwrap(ctx, w, []byte("ring=1/v=1")); !errors.Is(err, hsm.ErrUnwrap) {
		t.Fatalf("other fake: %v", err)
	}
	c := k.Calls()
	if c != (Calls{Wrap: 1, Unwrap: 3, UnwrapFailed: 2}) {
		t.Fatalf("calls = %+v", c)
	}
	k.ResetCalls()
	if k.Calls() != (Calls{}) {
		t.Fatal("ResetCalls did not reset")
	}
}

func TestUnavailableSwitch(t *testing.T) {
	k := New()
	ctx := context.Background()
	w, err := k.Wrap(ctx, dek, nil)
	if err != nil {
		t.Fatal(err)
	}
	k.SetUnavailable(true)
	if _, err := k.Unwrap(ctx, w, nil); !errors.Is(err, hsm.ErrUnavailable) {
		t.Fatalf("unwrap during outage: %v", err)
	}
	if _, err := k.Wrap(ctx, dek, nil); !errors.Is(err, hsm.ErrUnavailable) {
		t.Fatalf("wrap during outage: %v", err)
	}
	k.SetUnavailable(false)
	if _, err := k.Unwrap(ctx, w, nil); err != nil {
		t.Fatalf("after recovery: %v", err)
	}
	if c := k.Calls(); c.Unavailable != 2 || c.Unwrap != 2 || c.Wrap != 2 {
		t.Fatalf("calls = %+v", c)
	}
}

func TestDelayHonoursContext(t *testing.T) {
	k := New()
	k.SetDelay(time.Hour)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	_, err := k.Wrap(ctx, dek, nil)
	if !errors.Is(err, hsm.ErrUnavailable) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err = %v", err)
	}
	k.SetDelay(time.Millisecond)
	if _, err := k.Wrap(context.Background(), dek, nil); err != nil {
		t.Fatal(err)
	}
}

func TestBlock(t *testing.T) {
	k := New()
	ctx := context.Background()
	w, _ := k.Wrap(ctx, dek, nil)
	release := k.Block()
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	for range 4 {
		wg.Go(func() {
			_, err := k.Unwrap(ctx, w, nil)
			errs <- err
		})
	}
	deadline := time.Now().Add(5 * time.Second)
	for k.Waiting() != 4 {
		if time.Now().After(deadline) {
			t.Fatalf("Waiting = %d, want 4", k.Waiting())
		}
		time.Sleep(time.Millisecond)
	}
	select {
	case err := <-errs:
		t.Fatalf("a call returned while blocked: %v", err)
	default:
	}
	release()
	release()
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if k.Waiting() != 0 {
		t.Fatal("Waiting not back to 0")
	}
	// Not blocked any more.
	if _, err := k.Unwrap(ctx, w, nil); err != nil {
		t.Fatal(err)
	}
}
