package awskms

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/credentials"

	"github.com/pgcloak/pgcloak/crypto/secret"
	"github.com/pgcloak/pgcloak/hsm"
	"github.com/pgcloak/pgcloak/hsm/awskms/kmstest"
)

func testOpts(s *kmstest.Server, keyID string) Opts {
	return Opts{
		KeyID:       keyID,
		Region:      kmstest.Region,
		Endpoint:    s.URL,
		Credentials: credentials.NewStaticCredentialsProvider(kmstest.AccessKeyID, kmstest.SecretAccessKey, ""),
		MaxAttempts: 3,
		MaxBackoff:  5 * time.Millisecond,
	}
}

func newServer(t *testing.T) *kmstest.Server {
	t.Helper()
	// Keep the SDK away from the machine's AWS configuration.
	t.Setenv("AWS_CONFIG_FILE", "/dev/null")
	t.Setenv("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
	t.Setenv("AWS_EC2_METADATA_DISABLED", "true")
	s := kmstest.NewServer()
	t.Cleanup(s.Close)
	return s
}

func newProvider(t *testing.T, s *kmstest.Server, keyID string) *Provider {
	t.Helper()
	p, err := New(context.Background(), testOpts(s, keyID))
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return p
}

func randomDEK(t *testing.T) secret.Bytes {
	t.Helper()
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return secret.New(b)
}

func TestRoundTrip(t *testing.T) {
	s := newServer(t)
	key := s.Keys()[0]
	for _, id := range []string{key.ID, key.ARN, key.Alias, "arn:aws:kms:us-east-1:111122223333:" + key.Alias} {
		t.Run(id, func(t *testing.T) {
			p := newProvider(t, s, id)
			ctx := context.Background()
			dek := randomDEK(t)
			for _, aad := range [][]byte{[]byte("keyring=1/version=2"), nil, {0, 0xff, '='}} {
				w, err := p.Wrap(ctx, dek, aad)
				if err != nil {
					t.Fatalf("Wrap: %v", err)
				}
				if w[0] != VersionKMS || bytes.Contains(w, dek.Expose()) {
					t.Fatalf("blob: version %#x, or contains the DEK", w[0])
				}
				got, err := p.Unwrap(ctx, w, aad)
				if err != nil {
					t.Fatalf("Unwrap: %v", err)
				}
				if !got.Equal(dek) {
					t.Fatal("unwrapped another DEK")
				}
			}
		})
	}
}

func TestEncryptionContextEncoding(t *testing.T) {
	if ec := encryptionContext(nil); ec != nil {
		t.Fatalf("empty aad: %v, want no context", ec)
	}
	aad := []byte{0, 1, 2, 0xfe, 0xff}
	ec := encryptionContext(aad)
	if len(ec) != 1 || ec[ContextKey] != base64.StdEncoding.EncodeToString(aad) || ec["pgcloak:aad"] != "AAEC/v8=" {
		t.Fatalf("context = %v", ec)
	}
}

func TestWrongAAD(t *testing.T) {
	s := newServer(t)
	p := newProvider(t, s, s.Keys()[0].ID)
	ctx := context.Background()
	w, err := p.Wrap(ctx, randomDEK(t), []byte("keyring=1/version=1"))
	if err != nil {
		t.Fatal(err)
	}
	for _, aad := range [][]byte{nil, []byte("keyring=1/version=2"), []byte("keyring=1/version=1 ")} {
		_, err := p.Unwrap(ctx, w, aad)
		if !errors.Is(err, hsm.ErrUnwrap) || errors.Is(err, hsm.ErrUnavailable) {
			t.Errorf("aad %q: err = %v, want ErrUnwrap only", aad, err)
		}
	}
	w, err = p.Wrap(ctx, randomDEK(t), nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.Unwrap(ctx, w, []byte("x")); !errors.Is(err, hsm.ErrUnwrap) {
		t.Errorf("context added on Decrypt: err = %v, want ErrUnwrap", err)
	}
}

func TestTamper(t *testing.T) {
	s := newServer(t)
	p := newProvider(t, s, s.Keys()[0].ID)
	ctx := context.Background()
	w, err := p.Wrap(ctx, randomDEK(t), []byte("a"))
	if err != nil {
		t.Fatal(err)
	}
	for i := range w {
		bad := bytes.Clone(w)
		bad[i] ^= 0x10
		_, err := p.Unwrap(ctx, bad, []byte("a"))
		if !errors.Is(err, hsm.ErrUnwrap) {
			t.Fatalf("byte %d flipped: err = %v, want ErrUnwrap", i, err)
		}
	}
	for _, n := range []int{0, 1, 2, len(w) - 1} {
		if _, err := p.Unwrap(ctx, w[:n], []byte("a")); !errors.Is(err, hsm.ErrUnwrap) {
			t.Fatalf("truncated to %d: err = %v, want ErrUnwrap", n, err)
		}
	}
}

func TestOtherKeyIsRefused(t *testing.T) {
	s := newServer(t)
	p := newProvider(t, s, s.Keys()[0].ID)
	q := newProvider(t, s, s.Keys()[1].ARN)
	ctx := context.Background()
	w, err := p.Wrap(ctx, randomDEK(t), []byte("a"))
	if err != nil {
		t.Fatal(err)
	}
	_, err = q.Unwrap(ctx, w, []byte("a"))
	if !errors.Is(err, hsm.ErrUnwrap) {
		t.Fatalf("err = %v, want ErrUnwrap", err)
	}
	mustContain(t, err, "IncorrectKeyException")
}

func TestUnavailable(t *testing.T) {
	s := newServer(t)
	p := newProvider(t, s, s.Keys()[0].ID)
	ctx := context.Background()
	dek := randomDEK(t)
	w, err := p.Wrap(ctx, dek, []byte("a"))
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name   string
		faults []kmstest.Fault
		code   string
	}{
		{"throttling", []kmstest.Fault{kmstest.Throttling, kmstest.Throttling, kmstest.Throttling}, "ThrottlingException"},
		{"5xx", []kmstest.Fault{kmstest.Internal, kmstest.Internal, kmstest.Internal}, "KMSInternalException"},
		{"503", []kmstest.Fault{{Status: 503, Code: "ServiceUnavailableException"}, {Status: 503, Code: "ServiceUnavailableException"}, {Status: 503, Code: "ServiceUnavailableException"}}, "ServiceUnavailable"},
		{"network", []kmstest.Fault{kmstest.Dropped, kmstest.Dropped, kmstest.Dropped}, ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, before := s.Calls()
			s.Fail(c.faults...)
			_, err := p.Unwrap(ctx, w, []byte("a"))
			if !errors.Is(err, hsm.ErrUnavailable) || errors.Is(err, hsm.ErrUnwrap) {
				t.Fatalf("err = %v, want ErrUnavailable only", err)
			}
			if c.code != "" {
				mustContain(t, err, c.code)
			}
			if _, after := s.Calls(); after-before != 3 {
				t.Fatalf("%d attempts, want 3 (MaxAttempts)", after-before)
			}
			// Recovered: the next call works.
			got, err := p.Unwrap(ctx, w, []byte("a"))
			if err != nil || !got.Equal(dek) {
				t.Fatalf("after the fault: %v", err)
			}
		})
	}
	// One transient fault is absorbed by the SDK's retry.
	s.Fail(kmstest.Internal)
	if _, err := p.Unwrap(ctx, w, []byte("a")); err != nil {
		t.Fatalf("single transient fault not retried: %v", err)
	}
	// A disabled key is an outage for Wrap/Unwrap too.
	s.Keys()[0].SetDisabled(true)
	_, err = p.Unwrap(ctx, w, []byte("a"))
	if !errors.Is(err, hsm.ErrUnavailable) {
		t.Fatalf("disabled key: err = %v, want ErrUnavailable", err)
	}
	mustContain(t, err, "DisabledException")
	s.Keys()[0].SetDisabled(false)

	// A server that is gone.
	s.Close()
	_, err = p.Wrap(ctx, dek, nil)
	if !errors.Is(err, hsm.ErrUnavailable) {
		t.Fatalf("server gone: err = %v, want ErrUnavailable", err)
	}
}

