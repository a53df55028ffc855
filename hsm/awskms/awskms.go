package awskms

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/aws/retry"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/service/kms"
	"github.com/aws/aws-sdk-go-v2/service/kms/types"
	"github.com/aws/smithy-go"

	"github.com/pgcloak/pgcloak/crypto/secret"
	"github.com/pgcloak/pgcloak/hsm"
	"github.com/pgcloak/pgcloak/hsm/internal/blob"
)

// Blob layout constants. Written out: stored forever.
const (
	// VersionKMS prefixes a KMS CiphertextBlob (see hsm/internal/blob).
	VersionKMS = blob.VersionKMS
	// ContextKey is the encryption-context key that carries the associated
	// data (base64, standard alphabet, padded).
	ContextKey = "pgcloak:aad"

	// maxBlob bounds a KMS ciphertext blob (the KMS API limit).
	maxBlob = 6144
	// DEK length bounds, as for the AES-GCM providers.
	minDEK, maxDEK = 16, 64
)

// Opts configures the provider.
type Opts struct {
	// KeyID names the KMS key: key ID, key ARN, alias name ("alias/…") or
	// alias ARN (config: key_id).
	KeyID string
	// Region is the AWS region; empty means the default chain's region.
	Region string
	// Endpoint overrides the KMS endpoint URL (VPC endpoints, LocalStack,
	// tests). Empty means the SDK's regional endpoint.
	Endpoint string
	// Credentials overrides the default credential chain (tests use
	// credentials.NewStaticCredentialsProvider).
	Credentials aws.CredentialsProvider
	// MaxAttempts caps attempts per call, retries included (0 = SDK default,
	// 3). Throttling, 5xx and network errors are retried.
	MaxAttempts int
	// MaxBackoff caps the delay between attempts (0 = SDK default, 20s).
	MaxBackoff time.Duration
	// SkipProbe skips the Encrypt/Decrypt round trip New makes to prove the
	// key and the credentials work.
	SkipProbe bool
}

// Provider is a KEK held in AWS KMS. It is safe for concurrent use.
type Provider struct {
	client *kms.Client
	keyID  string
}

var _ hsm.KEK = (*Provider)(nil)

// New builds the KMS client and, unless opts.SkipProbe, round-trips a random
// probe through Encrypt/Decrypt so that a wrong key, region, endpoint or
// missing permission fails at startup with a clear message.
func New(ctx context.Context, opts Opts) (*Provider, error) {
	if opts.KeyID == "" {
		return nil, errors.New("awskms: key_id is empty")
	}
	var cfg aws.Config
	if opts.Credentials != nil {
		cfg = aws.Config{Region: opts.Region, Credentials: opts.Credentials}
	} else {
		var lo []func(*config.LoadOptions) error
		if opts.Region != "" {
			lo = append(lo, config.WithRegion(opts.Region))
		}
		var err error
		cfg, err = config.LoadDefaultConfig(ctx, lo...)
		if err != nil {
			return nil, fmt.Errorf("awskms: load AWS configuration: %w", err)
		}
	}
	if cfg.Region == "" {
		return nil, errors.New("awskms: no region (set region in the kek section or AWS_REGION)")
	}
	client := kms.NewFromConfig(cfg, func(o *kms.Options) {
		if opts.Endpoint != "" {
			o.BaseEndpoint = aws.String(opts.Endpoint)
		}
		if opts.MaxAttempts > 0 || opts.MaxBackoff > 0 {
			o.Retryer = retry.NewStandard(func(so *retry.StandardOptions) {
				if opts.MaxAttempts > 0 {
					so.MaxAttempts = opts.MaxAttempts
				}
				if opts.MaxBackoff > 0 {
					so.MaxBackoff = opts.MaxBackoff
				}
			})
		}
	})
	p := &Provider{client: client, keyID: opts.KeyID}
	if !opts.SkipProbe {
		if err := p.probe(ctx); err != nil {
			return nil, err
		}
	}
	return p, nil
}

// Close releases nothing (the SDK client holds no per-provider resources);
// it exists so that every provider is an io.Closer.
func (p *Provider) Close() error { return nil }

// KeyID returns the configured key identifier.
func (p *Provider) KeyID() string { return p.keyID }

// probe encrypts and decrypts a random value under the key.
func (p *Provider) probe(ctx context.Context) error {
	msg := make([]byte, 32)
	if _, err := rand.Read(msg); err != nil {
		return fmt.Errorf("awskms: probe: %w", err)
	}
	pctx := map[string]string{"pgcloak:probe": "1"}
	enc, err := p.client.Encrypt(ctx, &kms.EncryptInput{KeyId: aws.String(p.keyID), Plaintext: msg, EncryptionContext: pctx})
	if err != nil {
		return mapError("Encrypt (startup probe)", p.keyID, err, false)
	}
	dec, err := p.client.Decrypt(ctx, &kms.DecryptInput{KeyId: aws.String(p.keyID), CiphertextBlob: enc.CiphertextBlob, EncryptionContext: pctx})
	if err != nil {
		return mapError("Decrypt (startup probe)", p.keyID, err, false)
	}
	defer clear(dec.Plaintext)
	if !bytes.Equal(dec.Plaintext, msg) {
		return fmt.Errorf("awskms: probe key %q: Decrypt returned another value", p.keyID)
	}
	return nil
}

