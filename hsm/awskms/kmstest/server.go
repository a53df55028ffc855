package kmstest

import (
	"bytes"
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
)

// Test credentials and location the server expects.
const (
	AccessKeyID     = "AKIDPGCLOAKTEST"
	SecretAccessKey = "pgcloak-kmstest-secret"
	Region          = "us-east-1"
	Account         = "111122223333"
)

// Key is one fake KMS key.
type Key struct {
	ID    string // key ID (UUID form)
	ARN   string
	Alias string // "alias/…", may be empty

	aead     cipher.AEAD
	disabled atomic.Bool
}

// Server is a running fake KMS. Close it when done.
type Server struct {
	URL string

	srv  *httptest.Server
	keys []*Key

	mu     sync.Mutex
	faults []Fault

	encrypts, decrypts atomic.Int64
}

// Fault is an injected failure for the next request.
type Fault struct {
	// Status and Code make an error response ({"__type": Code}). Status 0
	// drops the connection without a response instead.
	Status int
	Code   string
}

// Common faults.
var (
	Throttling = Fault{Status: 400, Code: "ThrottlingException"}
	Internal   = Fault{Status: 500, Code: "KMSInternalException"}
	Dropped    = Fault{Status: 0}
)

// NewServer starts a fake KMS on 127.0.0.1 with two keys: Keys()[0] has the
// alias "alias/pgcloak-test", Keys()[1] has none.
func NewServer() *Server {
	s := &Server{}
	s.keys = []*Key{newKey(1, "alias/pgcloak-test"), newKey(2, "")}
	s.srv = httptest.NewServer(http.HandlerFunc(s.serve))
	s.URL = s.srv.URL
	return s
}

func newKey(n int, alias string) *Key {
	raw := make([]byte, 32)
	if _, err := rand.Read(raw); err != nil {
		panic(err)
	}
	block, _ := aes.NewCipher(raw)
	aead, _ := cipher.NewGCM(block)
	id := fmt.Sprintf("0000000%d-1111-2222-3333-444455556666", n)
	return &Key{
		ID:    id,
		ARN:   fmt.Sprintf("arn:aws:kms:%s:%s:key/%s", Region, Account, id),
		Alias: alias,
		aead:  aead,
	}
}

// Close stops the server.
func (s *Server) Close() { s.srv.Close() }

// Keys returns the fake keys.
func (s *Server) Keys() []*Key { return s.keys }

// SetDisabled disables or re-enables a key (DisabledException while off).
func (k *Key) SetDisabled(off bool) { k.disabled.Store(off) }

// Fail queues faults: the next len(f) requests fail that way, in order.
func (s *Server) Fail(f ...Fault) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.faults = append(s.faults, f...)
}

// Calls reports how many Encrypt and Decrypt requests arrived (faulted ones
// included).
func (s *Server) Calls() (encrypts, decrypts int64) { return s.encrypts.Load(), s.decrypts.Load() }

func (s *Server) nextFault() (Fault, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.faults) == 0 {
		return Fault{}, false
	}
	f := s.faults[0]
	s.faults = s.faults[1:]
	return f, true
}

type apiError struct {
	status int
	code   string
	msg    string
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/x-amz-json-1.1")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func writeError(w http.ResponseWriter, e apiError) {
	w.Header().Set("X-Amzn-Errortype", e.code)
	writeJSON(w, e.status, map[string]string{"__type": e.code, "message": e.msg})
}

