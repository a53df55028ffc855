package envelope

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/pgcloak/pgcloak/crypto/secret"
)

// Committed format-v1 vectors: testdata/vectors_v1.json holds envelopes
// sealed once under fixed TEST keys with fixed nonces. They must decrypt,
// byte for byte, with every future version of this package. Never edit or
// remove a vector; add new ones only.
//
// Generator (run by hand, then review and commit the diff):
//
//	go test ./crypto/envelope -run TestCommittedVectors -update-vectors
//
// It refuses to change an existing vector, and it also rewrites the fuzz
// seed corpora under testdata/fuzz from the vectors.
var updateVectors = flag.Bool("update-vectors", false, "GENERATOR: (re)write testdata/vectors_v1.json and testdata/fuzz seeds; existing vectors must not change")

const vectorsFile = "testdata/vectors_v1.json"

type vectorFile struct {
	Comment string       `json:"comment"`
	Keys    []vectorKey  `json:"keys"`
	Vectors []vectorCase `json:"vectors"`
}

type vectorKey struct {
	KeyringID  uint32 `json:"keyring_id"`
	KeyVersion uint32 `json:"key_version"`
	KeyHex     string `json:"key_hex"`
}

type vectorCase struct {
	Name          string `json:"name"`
	KeyringID     uint32 `json:"keyring_id"`
	KeyVersion    uint32 `json:"key_version"`
	Context       string `json:"context"`
	BlindIndexHex string `json:"blind_index_hex"`
	PlaintextHex  string `json:"plaintext_hex"`
	EnvelopeHex   string `json:"envelope_hex"`
}

func TestCommittedVectors(t *testing.T) {
	if *updateVectors {
		generateVectors(t)
	}
	raw, err := os.ReadFile(vectorsFile)
	if err != nil {
		t.Fatalf("read committed vectors: %v", err)
	}
	var vf vectorFile
	if err := json.Unmarshal(raw, &vf); err != nil {
		t.Fatalf("parse %s: %v", vectorsFile, err)
	}
	if len(vf.Vectors) < 10 {
		t.Fatalf("only %d vectors in %s", len(vf.Vectors), vectorsFile)
	}
	keys := map[[2]uint32]*Key{}
	for _, k := range vf.Keys {
		dek := secret.New(mustHex(t, k.KeyHex))
		keys[[2]uint32{k.KeyringID, k.KeyVersion}] = mustKey(t, k.KeyringID, k.KeyVersion, dek)
		dek.Zero()
	}
	var sawBlind, sawNoBlind, sawEmpty bool
	contexts := map[string]bool{}
	for _, v := range vf.Vectors {
		t.Run(v.Name, func(t *testing.T) {
			env := mustHex(t, v.EnvelopeHex)
			want := mustHex(t, v.PlaintextHex)
			h, err := ParseHeader(env)
			if err != nil {
				t.Fatalf("ParseHeader: %v", err)
			}
			if h.KeyringID != v.KeyringID || h.KeyVersion != v.KeyVersion {
				t.Fatalf("header names %d/%d, vector says %d/%d", h.KeyringID, h.KeyVersion, v.KeyringID, v.KeyVersion)
			}
			blind := mustHex(t, v.BlindIndexHex)
			if h.HasBlindIndex != (len(blind) > 0) || (h.HasBlindIndex && !bytes.Equal(h.BlindIndex[:], blind)) {
				t.Fatalf("blind index = %v %x, want %x", h.HasBlindIndex, h.BlindIndex, blind)
			}
			k := keys[[2]uint32{v.KeyringID, v.KeyVersion}]
			if k == nil {
				t.Fatalf("no key %d/%d in the file", v.KeyringID, v.KeyVersion)
			}
			got, err := k.Open(nil, env, v.Context)
			if err != nil {
				t.Fatalf("Open: %v", err)
			}
			if !bytes.Equal(got, want) {
				t.Fatalf("Open = %x, want %x", got, want)
			}
			if _, err := k.Open(nil, env, v.Context+"x"); err != ErrAuth {
				t.Fatalf("Open with another context: %v, want ErrAuth", err)
			}
			// Sealing the same input with the vector's nonce reproduces it:
			// the writer side of format v1 is frozen too.
			nonce := env[h.Len() : h.Len()+NonceSize]
			again, err := k.seal(nonceReader(nonce), nil, blind, v.Context, want)
			if err != nil || !bytes.Equal(again, env) {
				t.Fatalf("re-seal = %x, %v; want %x", again, err, env)
			}
			sawBlind = sawBlind || h.HasBlindIndex
			sawNoBlind = sawNoBlind || !h.HasBlindIndex
			sawEmpty = sawEmpty || len(want) == 0
			contexts[v.Context] = true
		})
	}
	if !sawBlind || !sawNoBlind || !sawEmpty || len(contexts) < 3 {
		t.Fatalf("vector coverage: blind=%v noblind=%v empty=%v contexts=%d", sawBlind, sawNoBlind, sawEmpty, len(contexts))
	}
}

