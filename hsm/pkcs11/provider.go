package pkcs11

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sync"

	p11 "github.com/miekg/pkcs11"

	"github.com/pgcloak/pgcloak/crypto/secret"
	"github.com/pgcloak/pgcloak/hsm"
	"github.com/pgcloak/pgcloak/hsm/internal/blob"
)

// Provider is a KEK held on a PKCS#11 token: an AES-256 secret key used
// through C_Encrypt/C_Decrypt with CKM_AES_GCM. It is safe for concurrent
// use; concurrency is bounded by the session pool.
type Provider struct {
	tok      *Token
	keyLabel string

	mu     sync.Mutex
	key    p11.ObjectHandle
	hasKey bool
}

var _ hsm.KEK = (*Provider)(nil)

// New opens the token (see OpenToken) and finds the KEK labelled
// opts.KeyLabel. It fails with ErrKeyNotFound when the key does not exist
// and with ErrKeyPolicy when it is not a non-extractable, sensitive AES-256
// key allowed to encrypt and decrypt.
func New(ctx context.Context, opts Opts) (*Provider, error) {
	if opts.KeyLabel == "" {
		return nil, errors.New("pkcs11: key_label is empty")
	}
	tok, err := OpenToken(ctx, opts)
	if err != nil {
		return nil, err
	}
	p := &Provider{tok: tok, keyLabel: opts.KeyLabel}
	info, err := tok.KeyInfo(ctx, opts.KeyLabel)
	if err == nil {
		err = checkPolicy(info, opts.AllowExtractableKey)
	}
	if err != nil {
		tok.Close()
		return nil, err
	}
	return p, nil
}

func checkPolicy(ki KeyInfo, allowExtractable bool) error {
	switch {
	case ki.Bits != 256:
		return fmt.Errorf("%w: key %q is AES-%d, want AES-256", ErrKeyPolicy, ki.Label, ki.Bits)
	case !ki.Encrypt || !ki.Decrypt:
		return fmt.Errorf("%w: key %q must have CKA_ENCRYPT and CKA_DECRYPT set", ErrKeyPolicy, ki.Label)
	case !allowExtractable && (ki.Extractable || !ki.Sensitive):
		return fmt.Errorf("%w: key %q can leave the token (CKA_EXTRACTABLE=%t, CKA_SENSITIVE=%t); create a new one with `pgcloak kek create`",
			ErrKeyPolicy, ki.Label, ki.Extractable, ki.Sensitive)
	}
	return nil
}

// Token returns the token connection the provider uses (owned by the
// provider: closing it closes the provider).
func (p *Provider) Token() *Token { return p.tok }

// KeyInfo reports the KEK's attributes.
func (p *Provider) KeyInfo(ctx context.Context) (KeyInfo, error) {
	return p.tok.KeyInfo(ctx, p.keyLabel)
}

// Close closes the token connection (see Token.Close).
func (p *Provider) Close() error { return p.tok.Close() }

// handle returns the cached key handle, finding the key on h if needed.
func (p *Provider) handle(h p11.SessionHandle) (p11.ObjectHandle, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.hasKey {
		return p.key, nil
	}
	k, err := p.tok.findKey(h, p.keyLabel, true)
	if err != nil {
		return 0, err
	}
	p.key, p.hasKey = k, true
	return k, nil
}

// fail maps a binding error from op. On any error that makes the session be
// dropped it also forgets the key handle: a lost session often means a lost
// login, and a token invalidates private-object handles on logout.
func (p *Provider) fail(op string, err error) error {
	if retryable(err) {
		p.mu.Lock()
		p.hasKey = false
		p.mu.Unlock()
	}
	return newError(op, p.tok.label, err, true)
}

func gcm(params *p11.GCMParams) []*p11.Mechanism {
	return []*p11.Mechanism{p11.NewMechanism(p11.CKM_AES_GCM, params)}
}

