package config

import (
	"fmt"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"time"
)

// Known keys per section, in the order of DESIGN.md §3.
var (
	rootKeys     = []string{"server", "upstream", "keystore", "kek", "classification", "rotation", "column", "log"}
	serverKeys   = []string{"listen", "tls_cert", "tls_key", "shutdown_timeout", "handshake_timeout", "max_message_len", "event_loops"}
	upstreamKeys = []string{"addr", "tls", "tls_ca", "tls_server_name"}
	keystoreKeys = []string{"dsn", "audit_sink"}
	kekKeys      = []string{"type", "module", "token_label", "pin_env", "key_label", "key_file", "key_id", "region", "endpoint"}
	classKeys    = []string{"kek", "rotate_after", "rotate_after_encryptions", "plaintext_roles", "on_denied"}
	rotationKeys = []string{"check_interval", "compromised_reads"}
	columnKeys   = []string{"table", "column", "type", "classification", "search", "context"}
	logKeys      = []string{"level", "format"}

	upstreamTLSModes = []string{"disable", "prefer", "require", "verify-full"}
	kekTypes         = []string{KEKPKCS11, KEKLocal, KEKAWSKMS}
	onDeniedModes    = []string{OnDeniedCiphertext, OnDeniedNull, OnDeniedMask, OnDeniedError}
	searchModes      = []string{SearchNone, SearchEquality}
	logLevels        = []string{"trace", "debug", "info", "warn", "error"}
	logFormats       = []string{"json", "console"}

	// kekFields: which keys each KEK type uses, and which of them it needs.
	kekFields = map[string][]string{
		KEKPKCS11: {"module", "token_label", "pin_env", "key_label"},
		KEKLocal:  {"key_file"},
		KEKAWSKMS: {"key_id", "region", "endpoint"},
	}
	kekRequired = map[string][]string{
		KEKPKCS11: {"module", "token_label", "pin_env", "key_label"},
		KEKLocal:  {"key_file"},
		KEKAWSKMS: {"key_id"},
	}

	kekNameRE = regexp.MustCompile(`^[A-Za-z0-9_-]+$`)
	envNameRE = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)
)

const maxEncryptionsPerKey = 1 << 32 // NIST SP 800-38D bound for AES-GCM with random nonces

// Bounds of [rotation] check_interval: often enough for tests, and at
// least daily so that a due rotation waits at most a day.
const (
	minCheckInterval = 100 * time.Millisecond
	maxCheckInterval = 24 * time.Hour
)

func defaults() *Config {
	return &Config{
		Server: Server{
			Listen:           DefaultListen,
			ShutdownTimeout:  DefaultShutdownTimeout,
			HandshakeTimeout: DefaultHandshakeTimeout,
			MaxMessageLen:    DefaultMaxMessageLen,
		},
		Upstream:        Upstream{TLS: DefaultUpstreamTLS},
		KEKs:            map[string]KEK{},
		Classifications: map[string]Classification{},
		Rotation:        Rotation{CheckInterval: DefaultRotationCheckInterval, CompromisedReads: CompromisedReadsRefuse},
		Log:             Log{Level: DefaultLogLevel},
	}
}

func (d *decoder) decodeRoot(root *table) *Config {
	cfg := defaults()
	s := d.section(root, "", rootKeys...)
	if t := s.subtable("server"); t != nil {
		d.decodeServer(t, &cfg.Server)
	}
	if t := s.subtable("upstream"); t != nil {
		d.decodeUpstream(t, &cfg.Upstream)
	} else if s.t.get("upstream") == nil {
		d.add(1, "[upstream] is missing: addr (the PostgreSQL server, host:port) is required")
	}
	if t := s.subtable("keystore"); t != nil {
		ks := d.section(t, "keystore", keystoreKeys...)
		ks.str("dsn", &cfg.Keystore.DSN)
		ks.filePath("audit_sink", &cfg.Keystore.AuditSink)
		ks.finish()
	}
	if t := s.subtable("kek"); t != nil {
		d.named(t, "kek", func(name string, nt *table) { cfg.KEKs[name] = d.decodeKEK(name, nt) })
	}
	if t := s.subtable("classification"); t != nil {
		d.named(t, "classification", func(name string, nt *table) {
			cfg.Classifications[name] = d.decodeClassification(name, nt)
		})
	}
	if t := s.subtable("rotation"); t != nil {
		d.decodeRotation(t, &cfg.Rotation)
	}
	if e := s.get("column"); e != nil {
		d.decodeColumns(e, cfg)
	}
	if t := s.subtable("log"); t != nil {
		ls := d.section(t, "log", logKeys...)
		ls.enum("level", &cfg.Log.Level, logLevels...)
		ls.enum("format", &cfg.Log.Format, logFormats...)
		ls.finish()
	}
	s.finish()
	return cfg
}

