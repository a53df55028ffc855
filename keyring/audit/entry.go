package audit

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"slices"
	"strings"
	"time"
	"unicode/utf8"
)

// Hash is a SHA-256 value. It encodes as lower-case hex in JSON.
type Hash [32]byte

// String returns the hash as hex.
func (h Hash) String() string { return hex.EncodeToString(h[:]) }

// MarshalText encodes the hash as hex.
func (h Hash) MarshalText() ([]byte, error) { return []byte(h.String()), nil }

// UnmarshalText decodes hex.
func (h *Hash) UnmarshalText(b []byte) error {
	if hex.DecodedLen(len(b)) != len(h) {
		return fmt.Errorf("audit: hash must be %d hex characters", 2*len(h))
	}
	_, err := hex.Decode(h[:], b)
	return err
}

// Record is what a caller appends: the event and its subject. The chain
// adds the position, the time, the database user and the hashes.
type Record struct {
	// Actor says who acts, as the application knows it (CLI --actor, OS
	// user@host, "pgcloak serve@host").
	Actor string
	// Event names what happened ("key.rotate"; see the Event constants).
	Event string
	// Keyring and Version name the subject; "" and 0 when there is none.
	Keyring string
	Version uint32
	// Details are string pairs. Never put plaintext values, key bytes,
	// PINs or passwords here: the log is readable by auditors and copied
	// to the SIEM.
	Details map[string]string
}

// Entry is one link of the chain, as stored in pgcloak.audit_log.
type Entry struct {
	Seq      int64             `json:"seq"`
	At       time.Time         `json:"at"` // key-store clock, UTC, microseconds
	Actor    string            `json:"actor"`
	DBUser   string            `json:"db_user"`
	Event    string            `json:"event"`
	Keyring  string            `json:"keyring,omitempty"`
	Version  uint32            `json:"version,omitempty"`
	Details  map[string]string `json:"details,omitempty"`
	PrevHash Hash              `json:"prev_hash"`
	Hash     Hash              `json:"hash"`
}

// Event names used by pgcloak. Events are free-form strings in the chain;
// these are the ones the key store writes.
const (
	EventKeyringCreate  = "keyring.create"      // a key ring was created
	EventKeyringUpdate  = "keyring.update"      // classification/environment/KEK of a ring changed
	EventKeyCreate      = "key.create"          // a version was created (first version of a ring, or by rotation)
	EventKeyRotate      = "key.rotate"          // a new version became active; details: previous
	EventKeyState       = "key.state"           // a state transition; details: from, to, reason
	EventKeyDestroy     = "key.destroy"         // a wrapped DEK was destroyed (crypto-shredding)
	EventKeyRewrap      = "key.rewrap"          // a DEK was re-wrapped under another KEK
	EventKEKRotate      = "kek.rotate"          // summary of a re-wrap of the whole store
	EventKeyExport      = "key.export"          // wrapped DEKs were exported (backup)
	EventAccessDenied   = "key.access_denied"   // a key was requested in a state that forbids use
	EventDisabledAccess = "key.disabled_access" // a disabled key was unwrapped on purpose (compromise re-encryption)
	EventDataRead       = "data.read"           // a statement read restricted columns through the proxy (see keys.md §2)
	EventConfig         = "config.change"       // a configuration change that affects keys
)

// domain starts every hashed encoding; a new encoding gets a new string.
const domain = "pgcloak/audit/v1"

// maxField bounds any single text field (and the whole details map): an
// entry is a few hundred bytes; this only stops accidents.
const maxField = 64 << 10

// Sanitize returns s as PostgreSQL text and jsonb can store it unchanged
// (valid UTF-8, no NUL), so that what is hashed is exactly what is read
// back. Append applies it to every field; Verify does not (it must see
// what is stored).
func Sanitize(s string) string {
	if utf8.ValidString(s) && !strings.ContainsRune(s, 0) {
		return s
	}
	return strings.ReplaceAll(strings.ToValidUTF8(s, "\uFFFD"), "\x00", "\uFFFD")
}

// Encode returns the canonical, versioned encoding of e that ComputeHash
// hashes (everything except e.Hash):
//
//	"pgcloak/audit/v1"
//	u64 seq | i64 at (Unix microseconds, UTC)
//	str actor | str db_user | str event | str keyring | u32 version
//	u32 number of details | for each key in byte order: str key | str value
//	prev_hash (32 bytes)
//
// where str = u32 byte length || UTF-8 bytes, and every integer is big
// endian. The encoding never changes; a new one gets a new domain string.
func (e *Entry) Encode() []byte {
	n := len(domain) + 8 + 8 + 4*5 + len(e.Actor) + len(e.DBUser) + len(e.Event) + len(e.Keyring) + 4 + 32
	keys := make([]string, 0, len(e.Details))
	for k, v := range e.Details {
		keys = append(keys, k)
		n += 8 + len(k) + len(v)
	}
	slices.Sort(keys)
	b := make([]byte, 0, n)
	b = append(b, domain...)
	b = binary.BigEndian.AppendUint64(b, uint64(e.Seq))
	b = binary.BigEndian.AppendUint64(b, uint64(e.At.UnixMicro()))
	b = appendStr(b, e.Actor)
	b = appendStr(b, e.DBUser)
	b = appendStr(b, e.Event)
	b = appendStr(b, e.Keyring)
	b = binary.BigEndian.AppendUint32(b, e.Version)
	b = binary.BigEndian.AppendUint32(b, uint32(len(keys)))
	for _, k := range keys {
		b = appendStr(b, k)
		b = appendStr(b, e.Details[k])
	}
	return append(b, e.PrevHash[:]...)
}

func appendStr(b []byte, s string) []byte {
	b = binary.BigEndian.AppendUint32(b, uint32(len(s)))
	return append(b, s...)
}

// ComputeHash returns SHA-256(e.Encode()).
func (e *Entry) ComputeHash() Hash { return sha256.Sum256(e.Encode()) }

// newEntry builds the entry for rec at seq, sanitising and bounding the
// fields.
func newEntry(rec Record, seq int64, at time.Time, dbUser string, prev Hash) (Entry, error) {
	e := Entry{
		Seq:      seq,
		At:       at.UTC().Truncate(time.Microsecond),
		Actor:    Sanitize(rec.Actor),
		DBUser:   Sanitize(dbUser),
		Event:    Sanitize(rec.Event),
		Keyring:  Sanitize(rec.Keyring),
		Version:  rec.Version,
		PrevHash: prev,
	}
	if e.Event == "" {
		return Entry{}, fmt.Errorf("audit: append: event is empty")
	}
	if e.Version > 1<<31-1 {
		return Entry{}, fmt.Errorf("audit: append: version %d out of range", e.Version)
	}
	size := len(e.Actor) + len(e.Event) + len(e.Keyring)
	if len(rec.Details) > 0 {
		e.Details = make(map[string]string, len(rec.Details))
		for k, v := range rec.Details {
			k, v = Sanitize(k), Sanitize(v)
			if k == "" {
				return Entry{}, fmt.Errorf("audit: append %s: empty details key", e.Event)
			}
			e.Details[k] = v
			size += len(k) + len(v)
		}
	}
	if size > maxField {
		return Entry{}, fmt.Errorf("audit: append %s: entry larger than %d bytes", e.Event, maxField)
	}
	e.Hash = e.ComputeHash()
	return e, nil
}