// Wrap encrypts dek on the token with AES-256-GCM under a fresh random IV,
// authenticating aad, and returns the versioned blob (see hsm/internal/blob).
func (p *Provider) Wrap(ctx context.Context, dek secret.Bytes, aad []byte) ([]byte, error) {
	if err := blob.CheckDEK(dek.Len()); err != nil {
		return nil, fmt.Errorf("pkcs11: wrap: %w", err)
	}
	var out []byte
	err := p.tok.do(ctx, func(h p11.SessionHandle) error {
		key, err := p.handle(h)
		if err != nil {
			return err
		}
		iv, err := blob.NewIV()
		if err != nil {
			return err
		}
		params := p11.NewGCMParams(iv, blob.AAD(blob.VersionGCM, aad), 8*blob.TagSize)
		defer params.Free()
		if err := p.tok.ctx.EncryptInit(h, gcm(params), key); err != nil {
			return p.fail("C_EncryptInit", err)
		}
		ct, err := p.tok.ctx.Encrypt(h, dek.Expose())
		if err != nil {
			return p.fail("C_Encrypt", err)
		}
		// A token may replace the IV with its own (CloudHSM does); read back
		// the one actually used. SoftHSM2 uses ours.
		used := params.IV()
		if len(used) != blob.IVSize || len(ct) != dek.Len()+blob.TagSize {
			return fmt.Errorf("pkcs11: token %q: C_Encrypt returned an unexpected layout (IV %d bytes, output %d bytes)",
				p.tok.label, len(used), len(ct))
		}
		out = blob.Append(make([]byte, 0, blob.HeaderSize+len(ct)), used, ct)
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// Unwrap decrypts a blob made by Wrap on the token. Altered blobs or
// associated data fail with hsm.ErrUnwrap; a token that cannot serve the
// call (after one retry on a fresh session) fails with an error wrapping
// hsm.ErrUnavailable.
func (p *Provider) Unwrap(ctx context.Context, wrapped, aad []byte) (secret.Bytes, error) {
	b, err := blob.Parse(wrapped)
	if err != nil {
		return secret.Bytes{}, err
	}
	var dek secret.Bytes
	err = p.tok.do(ctx, func(h p11.SessionHandle) error {
		key, err := p.handle(h)
		if err != nil {
			return err
		}
		params := p11.NewGCMParams(b.IV, blob.AAD(b.Version, aad), 8*blob.TagSize)
		defer params.Free()
		if err := p.tok.ctx.DecryptInit(h, gcm(params), key); err != nil {
			return p.fail("C_DecryptInit", err)
		}
		pt, err := p.tok.ctx.Decrypt(h, b.CT)
		if err != nil {
			if isCode(err, p11.CKR_GENERAL_ERROR) {
				return p.generalError(h, key)
			}
			return p.fail("C_Decrypt", err)
		}
		defer clear(pt)
		if len(pt) != len(b.CT)-blob.TagSize {
			return hsm.ErrUnwrap
		}
		dek = secret.New(pt)
		return nil
	})
	if err != nil {
		return secret.Bytes{}, err
	}
	return dek, nil
}

// generalError handles CKR_GENERAL_ERROR from C_Decrypt. SoftHSM2 up to
// 2.6.x reports a failed GCM tag check that way (SoftHSMv2 issue #689, fixed
// upstream by pull request #690) instead of CKR_ENCRYPTED_DATA_INVALID. To
// tell a bad blob from a sick token, round-trip a probe on the same session
// and key: if the token handles it, the blob failed authentication
// (hsm.ErrUnwrap); if not, the probe's own error is returned (and retried or
// reported as hsm.ErrUnavailable like any device failure).
func (p *Provider) generalError(h p11.SessionHandle, key p11.ObjectHandle) error {
	if err := p.probe(h, key); err != nil {
		if retryable(err) {
			return err
		}
		return fmt.Errorf("pkcs11: token %q: C_Decrypt failed and the token failed a health probe: %w: %w",
			p.tok.label, hsm.ErrUnavailable, err)
	}
	return &Error{
		Op: "C_Decrypt", Code: p11.CKR_GENERAL_ERROR, Token: p.tok.label, kind: hsm.ErrUnwrap,
		hint: "wrapped key failed authentication (the token reported a general error; a probe showed it healthy)",
	}
}

// probeAAD is the associated data of health probes; it never wraps a DEK.
var probeAAD = []byte("pgcloak:pkcs11:probe")

// probe encrypts and decrypts a random block on h with key.
func (p *Provider) probe(h p11.SessionHandle, key p11.ObjectHandle) error {
	iv, err := blob.NewIV()
	if err != nil {
		return err
	}
	msg, err := blob.NewIV() // any random bytes will do
	if err != nil {
		return err
	}
	enc := p11.NewGCMParams(iv, probeAAD, 8*blob.TagSize)
	defer enc.Free()
	if err := p.tok.ctx.EncryptInit(h, gcm(enc), key); err != nil {
		return p.fail("C_EncryptInit(probe)", err)
	}
	ct, err := p.tok.ctx.Encrypt(h, msg)
	if err != nil {
		return p.fail("C_Encrypt(probe)", err)
	}
	dec := p11.NewGCMParams(iv, probeAAD, 8*blob.TagSize)
	defer dec.Free()
	if err := p.tok.ctx.DecryptInit(h, gcm(dec), key); err != nil {
		return p.fail("C_DecryptInit(probe)", err)
	}
	pt, err := p.tok.ctx.Decrypt(h, ct)
	if err != nil {
		return p.fail("C_Decrypt(probe)", err)
	}
	if !bytes.Equal(pt, msg) {
		return p.fail("C_Decrypt(probe)", p11.Error(p11.CKR_DEVICE_ERROR))
	}
	return nil
}