// generateVectors writes the vectors file (and fuzz seeds). Keys and nonces
// are derived from fixed labels, so running it twice writes the same bytes;
// it fails rather than change a vector that is already committed.
func generateVectors(t *testing.T) {
	type spec struct {
		name, ctx, blind string
		ring, version    uint32
		pt               []byte
	}
	ssn, email := "public.customers.ssn", "public.customers.email"
	specs := []spec{
		{"empty plaintext", ssn, "", 1, 1, nil},
		{"ssn text", ssn, "", 1, 1, []byte("123-45-6789")},
		{"same plaintext, other column", "billing.cards.pan", "", 1, 1, []byte("123-45-6789")},
		{"with blind index", email, "blind-index-0001", 1, 1, []byte("alice@example.com")},
		{"blind index, empty plaintext", email, "blind-index-0002", 1, 1, nil},
		{"unicode, context override", "customers_ssn_v1", "", 1, 1, []byte("Zoë Ångström — 東京")},
		{"empty context", "", "", 1, 1, []byte("no context")},
		{"multi-block 300 bytes", "public.notes.body", "", 1, 1, bytes.Repeat([]byte("0123456789"), 30)},
		{"second key version", ssn, "", 1, 2, []byte("12345.67")},
		{"extreme ids", "public.t.c", "", 0xFFFFFFFF, 0x80000000, []byte("2024-02-29 23:59:59.999999+00")},
		{"binary-looking plaintext", "public.t.bytes", "", 1, 2, []byte("\\x00ff10")},
		{"exactly one block", ssn, "0123456789abcdef", 1, 2, []byte("sixteen bytes!!!")},
	}
	vf := vectorFile{
		Comment: "pgcloak envelope format v1 vectors (DESIGN.md §4). TEST KEYS ONLY (sha256 of a fixed label). " +
			"Generated by `go test ./crypto/envelope -run TestCommittedVectors -update-vectors`. Never edit or remove a vector; add new ones only.",
	}
	keys := map[[2]uint32]*Key{}
	for _, s := range specs {
		id := [2]uint32{s.ring, s.version}
		if keys[id] != nil {
			continue
		}
		dek := testDEK(fmt.Sprintf("vectors v1 key ring %d version %d", s.ring, s.version))
		vf.Keys = append(vf.Keys, vectorKey{KeyringID: s.ring, KeyVersion: s.version, KeyHex: hex.EncodeToString(dek.Expose())})
		keys[id] = mustKey(t, s.ring, s.version, dek)
	}
	old := map[string]string{}
	if raw, err := os.ReadFile(vectorsFile); err == nil {
		var prev vectorFile
		if err := json.Unmarshal(raw, &prev); err != nil {
			t.Fatalf("existing %s does not parse: %v", vectorsFile, err)
		}
		for _, v := range prev.Vectors {
			old[v.Name] = v.EnvelopeHex
		}
	}
	for _, s := range specs {
		nonce := sha256.Sum256([]byte("vectors v1 nonce: " + s.name))
		env, err := keys[[2]uint32{s.ring, s.version}].seal(nonceReader(nonce[:NonceSize]), nil, []byte(s.blind), s.ctx, s.pt)
		if err != nil {
			t.Fatalf("seal %s: %v", s.name, err)
		}
		envHex := hex.EncodeToString(env)
		if prev, ok := old[s.name]; ok && prev != envHex {
			t.Fatalf("vector %q would change: format v1 is frozen (was %s, now %s)", s.name, prev, envHex)
		}
		delete(old, s.name)
		vf.Vectors = append(vf.Vectors, vectorCase{
			Name: s.name, KeyringID: s.ring, KeyVersion: s.version, Context: s.ctx,
			BlindIndexHex: hex.EncodeToString([]byte(s.blind)), PlaintextHex: hex.EncodeToString(s.pt), EnvelopeHex: envHex,
		})
	}
	if len(old) > 0 {
		t.Fatalf("generator would drop committed vectors: %v", old)
	}
	out, err := json.MarshalIndent(vf, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(vectorsFile, append(out, '\n'), 0o644); err != nil {
		t.Fatal(err)
	}
	writeFuzzSeeds(t, vf)
}

// writeFuzzSeeds writes the committed seed corpora (go test fuzz v1 files)
// for FuzzParseHeader and FuzzOpen: every vector, and mutilated copies.
func writeFuzzSeeds(t *testing.T, vf vectorFile) {
	write := func(target, name string, args ...any) {
		dir := filepath.Join("testdata", "fuzz", target)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		var b strings.Builder
		b.WriteString("go test fuzz v1\n")
		for _, a := range args {
			switch a := a.(type) {
			case []byte:
				b.WriteString("[]byte(" + strconv.Quote(string(a)) + ")\n")
			case string:
				b.WriteString("string(" + strconv.Quote(a) + ")\n")
			}
		}
		if err := os.WriteFile(filepath.Join(dir, name), []byte(b.String()), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for i, v := range vf.Vectors {
		env := mustHex(t, v.EnvelopeHex)
		flipped := bytes.Clone(env)
		flipped[len(flipped)/2] ^= 0x10
		write("FuzzParseHeader", fmt.Sprintf("vector-%02d", i), env)
		write("FuzzOpen", fmt.Sprintf("vector-%02d", i), env, v.Context)
		write("FuzzOpen", fmt.Sprintf("vector-%02d-flipped", i), flipped, v.Context)
		write("FuzzOpen", fmt.Sprintf("vector-%02d-truncated", i), env[:len(env)-1], v.Context)
		write("FuzzParseHeader", fmt.Sprintf("vector-%02d-header-only", i), env[:13])
	}
	write("FuzzParseHeader", "bad-version", []byte("\xc1\x0a\x02\x01\x00"))
	write("FuzzParseHeader", "reserved-flags", []byte("\xc1\x0a\x01\x01\xfe\x00\x00\x00\x01\x00\x00\x00\x01"))
	write("FuzzOpen", "empty", []byte{}, "")
}
