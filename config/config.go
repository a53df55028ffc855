package config

import (
	"fmt"
	"os"
	"time"
)

// Config is a loaded and validated pgcloak.toml. Every field holds its final
// value: defaults are filled in, enumerations are checked, column types are
// canonical and relative file paths are resolved against the directory of
// the configuration file.
type Config struct {
	File            string                    // path the configuration was read from
	Server          Server                    // [server]
	Upstream        Upstream                  // [upstream]
	Keystore        Keystore                  // [keystore]
	KEKs            map[string]KEK            // [kek.NAME], by NAME
	Classifications map[string]Classification // [classification.NAME], by NAME (a Level)
	Rotation        Rotation                  // [rotation]
	Columns         []Column                  // [[column]], in file order
	Log             Log                       // [log]
}

// Server is the client-facing side of the proxy.
type Server struct {
	Listen           string        // host:port; port 0 picks a free port. Default DefaultListen.
	TLSCert          string        // PEM certificate chain for client TLS; "" = no client TLS
	TLSKey           string        // PEM private key matching TLSCert
	ShutdownTimeout  time.Duration // graceful shutdown budget. Default 30s.
	HandshakeTimeout time.Duration // startup + TLS + authentication budget. Default 15s.
	MaxMessageLen    int           // largest accepted protocol message in bytes. Default DefaultMaxMessageLen.
	EventLoops       int           // event-loop threads for plain-socket sessions: 0 automatic, -1 off (two goroutines per session).
}

// Upstream is the PostgreSQL server the proxy connects to.
type Upstream struct {
	Addr          string // host:port, required
	TLS           string // "disable" | "prefer" | "require" | "verify-full". Default "prefer".
	TLSCA         string // PEM roots for verify-full; "" = system roots
	TLSServerName string // name to verify; "" = the host of Addr
}

// Keystore is where wrapped DEKs, key versions, jobs and the audit log live.
type Keystore struct {
	// DSN is a libpq connection string or URL without a password (the
	// password comes from PGPASSWORD / PGPASSFILE). Required as soon as a
	// classification encrypts.
	DSN string
	// AuditSink, when set, is a file (created 0600 if missing) to which
	// every audit entry this process appends is also written as one JSON
	// line, for a SIEM to ship. Relative to the configuration file.
	AuditSink string
}

// KEK types.
const (
	KEKPKCS11 = "pkcs11"
	KEKLocal  = "local"
	KEKAWSKMS = "awskms"
)

// KEK is one key-encryption key provider. Which fields are set depends on
// Type; the others are empty.
type KEK struct {
	Name string // NAME of [kek.NAME]
	Type string // KEKPKCS11 | KEKLocal | KEKAWSKMS

	// pkcs11
	Module     string // path of the PKCS#11 module (.so)
	TokenLabel string
	PINEnv     string // name of the environment variable that holds the user PIN
	KeyLabel   string // CKA_LABEL of the AES key on the token

	// local (development only)
	KeyFile string // 64 hex characters (32 bytes)

	// awskms
	KeyID    string // key id, ARN or alias
	Region   string // "" = from the AWS environment
	Endpoint string // "" = AWS default; set for VPC endpoints or tests
}

// HSMBacked reports whether the key never leaves an HSM or KMS.
func (k KEK) HSMBacked() bool { return k.Type == KEKPKCS11 || k.Type == KEKAWSKMS }

// Classification levels, from least to most protected.
const (
	LevelPublic       = "public"       // not encrypted
	LevelInternal     = "internal"     // encrypted; a software KEK is allowed
	LevelConfidential = "confidential" // encrypted; HSM/KMS-held KEK required
	LevelRestricted   = "restricted"   // as confidential, and every decryption is audited
)

// Levels lists the classification levels in increasing order of protection.
func Levels() []string {
	return []string{LevelPublic, LevelInternal, LevelConfidential, LevelRestricted}
}

// What a role that may not see plaintext gets instead.
const (
	OnDeniedCiphertext = "ciphertext"
	OnDeniedNull       = "null"
	OnDeniedMask       = "mask"
	OnDeniedError      = "error"
)

// Classification is the key policy of one level. For LevelPublic every field
// but Name is zero.
type Classification struct {
	Name                   string        // a Level
	KEK                    string        // NAME of the [kek.NAME] that wraps this ring's DEKs
	RotateAfter            time.Duration // rotate the active version after this age. Default DefaultRotateAfterFor(Name).
	RotateAfterEncryptions int64         // ... or after this many encryptions. Default 2^30.
	PlaintextRoles         []string      // roles that see plaintext
	OnDenied               string        // OnDenied*. Default OnDeniedError (fail closed).
}

