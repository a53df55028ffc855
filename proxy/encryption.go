package proxy

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/pgcloak/pgcloak/catalog"
	"github.com/pgcloak/pgcloak/crypto/envelope"
)

// Encryption turns on column encryption (DESIGN.md §6, §7). With
// Opts.Encryption nil the proxy is a pure pass-through.
//
// Every session then relays through the goroutine relay with a filter per
// direction: client→server, Query, Parse, Bind, Describe, Execute, Close,
// Sync and FunctionCall are inspected, and statements that mention a
// configured table are planned by package rewrite and rewritten (values
// encrypted, parameter types changed to bytea); server→client,
// ParameterDescription and RowDescription are rewritten back to the logical
// types and DataRow fields of configured columns are decrypted.
type Encryption struct {
	// Catalogs resolves the configured columns in a database. Required.
	Catalogs CatalogSource
	// Keys hands out data keys. Required.
	Keys KeySource
	// Policies are the access rules per classification name
	// ("confidential"). A column whose classification has no entry is
	// treated as denied with on_denied = "ciphertext" (fail closed).
	Policies map[string]Policy
	// PlanCacheSize bounds the cached rewrite plans (statement texts).
	// Zero: DefaultPlanCacheSize.
	PlanCacheSize int
	// Auditor receives the reads of columns whose policy has AuditReads.
	// Required when any policy has AuditReads.
	Auditor ReadAuditor
	// KeyTimeout bounds waiting for a key (HSM unwrap, key-store query) in
	// a session. Zero: 10s.
	KeyTimeout time.Duration
}

// DefaultPlanCacheSize is the default number of cached plans.
const DefaultPlanCacheSize = 4096

// Policy is the access rule of one classification.
type Policy struct {
	// PlaintextRoles are the roles (the user of the startup message) that
	// see plaintext. Everyone else gets OnDenied.
	PlaintextRoles []string
	// OnDenied says what a role without plaintext access reads.
	OnDenied OnDenied
	// AuditReads makes every statement that decrypts a column of this
	// classification produce an audit event (classification restricted).
	AuditReads bool
}

// OnDenied is what a role that may not see plaintext reads from an
// encrypted column. Writes by such a role are encrypted as usual: the
// policy protects reads, and a writer needs no plaintext to write.
type OnDenied int

const (
	// DeniedCiphertext: the column keeps its stored type, bytea, and the
	// envelope is delivered as stored.
	DeniedCiphertext OnDenied = 1
	// DeniedNull: the column has its logical type and every value is NULL.
	DeniedNull OnDenied = 2
	// DeniedMask: the column has its logical type and every non-NULL
	// value is the type's mask (pgvalue.Mask).
	DeniedMask OnDenied = 3
	// DeniedError: a statement that reads the column fails with 42501.
	DeniedError OnDenied = 4
)

// ParseOnDenied maps the configuration spelling to an OnDenied.
func ParseOnDenied(s string) (OnDenied, error) {
	switch s {
	case "ciphertext":
		return DeniedCiphertext, nil
	case "null":
		return DeniedNull, nil
	case "mask":
		return DeniedMask, nil
	case "error":
		return DeniedError, nil
	}
	return 0, fmt.Errorf("proxy: unknown on_denied %q (want ciphertext, null, mask or error)", s)
}

func (d OnDenied) String() string {
	switch d {
	case DeniedCiphertext:
		return "ciphertext"
	case DeniedNull:
		return "null"
	case DeniedMask:
		return "mask"
	case DeniedError:
		return "error"
	}
	return fmt.Sprintf("OnDenied(%d)", int(d))
}

// CatalogSource gives the current catalog snapshot of a database (the
// database of the startup message). Implementations are safe for
// concurrent use and cache: Catalog is called for every statement that
// mentions a configured table name.
type CatalogSource interface {
	// Catalog returns the current snapshot, resolving it on first use.
	Catalog(ctx context.Context, database string) (*catalog.Catalog, error)
	// Refresh re-resolves after a lookup miss (rate-limited by the
	// implementation) and returns the newest snapshot.
	Refresh(ctx context.Context, database string) (*catalog.Catalog, error)
	// Invalidate marks the snapshot stale (after DDL).
	Invalidate(database string)
}

// KeySource hands out prepared data keys. Implementations are safe for
// concurrent use and cache (keycache): both calls are on the hot path.
type KeySource interface {
	// EncryptionKey returns the active version of the encryption key ring
	// of a classification.
	EncryptionKey(ctx context.Context, classification string) (*envelope.Key, error)
	// Key returns the key version a ciphertext header names. Errors wrap
	// ErrKeyDestroyed when the version was deleted (crypto-shredded).
	Key(ctx context.Context, keyringID, version uint32) (*envelope.Key, error)
	// Encrypted records n encryptions under key (usage counters).
	Encrypted(key *envelope.Key, n int)
}

// ErrKeyDestroyed is wrapped by KeySource.Key for a version whose key was
// destroyed: its ciphertexts are unreadable for good.
var ErrKeyDestroyed = errors.New("proxy: key version destroyed")

// ReadAudit describes one statement that decrypted columns whose policy
// has AuditReads. It never holds a value.
type ReadAudit struct {
	Conn        uint64   // session id (the conn field of the logs)
	Role        string   // user of the startup message
	Database    string   // database of the startup message
	Application string   // application_name
	Fingerprint string   // pg_query fingerprint of the statement; "" when unknown
	Command     string   // the command tag's verb (SELECT, UPDATE, …)
	Columns     []string // schema.table.column of the audited columns returned
	Rows        int64    // rows returned
}

// ReadAuditor records read audits. AuditRead is called on the relay path
// and must not block: implementations queue and write in batches.
type ReadAuditor interface {
	AuditRead(ReadAudit)
}

func (e *Encryption) validate() error {
	if e.Catalogs == nil || e.Keys == nil {
		return errors.New("proxy: encryption needs a catalog source and a key source")
	}
	for name, p := range e.Policies {
		switch p.OnDenied {
		case DeniedCiphertext, DeniedNull, DeniedMask, DeniedError:
		default:
			return fmt.Errorf("proxy: classification %s: on_denied %v is not valid", name, p.OnDenied)
		}
		if p.AuditReads && e.Auditor == nil {
			return fmt.Errorf("proxy: classification %s audits reads but no auditor is set", name)
		}
	}
	if e.PlanCacheSize < 0 {
		return fmt.Errorf("proxy: plan cache size %d is negative", e.PlanCacheSize)
	}
	return nil
}