// named walks the [prefix.NAME] tables of t.
func (d *decoder) named(t *table, prefix string, fn func(name string, nt *table)) {
	for _, name := range t.keys {
		e := t.entries[name]
		path := prefix + "." + name
		d.lines[path] = e.line
		if e.val.kind != kindTable {
			d.add(e.line, "%s: must be a table ([%s]), not %s", path, path, describe(e.val))
			continue
		}
		fn(name, e.val.tbl)
	}
}

func (d *decoder) decodeServer(t *table, srv *Server) {
	s := d.section(t, "server", serverKeys...)
	s.str("listen", &srv.Listen)
	s.filePath("tls_cert", &srv.TLSCert)
	s.filePath("tls_key", &srv.TLSKey)
	s.duration("shutdown_timeout", &srv.ShutdownTimeout)
	s.duration("handshake_timeout", &srv.HandshakeTimeout)
	n := int64(srv.MaxMessageLen)
	s.size("max_message_len", &n)
	const lo, hi = 64 << 10, 1<<31 - 1 // a message length is a signed 32-bit field
	if n < lo || n > hi {
		d.add(d.lineOf("server.max_message_len"), "server.max_message_len: %d is outside %d..%d bytes", n, lo, hi)
	} else {
		srv.MaxMessageLen = int(n)
	}
	var loops int64
	if s.integer("event_loops", &loops) {
		if loops < -1 || loops > 64 {
			d.add(d.lineOf("server.event_loops"), "server.event_loops: %d is outside -1..64 (0 = automatic, -1 = off)", loops)
		} else {
			srv.EventLoops = int(loops)
		}
	}
	s.finish()
}

func (d *decoder) decodeUpstream(t *table, up *Upstream) {
	s := d.section(t, "upstream", upstreamKeys...)
	if !s.str("addr", &up.Addr) && t.get("addr") == nil {
		d.add(t.line, "upstream.addr: required (the PostgreSQL server, host:port)")
	}
	s.enum("tls", &up.TLS, upstreamTLSModes...)
	s.filePath("tls_ca", &up.TLSCA)
	s.str("tls_server_name", &up.TLSServerName)
	s.finish()
}

func (d *decoder) decodeKEK(name string, t *table) KEK {
	path := "kek." + name
	k := KEK{Name: name}
	if !kekNameRE.MatchString(name) {
		d.add(t.line, "%s: a kek name may only contain letters, digits, '-' and '_'", path)
	}
	s := d.section(t, path, kekKeys...)
	s.enum("type", &k.Type, kekTypes...)
	if t.get("type") == nil {
		d.add(t.line, "%s.type: required (%s)", path, orList(kekTypes))
	}
	s.filePath("module", &k.Module)
	s.str("token_label", &k.TokenLabel)
	s.str("pin_env", &k.PINEnv)
	s.str("key_label", &k.KeyLabel)
	s.filePath("key_file", &k.KeyFile)
	s.str("key_id", &k.KeyID)
	s.str("region", &k.Region)
	s.str("endpoint", &k.Endpoint)
	s.finish()

	if k.Type == "" {
		return k
	}
	for _, f := range kekKeys[1:] {
		if t.get(f) != nil && !slices.Contains(kekFields[k.Type], f) {
			d.add(d.lineOf(path+"."+f), "%s.%s: not used by a %s kek (it belongs to type %s)", path, f, k.Type, ownerType(f))
		}
	}
	for _, f := range kekRequired[k.Type] {
		if t.get(f) == nil {
			d.add(t.line, "%s.%s: required for a %s kek", path, f, k.Type)
		}
	}
	if k.PINEnv != "" && !envNameRE.MatchString(k.PINEnv) {
		d.add(d.lineOf(path+".pin_env"), "%s.pin_env: must name an environment variable (such as PGCLOAK_HSM_PIN), not hold the PIN itself", path)
	}
	if k.Endpoint != "" {
		if u, err := url.Parse(k.Endpoint); err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
			d.add(d.lineOf(path+".endpoint"), "%s.endpoint: must be an http(s) URL", path)
		}
	}
	return k
}

func ownerType(field string) string {
	for _, typ := range kekTypes {
		if slices.Contains(kekFields[typ], field) {
			return typ
		}
	}
	return "none"
}