// Encrypted reports whether values of this classification are encrypted.
func (c Classification) Encrypted() bool { return c.Name != LevelPublic }

// Rotation configures the scheduled rotation that `pgcloak serve` runs:
// one proxy, elected through an advisory lock in the key store, checks
// every encryption key ring against its classification's rotate_after and
// rotate_after_encryptions.
type Rotation struct {
	// CheckInterval is how often the elected proxy checks, and how often
	// the others try to become the elected one. Default
	// DefaultRotationCheckInterval.
	CheckInterval time.Duration
	// CompromisedReads is what the proxies do with a value whose key
	// version is disabled (a compromise), until `pgcloak keys compromise`
	// has re-encrypted it: CompromisedReadsRefuse (58000, the default:
	// fail closed) or CompromisedReadsAllow (decrypt, each key load audited
	// as key.disabled_access; the version still never encrypts).
	CompromisedReads string
}

// Values of [rotation] compromised_reads.
const (
	CompromisedReadsRefuse = "refuse"
	CompromisedReadsAllow  = "allow"
)

// Search modes of a column.
const (
	SearchNone     = "none"
	SearchEquality = "equality" // blind index: col = value, col IN (...)
)

// Column is one classified column.
type Column struct {
	Schema         string // unquoted, case as in the catalog; "public" when not given
	Table          string // unquoted, case as in the catalog
	Column         string // unquoted, case as in the catalog
	Type           string // canonical PostgreSQL type, e.g. "varchar(40)", "numeric(12,2)", "int8"
	Classification string // a Level
	Search         string // SearchNone | SearchEquality. Default SearchNone.
	// Context is bound into every ciphertext as associated data. Default
	// "schema.table.column"; set it explicitly before renaming a column so
	// existing ciphertext stays readable.
	Context string
}

// QualifiedName is "schema.table.column" (identifiers unquoted).
func (c Column) QualifiedName() string { return c.Schema + "." + c.Table + "." + c.Column }

// Log configures logging. Command-line flags override it.
type Log struct {
	Level  string // "trace" | "debug" | "info" | "warn" | "error". Default "info".
	Format string // "json" | "console" | "" (= json unless stderr is a terminal)
}

// Defaults.
const (
	DefaultListen                  = "127.0.0.1:6432"
	DefaultShutdownTimeout         = 30 * time.Second
	DefaultHandshakeTimeout        = 15 * time.Second
	DefaultMaxMessageLen           = 1<<30 + 1<<20 // PostgreSQL's 1 GiB field limit plus room for the rest of the message
	DefaultUpstreamTLS             = "prefer"
	DefaultRotateAfter             = 90 * 24 * time.Hour // internal; see DefaultRotateAfterFor
	DefaultRotateAfterConfidential = 60 * 24 * time.Hour
	DefaultRotateAfterRestricted   = 30 * 24 * time.Hour
	DefaultRotateAfterEncryptions  = 1 << 30
	DefaultRotationCheckInterval   = time.Minute
	DefaultOnDenied                = OnDeniedError
	DefaultLogLevel                = "info"
)

// DefaultRotateAfterFor returns the default rotate_after of a
// classification level: the key-management policy rotates every 30 to 90
// days, more often the more sensitive the data (internal 90d, confidential
// 60d, restricted 30d). Zero for public and unknown levels.
func DefaultRotateAfterFor(level string) time.Duration {
	switch level {
	case LevelInternal:
		return DefaultRotateAfter
	case LevelConfidential:
		return DefaultRotateAfterConfidential
	case LevelRestricted:
		return DefaultRotateAfterRestricted
	}
	return 0
}

// Load reads, parses and validates the configuration file at path, including
// checks that the files it names exist. Relative paths in the file are
// resolved against the file's directory. On failure the error is a Problems
// value (unless the file cannot be read at all).
func Load(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	cfg, d := parse(path, data)
	if cfg != nil {
		d.checkFiles(cfg)
	}
	return finish(cfg, d.probs)
}

// Parse parses and validates a configuration held in memory. file is used in
// problem messages and to resolve relative paths; nothing is read from disk.
func Parse(file string, data []byte) (*Config, error) {
	cfg, d := parse(file, data)
	return finish(cfg, d.probs)
}

func finish(cfg *Config, probs Problems) (*Config, error) {
	if len(probs) > 0 {
		probs.sortByLine()
		return nil, probs
	}
	return cfg, nil
}