func TestContextDeadline(t *testing.T) {
	s := newServer(t)
	p := newProvider(t, s, s.Keys()[0].ID)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := p.Wrap(ctx, randomDEK(t), nil)
	if !errors.Is(err, hsm.ErrUnavailable) || !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want ErrUnavailable and context.Canceled", err)
	}
}

func TestNewProbe(t *testing.T) {
	s := newServer(t)
	ctx := context.Background()
	_, err := New(ctx, testOpts(s, "alias/no-such-key"))
	mustContain(t, err, "NotFoundException", "alias/no-such-key")

	o := testOpts(s, s.Keys()[0].ID)
	o.Credentials = credentials.NewStaticCredentialsProvider(kmstest.AccessKeyID, "wrong-secret", "")
	_, err = New(ctx, o)
	mustContain(t, err, "InvalidSignatureException")
	if strings.Contains(err.Error(), "wrong-secret") {
		t.Fatal("error message contains the secret key")
	}

	o = testOpts(s, s.Keys()[0].ID)
	o.Region = ""
	if _, err := New(ctx, o); err == nil || !strings.Contains(err.Error(), "region") {
		t.Fatalf("no region: err = %v", err)
	}

	// SkipProbe makes no request.
	o = testOpts(s, "alias/no-such-key")
	o.SkipProbe = true
	e0, d0 := s.Calls()
	if _, err := New(ctx, o); err != nil {
		t.Fatal(err)
	}
	if e1, d1 := s.Calls(); e1 != e0 || d1 != d0 {
		t.Fatal("SkipProbe still called KMS")
	}
}