func (s *Server) serve(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
	if err != nil {
		writeError(w, apiError{400, "SerializationException", "unreadable body"})
		return
	}
	target := r.Header.Get("X-Amz-Target")
	switch target {
	case "TrentService.Encrypt":
		s.encrypts.Add(1)
	case "TrentService.Decrypt":
		s.decrypts.Add(1)
	}
	if f, ok := s.nextFault(); ok {
		if f.Status == 0 {
			if hj, ok := w.(http.Hijacker); ok {
				if c, _, err := hj.Hijack(); err == nil {
					c.Close()
					return
				}
			}
			panic(http.ErrAbortHandler)
		}
		writeError(w, apiError{f.Status, f.Code, "injected fault"})
		return
	}
	if r.Method != http.MethodPost || r.URL.Path != "/" ||
		r.Header.Get("Content-Type") != "application/x-amz-json-1.1" {
		writeError(w, apiError{400, "UnknownOperationException", "not a KMS JSON 1.1 request"})
		return
	}
	if e := checkSignature(r, body); e != nil {
		writeError(w, *e)
		return
	}
	var resp any
	var e *apiError
	switch target {
	case "TrentService.Encrypt":
		resp, e = s.encrypt(body)
	case "TrentService.Decrypt":
		resp, e = s.decrypt(body)
	default:
		e = &apiError{400, "UnknownOperationException", "unsupported operation " + target}
	}
	if e != nil {
		writeError(w, *e)
		return
	}
	writeJSON(w, http.StatusOK, resp)
}

// checkSignature recomputes the SigV4 signature over the headers the client
// signed and compares it with the one it sent.
func checkSignature(r *http.Request, body []byte) *apiError {
	auth := r.Header.Get("Authorization")
	const algo = "AWS4-HMAC-SHA256 "
	if !strings.HasPrefix(auth, algo) {
		return &apiError{400, "MissingAuthenticationTokenException", "no SigV4 Authorization header"}
	}
	fields := map[string]string{}
	for _, f := range strings.Split(strings.TrimPrefix(auth, algo), ",") {
		k, v, _ := strings.Cut(strings.TrimSpace(f), "=")
		fields[k] = v
	}
	wantScope := func(date string) string {
		return fmt.Sprintf("%s/%s/%s/kms/aws4_request", AccessKeyID, date, Region)
	}
	when, err := time.Parse("20060102T150405Z", r.Header.Get("X-Amz-Date"))
	if err != nil {
		return &apiError{400, "IncompleteSignatureException", "bad X-Amz-Date"}
	}
	if fields["Credential"] != wantScope(when.Format("20060102")) {
		return &apiError{400, "UnrecognizedClientException", "unknown access key, region or service in the credential scope"}
	}
	signed := strings.Split(fields["SignedHeaders"], ";")
	req, err := http.NewRequest(r.Method, "http://"+r.Host+r.URL.RequestURI(), bytes.NewReader(body))
	if err != nil {
		return &apiError{400, "IncompleteSignatureException", "cannot rebuild request"}
	}
	for _, h := range signed {
		if h == "host" {
			continue
		}
		req.Header[http.CanonicalHeaderKey(h)] = r.Header.Values(h)
	}
	sum := sha256.Sum256(body)
	creds := aws.Credentials{AccessKeyID: AccessKeyID, SecretAccessKey: SecretAccessKey}
	if err := v4.NewSigner().SignHTTP(context.Background(), creds, req, hex.EncodeToString(sum[:]), "kms", Region, when); err != nil {
		return &apiError{500, "KMSInternalException", "signer failed"}
	}
	got := fields["Signature"]
	want := ""
	for _, f := range strings.Split(strings.TrimPrefix(req.Header.Get("Authorization"), algo), ",") {
		if k, v, _ := strings.Cut(strings.TrimSpace(f), "="); k == "Signature" {
			want = v
		}
	}
	if got == "" || got != want {
		return &apiError{400, "InvalidSignatureException", "signature does not match"}
	}
	return nil
}

// resolve finds a key by ID, ARN, alias name or alias ARN.
func (s *Server) resolve(id string) (int, *apiError) {
	for i, k := range s.keys {
		aliasARN := fmt.Sprintf("arn:aws:kms:%s:%s:%s", Region, Account, k.Alias)
		if id == k.ID || id == k.ARN || (k.Alias != "" && (id == k.Alias || id == aliasARN)) {
			return i, nil
		}
	}
	return 0, &apiError{400, "NotFoundException", "key " + id + " does not exist"}
}