// encryptionContext encodes aad (see the package documentation).
func encryptionContext(aad []byte) map[string]string {
	if len(aad) == 0 {
		return nil
	}
	return map[string]string{ContextKey: base64.StdEncoding.EncodeToString(aad)}
}

// Wrap calls KMS Encrypt with aad as encryption context.
func (p *Provider) Wrap(ctx context.Context, dek secret.Bytes, aad []byte) ([]byte, error) {
	if n := dek.Len(); n < minDEK || n > maxDEK {
		return nil, fmt.Errorf("awskms: wrap: DEK must be %d to %d bytes, got %d", minDEK, maxDEK, n)
	}
	out, err := p.client.Encrypt(ctx, &kms.EncryptInput{
		KeyId:             aws.String(p.keyID),
		Plaintext:         dek.Expose(),
		EncryptionContext: encryptionContext(aad),
	})
	if err != nil {
		return nil, mapError("Encrypt", p.keyID, err, true)
	}
	if n := len(out.CiphertextBlob); n == 0 || n > maxBlob {
		return nil, fmt.Errorf("awskms: Encrypt returned a %d-byte ciphertext: %w", n, hsm.ErrUnavailable)
	}
	w := make([]byte, 0, 1+len(out.CiphertextBlob))
	w = append(w, VersionKMS)
	return append(w, out.CiphertextBlob...), nil
}

// Unwrap calls KMS Decrypt with the configured KeyId and aad as encryption
// context.
func (p *Provider) Unwrap(ctx context.Context, wrapped, aad []byte) (secret.Bytes, error) {
	if len(wrapped) < 2 || len(wrapped) > 1+maxBlob || wrapped[0] != VersionKMS {
		return secret.Bytes{}, hsm.ErrUnwrap
	}
	out, err := p.client.Decrypt(ctx, &kms.DecryptInput{
		KeyId:             aws.String(p.keyID),
		CiphertextBlob:    wrapped[1:],
		EncryptionContext: encryptionContext(aad),
	})
	if err != nil {
		return secret.Bytes{}, mapError("Decrypt", p.keyID, err, true)
	}
	defer clear(out.Plaintext)
	if n := len(out.Plaintext); n < minDEK || n > maxDEK {
		return secret.Bytes{}, hsm.ErrUnwrap
	}
	return secret.New(out.Plaintext), nil
}

// unwrapCodes are the KMS errors that mean "this blob does not authenticate".
var unwrapCodes = map[string]bool{
	(&types.InvalidCiphertextException{}).ErrorCode(): true,
	(&types.IncorrectKeyException{}).ErrorCode():      true,
}

// Error is a failed KMS call. Code is the KMS error code ("" for network
// errors and timeouts). errors.Is matches hsm.ErrUnwrap or
// hsm.ErrUnavailable when the failure belongs to one of those.
type Error struct {
	Op    string // "Encrypt" or "Decrypt"
	KeyID string
	Code  string
	Err   error // the SDK's error

	kind error
}

func (e *Error) Error() string {
	var msg string
	switch {
	case e.kind == hsm.ErrUnwrap:
		msg = fmt.Sprintf("awskms: %s with key %q: %s: %s", e.Op, e.KeyID, e.Code, hsm.ErrUnwrap)
	case e.Code != "":
		msg = fmt.Sprintf("awskms: %s with key %q: %s: %s", e.Op, e.KeyID, e.Code, apiMessage(e.Err))
	default:
		msg = fmt.Sprintf("awskms: %s with key %q: %v", e.Op, e.KeyID, e.Err)
	}
	if e.kind == hsm.ErrUnavailable {
		msg += ": " + hsm.ErrUnavailable.Error()
	}
	return msg
}

// Unwrap exposes the sentinel (if any) and the SDK error.
func (e *Error) Unwrap() []error {
	if e.kind != nil {
		return []error{e.kind, e.Err}
	}
	return []error{e.Err}
}

func apiMessage(err error) string {
	var ae smithy.APIError
	if errors.As(err, &ae) && ae.ErrorMessage() != "" {
		return ae.ErrorMessage()
	}
	return "request failed"
}

// mapError classifies an SDK error. runtime: serving Wrap/Unwrap, where
// every failure other than authentication is an outage.
func mapError(op, keyID string, err error, runtime bool) error {
	e := &Error{Op: op, KeyID: keyID, Err: err}
	var ae smithy.APIError
	if errors.As(err, &ae) {
		e.Code = ae.ErrorCode()
	}
	switch {
	case strings.HasPrefix(op, "Decrypt") && unwrapCodes[e.Code]:
		e.kind = hsm.ErrUnwrap
	case runtime:
		e.kind = hsm.ErrUnavailable
	case e.Code == "" || ae.ErrorFault() == smithy.FaultServer || isThrottle(e.Code):
		e.kind = hsm.ErrUnavailable
	}
	return e
}

func isThrottle(code string) bool {
	switch code {
	case "ThrottlingException", "Throttling", "RequestLimitExceeded", "LimitExceededException",
		"KMSInternalException", "DependencyTimeoutException", "KeyUnavailableException":
		return true
	}
	return false
}