// The default credential chain is used when no credentials are given: here
// it finds them in the environment.
func TestDefaultCredentialChain(t *testing.T) {
	s := newServer(t)
	t.Setenv("AWS_ACCESS_KEY_ID", kmstest.AccessKeyID)
	t.Setenv("AWS_SECRET_ACCESS_KEY", kmstest.SecretAccessKey)
	t.Setenv("AWS_SESSION_TOKEN", "")
	o := testOpts(s, s.Keys()[0].ID)
	o.Credentials = nil
	p, err := New(context.Background(), o)
	if err != nil {
		t.Fatalf("New with the default chain: %v", err)
	}
	if _, err := p.Wrap(context.Background(), randomDEK(t), nil); err != nil {
		t.Fatal(err)
	}
}

func TestConcurrent(t *testing.T) {
	s := newServer(t)
	p := newProvider(t, s, s.Keys()[0].ID)
	ctx := context.Background()
	var wg sync.WaitGroup
	errs := make(chan error, 16)
	for g := range 16 {
		wg.Go(func() {
			aad := []byte{byte(g)}
			for range 10 {
				dek := randomDEK(t)
				w, err := p.Wrap(ctx, dek, aad)
				if err != nil {
					errs <- err
					return
				}
				got, err := p.Unwrap(ctx, w, aad)
				if err != nil || !got.Equal(dek) {
					errs <- errors.Join(errors.New("round trip failed"), err)
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
}

func mustContain(t *testing.T, err error, parts ...string) {
	t.Helper()
	if err == nil {
		t.Fatalf("want an error containing %q, got nil", parts)
	}
	for _, p := range parts {
		if !strings.Contains(err.Error(), p) {
			t.Fatalf("error %q lacks %q", err, p)
		}
	}
}