// contextAAD is a canonical encoding of an encryption context (sorted,
// length-prefixed), used as GCM associated data.
func contextAAD(ec map[string]string) []byte {
	keys := make([]string, 0, len(ec))
	for k := range ec {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	var b []byte
	for _, k := range keys {
		b = binary.BigEndian.AppendUint32(b, uint32(len(k)))
		b = append(b, k...)
		b = binary.BigEndian.AppendUint32(b, uint32(len(ec[k])))
		b = append(b, ec[k]...)
	}
	return b
}

// blobMagic starts a fake ciphertext blob: magic || key index || nonce || GCM.
var blobMagic = []byte("FAKEKMS1")

type encryptReq struct {
	KeyId             string
	Plaintext         []byte
	EncryptionContext map[string]string
}

func (s *Server) encrypt(body []byte) (any, *apiError) {
	var in encryptReq
	if err := json.Unmarshal(body, &in); err != nil {
		return nil, &apiError{400, "SerializationException", "bad JSON"}
	}
	i, e := s.resolve(in.KeyId)
	if e != nil {
		return nil, e
	}
	k := s.keys[i]
	if k.disabled.Load() {
		return nil, &apiError{400, "DisabledException", k.ARN + " is disabled."}
	}
	if len(in.Plaintext) == 0 || len(in.Plaintext) > 4096 {
		return nil, &apiError{400, "ValidationException", "plaintext must be 1 to 4096 bytes"}
	}
	for key, v := range in.EncryptionContext {
		if key == "" || v == "" {
			return nil, &apiError{400, "ValidationException", "encryption context keys and values must not be empty"}
		}
	}
	nonce := make([]byte, k.aead.NonceSize())
	if _, err := rand.Read(nonce); err != nil {
		return nil, &apiError{500, "KMSInternalException", "rng"}
	}
	out := append(slices.Clone(blobMagic), byte(i))
	out = append(out, nonce...)
	out = k.aead.Seal(out, nonce, in.Plaintext, contextAAD(in.EncryptionContext))
	return map[string]any{"CiphertextBlob": out, "KeyId": k.ARN, "EncryptionAlgorithm": "SYMMETRIC_DEFAULT"}, nil
}

type decryptReq struct {
	KeyId             string
	CiphertextBlob    []byte
	EncryptionContext map[string]string
}

func (s *Server) decrypt(body []byte) (any, *apiError) {
	var in decryptReq
	if err := json.Unmarshal(body, &in); err != nil {
		return nil, &apiError{400, "SerializationException", "bad JSON"}
	}
	invalid := &apiError{400, "InvalidCiphertextException", ""}
	b := in.CiphertextBlob
	hdr := len(blobMagic) + 1 + 12
	if len(b) < hdr+16 || !bytes.Equal(b[:len(blobMagic)], blobMagic) || int(b[len(blobMagic)]) >= len(s.keys) {
		return nil, invalid
	}
	i := int(b[len(blobMagic)])
	if in.KeyId != "" {
		j, e := s.resolve(in.KeyId)
		if e != nil {
			return nil, e
		}
		if j != i {
			return nil, &apiError{400, "IncorrectKeyException", "the key ID in the request does not identify the key that encrypted the ciphertext"}
		}
	}
	k := s.keys[i]
	if k.disabled.Load() {
		return nil, &apiError{400, "DisabledException", k.ARN + " is disabled."}
	}
	pt, err := k.aead.Open(nil, b[len(blobMagic)+1:hdr], b[hdr:], contextAAD(in.EncryptionContext))
	if err != nil {
		return nil, invalid
	}
	return map[string]any{"Plaintext": pt, "KeyId": k.ARN, "EncryptionAlgorithm": "SYMMETRIC_DEFAULT"}, nil
}