func (d *decoder) decodeClassification(name string, t *table) Classification {
	path := "classification." + name
	c := Classification{Name: name}
	s := d.section(t, path, classKeys...)
	if !slices.Contains(Levels(), name) {
		d.add(t.line, "%s: unknown classification level (want %s)", path, orList(Levels()))
		for _, k := range classKeys {
			s.get(k)
		}
		s.finish()
		return c
	}
	if name == LevelPublic {
		for _, k := range classKeys {
			if e := s.get(k); e != nil {
				d.add(e.line, "%s.%s: public columns are not encrypted, so %s does not apply; remove it", path, k, k)
			}
		}
		s.finish()
		return c
	}
	c.RotateAfter = DefaultRotateAfterFor(name)
	c.RotateAfterEncryptions = DefaultRotateAfterEncryptions
	c.OnDenied = DefaultOnDenied
	if !s.str("kek", &c.KEK) && t.get("kek") == nil {
		d.add(t.line, "%s.kek: required (the name of the [kek.NAME] that wraps this level's keys)", path)
	}
	s.duration("rotate_after", &c.RotateAfter)
	var n int64
	if s.integer("rotate_after_encryptions", &n) {
		if n < 1 || n > maxEncryptionsPerKey {
			d.add(d.lineOf(path+".rotate_after_encryptions"),
				"%s.rotate_after_encryptions: %d is outside 1..%d (the AES-GCM limit for random nonces)", path, n, int64(maxEncryptionsPerKey))
		} else {
			c.RotateAfterEncryptions = n
		}
	}
	if s.strList("plaintext_roles", &c.PlaintextRoles) {
		seen := map[string]bool{}
		for _, r := range c.PlaintextRoles {
			switch {
			case r == "" || len(r) > maxIdentLen:
				d.add(d.lineOf(path+".plaintext_roles"), "%s.plaintext_roles: %q is not a valid role name", path, r)
			case seen[r]:
				d.add(d.lineOf(path+".plaintext_roles"), "%s.plaintext_roles: %q is listed twice", path, r)
			}
			seen[r] = true
		}
	}
	s.enum("on_denied", &c.OnDenied, onDeniedModes...)
	s.finish()
	return c
}

func (d *decoder) decodeRotation(t *table, r *Rotation) {
	s := d.section(t, "rotation", rotationKeys...)
	iv := r.CheckInterval
	s.duration("check_interval", &iv)
	if iv < minCheckInterval || iv > maxCheckInterval {
		d.add(d.lineOf("rotation.check_interval"), "rotation.check_interval: %v is outside %v..%v", iv, minCheckInterval, maxCheckInterval)
	} else {
		r.CheckInterval = iv
	}
	s.enum("compromised_reads", &r.CompromisedReads, CompromisedReadsRefuse, CompromisedReadsAllow)
	s.finish()
}

func (d *decoder) decodeColumns(e *entry, cfg *Config) {
	if e.val.kind == kindTable {
		d.add(e.line, "column: write [[column]] (an array of tables, one per column), not [column]")
		return
	}
	if e.val.kind != kindArray {
		d.add(e.line, "column: must be an array of tables ([[column]]), not %s", describe(e.val))
		return
	}
	for i, it := range e.val.items {
		path := fmt.Sprintf("column[%d]", i+1)
		if it.kind != kindTable {
			d.add(it.line, "%s: must be a table, not %s", path, describe(it))
			continue
		}
		cfg.Columns = append(cfg.Columns, d.decodeColumn(path, it.tbl))
	}
}

func (d *decoder) decodeColumn(path string, t *table) Column {
	c := Column{Search: SearchNone}
	s := d.section(t, path, columnKeys...)
	required := func(k, what string) {
		if t.get(k) == nil {
			d.add(t.line, "%s.%s: required (%s)", path, k, what)
		}
	}
	var tbl, col, typ string
	if s.str("table", &tbl) {
		parts, err := parseQualified(tbl, 2)
		if err != nil {
			d.add(d.lineOf(path+".table"), "%s.table: %v", path, err)
		} else if len(parts) == 1 {
			c.Schema, c.Table = "public", parts[0]
		} else {
			c.Schema, c.Table = parts[0], parts[1]
		}
	}
	required("table", `"schema.table"`)
	if s.str("column", &col) {
		parts, err := parseQualified(col, 1)
		if err != nil {
			d.add(d.lineOf(path+".column"), "%s.column: %v", path, err)
		} else {
			c.Column = parts[0]
		}
	}
	required("column", "the column name")
	if s.str("type", &typ) {
		canon, err := ParseType(typ)
		if err != nil {
			d.add(d.lineOf(path+".type"), "%s.type: %v", path, err)
		} else {
			c.Type = canon
		}
	}
	required("type", `the type the application sees, such as "text" or "numeric(12,2)"`)
	s.enum("classification", &c.Classification, Levels()...)
	required("classification", orList(Levels()))
	s.enum("search", &c.Search, searchModes...)
	if s.str("context", &c.Context) && strings.TrimSpace(c.Context) == "" {
		d.add(d.lineOf(path+".context"), "%s.context: must not be empty", path)
	}
	if c.Context == "" && c.Schema != "" && c.Column != "" {
		c.Context = c.QualifiedName()
	}
	s.finish()
	return c
}
