package local

import (
	"bytes"
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"sync/atomic"

	"github.com/pgcloak/pgcloak/crypto/secret"
	"github.com/pgcloak/pgcloak/hsm"
	"github.com/pgcloak/pgcloak/hsm/internal/blob"
)

// KeySize is the KEK length in bytes (AES-256).
const KeySize = 32

// maxFileSize bounds how much of a key file is read: 64 hex characters plus a
// line ending, with room to spare for a clear "wrong length" message.
const maxFileSize = 256

// Opts configures a file KEK.
type Opts struct {
	// KeyFile is the path of the key file (config: kek.<name>.key_file).
	KeyFile string
}

// Provider is a KEK held in process memory, loaded from a key file. It is
// safe for concurrent use.
type Provider struct {
	path string
	key  secret.Bytes
	aead cipher.AEAD

	closed atomic.Bool
}

// errClosed is returned by Wrap and Unwrap after Close.
var errClosed = errors.New("local kek: provider is closed")

var _ hsm.KEK = (*Provider)(nil)

// ErrPermissions is returned (wrapped) by New when the key file is
// accessible to its group or to others.
var ErrPermissions = errors.New("key file is accessible by group or others")

// New loads the key file named by opts.KeyFile.
func New(opts Opts) (*Provider, error) {
	if opts.KeyFile == "" {
		return nil, errors.New("local kek: key_file is empty")
	}
	key, err := load(opts.KeyFile)
	if err != nil {
		return nil, err
	}
	aead, err := newAEAD(key.Expose())
	if err != nil {
		key.Zero()
		return nil, fmt.Errorf("local kek %s: %w", opts.KeyFile, err)
	}
	return &Provider{path: opts.KeyFile, key: key, aead: aead}, nil
}

func newAEAD(key []byte) (cipher.AEAD, error) {
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	return cipher.NewGCM(block)
}

// load checks the file's type and mode, then decodes the hex key.
func load(path string) (secret.Bytes, error) {
	f, err := os.Open(path)
	if err != nil {
		return secret.Bytes{}, fmt.Errorf("local kek: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return secret.Bytes{}, fmt.Errorf("local kek: %w", err)
	}
	if !st.Mode().IsRegular() {
		return secret.Bytes{}, fmt.Errorf("local kek %s: not a regular file", path)
	}
	if perm := st.Mode().Perm(); perm&0o077 != 0 {
		return secret.Bytes{}, fmt.Errorf("local kek %s: %w (mode %04o); run: chmod 600 %s",
			path, ErrPermissions, perm, path)
	}
	raw, err := io.ReadAll(io.LimitReader(f, maxFileSize+1))
	if err != nil {
		return secret.Bytes{}, fmt.Errorf("local kek %s: %w", path, err)
	}
	defer clear(raw)
	text := bytes.TrimSuffix(raw, []byte("\n"))
	text = bytes.TrimSuffix(text, []byte("\r"))
	if len(text) != 2*KeySize {
		return secret.Bytes{}, fmt.Errorf("local kek %s: want exactly %d hex characters (%d random bytes), found %d bytes",
			path, 2*KeySize, KeySize, len(text))
	}
	key := make([]byte, KeySize)
	defer clear(key)
	if _, err := hex.Decode(key, text); err != nil {
		// The hex error would quote the offending character: a key byte.
		return secret.Bytes{}, fmt.Errorf("local kek %s: not a hex string", path)
	}
	return secret.New(key), nil
}

// Generate writes a new key file at path with mode 0600: 32 bytes from
// crypto/rand as 64 hex characters and a newline. It refuses to overwrite an
// existing file.
func Generate(path string) error {
	key := make([]byte, KeySize)
	defer clear(key)
	if _, err := rand.Read(key); err != nil {
		return fmt.Errorf("local kek: read random key: %w", err)
	}
	text := make([]byte, 2*KeySize+1)
	defer clear(text)
	hex.Encode(text, key)
	text[len(text)-1] = '\n'

	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		if errors.Is(err, fs.ErrExist) {
			return fmt.Errorf("local kek: %s already exists; refusing to overwrite a key", path)
		}
		return fmt.Errorf("local kek: %w", err)
	}
	// The umask cannot widen 0600, but a pre-set default ACL or an odd
	// filesystem might; make the mode explicit.
	if err := f.Chmod(0o600); err != nil {
		f.Close()
		os.Remove(path)
		return fmt.Errorf("local kek: %w", err)
	}
	if _, err := f.Write(text); err != nil {
		f.Close()
		os.Remove(path)
		return fmt.Errorf("local kek: write %s: %w", path, err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		os.Remove(path)
		return fmt.Errorf("local kek: sync %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		os.Remove(path)
		return fmt.Errorf("local kek: close %s: %w", path, err)
	}
	return nil
}

// Path returns the key file this provider was loaded from.
func (p *Provider) Path() string { return p.path }

// Wrap encrypts dek under the file key, authenticating aad.
func (p *Provider) Wrap(ctx context.Context, dek secret.Bytes, aad []byte) ([]byte, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if p.closed.Load() {
		return nil, errClosed
	}
	out, err := blob.Seal(p.aead, dek.Expose(), aad)
	if err != nil {
		return nil, fmt.Errorf("local kek: wrap: %w", err)
	}
	return out, nil
}

// Unwrap decrypts a blob produced by Wrap. Tampering, wrong associated data or
// a blob from another KEK yield hsm.ErrUnwrap.
func (p *Provider) Unwrap(ctx context.Context, wrapped, aad []byte) (secret.Bytes, error) {
	if err := ctx.Err(); err != nil {
		return secret.Bytes{}, err
	}
	if p.closed.Load() {
		return secret.Bytes{}, errClosed
	}
	pt, err := blob.Open(p.aead, wrapped, aad)
	if err != nil {
		return secret.Bytes{}, err
	}
	defer clear(pt)
	return secret.New(pt), nil
}

// Close zeroes the copy of the key bytes the provider holds; Wrap and Unwrap
// fail afterwards. The AES key schedule inside crypto/aes cannot be wiped;
// drop the Provider after closing it.
func (p *Provider) Close() error {
	p.closed.Store(true)
	p.key.Zero()
	return nil
}
