package audit

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/pgcloak/pgcloak/crypto/secret"
)

func vectorEntry() Entry {
	return Entry{
		Seq: 1, At: time.Date(2026, 1, 2, 3, 4, 5, 6000, time.UTC),
		Actor: "a", DBUser: "db", Event: "e", Version: 0,
		Details: map[string]string{"k": "v", "a": "b"},
	}
}

// The hashed encoding is a stored format: entries written today must
// verify forever. The expected bytes are spelled out field by field.
func TestEncodeVector(t *testing.T) {
	e := vectorEntry()
	micros := e.At.UnixMicro()
	want := []byte("pgcloak/audit/v1")
	want = append(want, 0, 0, 0, 0, 0, 0, 0, 1) // seq
	want = append(want, byte(micros>>56), byte(micros>>48), byte(micros>>40), byte(micros>>32),
		byte(micros>>24), byte(micros>>16), byte(micros>>8), byte(micros))
	want = append(want, 0, 0, 0, 1, 'a')      // actor
	want = append(want, 0, 0, 0, 2, 'd', 'b') // db_user
	want = append(want, 0, 0, 0, 1, 'e')      // event
	want = append(want, 0, 0, 0, 0)           // keyring ""
	want = append(want, 0, 0, 0, 0)           // version
	want = append(want, 0, 0, 0, 2)           // two details, sorted by key
	want = append(want, 0, 0, 0, 1, 'a', 0, 0, 0, 1, 'b')
	want = append(want, 0, 0, 0, 1, 'k', 0, 0, 0, 1, 'v')
	want = append(want, make([]byte, 32)...) // prev_hash
	if got := e.Encode(); !bytes.Equal(got, want) {
		t.Fatalf("Encode:\n got %x\nwant %x", got, want)
	}
	// Pinned: a change to the encoding or the hash breaks every stored chain.
	const pinned = "c3293fc5a6096fc7ae2fa3d032cbdfd58c2a9df7e7fe69097104c721e5accb9a"
	h := e.ComputeHash()
	if sum := sha256.Sum256(want); Hash(sum) != h {
		t.Fatal("ComputeHash is not SHA-256 of Encode")
	}
	if h.String() != pinned {
		t.Fatalf("hash of the vector entry = %s, pinned %s", h, pinned)
	}
}

func TestEncodeBindsEveryField(t *testing.T) {
	base := vectorEntry()
	base.PrevHash[0] = 1
	h := base.ComputeHash()
	mutations := map[string]func(*Entry){
		"seq":       func(e *Entry) { e.Seq++ },
		"at":        func(e *Entry) { e.At = e.At.Add(time.Microsecond) },
		"actor":     func(e *Entry) { e.Actor += "x" },
		"db_user":   func(e *Entry) { e.DBUser += "x" },
		"event":     func(e *Entry) { e.Event += "x" },
		"keyring":   func(e *Entry) { e.Keyring = "k" },
		"version":   func(e *Entry) { e.Version = 1 },
		"detail":    func(e *Entry) { e.Details = map[string]string{"k": "v", "a": "c"} },
		"more":      func(e *Entry) { e.Details = map[string]string{"k": "v", "a": "b", "z": ""} },
		"prev_hash": func(e *Entry) { e.PrevHash[31] = 9 },
		// Length prefixes: moving a byte between adjacent fields changes the hash.
		"boundary": func(e *Entry) { e.Actor, e.DBUser = "ad", "b" },
	}
	for name, mutate := range mutations {
		e := base
		e.Details = map[string]string{"k": "v", "a": "b"}
		mutate(&e)
		if e.ComputeHash() == h {
			t.Errorf("changing %s does not change the hash", name)
		}
	}
}

func TestSanitize(t *testing.T) {
	for in, want := range map[string]string{
		"plain":         "plain",
		"nul\x00byte":   "nul\uFFFDbyte",
		"bad\xffutf8":   "bad\uFFFDutf8",
		"ünïcödé":       "ünïcödé",
		"":              "",
		"\x00\xfe\x00x": "\uFFFD\uFFFD\uFFFDx",
	} {
		if got := Sanitize(in); got != want {
			t.Errorf("Sanitize(%q) = %q, want %q", in, got, want)
		}
	}
	e, err := newEntry(Record{Actor: "x\x00", Event: "e", Details: map[string]string{"k\x00": "v\xff"}}, 1, time.Unix(0, 1500), "u", Hash{})
	if err != nil {
		t.Fatal(err)
	}
	if e.Actor != "x\uFFFD" || e.Details["k\uFFFD"] != "v\uFFFD" || !e.At.Equal(time.Unix(0, 1000)) {
		t.Errorf("newEntry did not sanitise: %+v", e)
	}
	if _, err := newEntry(Record{Event: ""}, 1, time.Now(), "u", Hash{}); err == nil {
		t.Error("empty event accepted")
	}
	if _, err := newEntry(Record{Event: "e", Details: map[string]string{"k": strings.Repeat("x", maxField)}}, 1, time.Now(), "u", Hash{}); err == nil {
		t.Error("oversized entry accepted")
	}
}

func TestCheckpointMAC(t *testing.T) {
	key := secret.New(bytes.Repeat([]byte{7}, 32))
	var h Hash
	h[0] = 0xaa
	msg := CheckpointMessage(3, 2, 1000, h)
	want := append([]byte("pgcloak/audit-checkpoint/v1"), 0, 0, 0, 3, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0x03, 0xe8)
	want = append(want, h[:]...)
	if !bytes.Equal(msg, want) {
		t.Fatalf("CheckpointMessage:\n got %x\nwant %x", msg, want)
	}
	mac, err := ComputeMAC(MACKey{KeyringID: 3, Version: 2, Key: key}, 1000, h)
	if err != nil {
		t.Fatal(err)
	}
	m := hmac.New(sha256.New, key.Expose())
	m.Write(want)
	if !bytes.Equal(mac[:], m.Sum(nil)) {
		t.Fatal("ComputeMAC is not HMAC-SHA-256 over CheckpointMessage")
	}
	// The key's identity is bound: the same key under another version
	// label gives another MAC.
	other, _ := ComputeMAC(MACKey{KeyringID: 3, Version: 1, Key: key}, 1000, h)
	if other == mac {
		t.Fatal("MAC does not bind the key version")
	}
	if _, err := ComputeMAC(MACKey{Key: secret.New([]byte("short"))}, 1, h); err == nil {
		t.Fatal("short key accepted")
	}
}

func TestHashTextAndSink(t *testing.T) {
	e := vectorEntry()
	e.Hash = e.ComputeHash()
	var buf bytes.Buffer
	if err := NewJSONSink(&buf).Write(e); err != nil {
		t.Fatal(err)
	}
	line := buf.String()
	if !strings.HasSuffix(line, "\n") || strings.Count(line, "\n") != 1 {
		t.Fatalf("not one line: %q", line)
	}
	if !strings.Contains(line, `"hash":"`+e.Hash.String()+`"`) || !strings.Contains(line, `"at":"2026-01-02T03:04:05.000006Z"`) {
		t.Fatalf("line = %s", line)
	}
	var back Entry
	if err := json.Unmarshal([]byte(line), &back); err != nil {
		t.Fatal(err)
	}
	if back.ComputeHash() != e.Hash || back.Hash != e.Hash {
		t.Fatal("a sink line does not round-trip to the same hash")
	}
	var h Hash
	if err := h.UnmarshalText([]byte(hex.EncodeToString(make([]byte, 31)))); err == nil {
		t.Fatal("short hex accepted")
	}
}
