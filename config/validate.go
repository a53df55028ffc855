package config

import (
	"fmt"
	"net"
	"net/url"
	"os"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
)

// validate runs the checks that involve more than one key. Problems point at
// the key that has to change.
func (d *decoder) validate(cfg *Config) {
	d.validateServer(cfg)
	d.validateUpstream(cfg)
	d.validateKeys(cfg)
	d.validateColumns(cfg)
}

func (d *decoder) validateServer(cfg *Config) {
	srv := cfg.Server
	if _, ok := d.lines["server.listen"]; ok {
		if err := checkHostPort(srv.Listen, true); err != nil {
			d.add(d.lineOf("server.listen"), "server.listen: %v", err)
		}
	}
	switch {
	case srv.TLSCert != "" && srv.TLSKey == "":
		d.add(d.lineOf("server.tls_cert"), "server.tls_cert: set without server.tls_key (the matching private key)")
	case srv.TLSKey != "" && srv.TLSCert == "":
		d.add(d.lineOf("server.tls_key"), "server.tls_key: set without server.tls_cert (the certificate chain)")
	}
}

func (d *decoder) validateUpstream(cfg *Config) {
	up := cfg.Upstream
	host := ""
	if up.Addr != "" {
		if err := checkHostPort(up.Addr, false); err != nil {
			d.add(d.lineOf("upstream.addr"), "upstream.addr: %v", err)
		} else {
			host, _, _ = net.SplitHostPort(up.Addr)
		}
	}
	if up.TLS == "verify-full" {
		if up.TLSServerName == "" && net.ParseIP(host) != nil {
			d.add(d.lineOf("upstream.tls"), "upstream.tls: verify-full checks the server certificate against a host name, "+
				"but upstream.addr has the IP address %s: use the server's host name in addr, or set upstream.tls_server_name "+
				"to the name (or IP address) its certificate was issued for", host)
		}
		return
	}
	for _, k := range []string{"tls_ca", "tls_server_name"} {
		if _, ok := d.lines["upstream."+k]; ok {
			d.add(d.lineOf("upstream."+k), "upstream.%s: only used with tls = \"verify-full\" (tls is %q, which does not check the server certificate)", k, up.TLS)
		}
	}
}

// validateKeys checks classifications against KEKs and the key store.
func (d *decoder) validateKeys(cfg *Config) {
	encrypting := ""
	for _, name := range sortedKeys(cfg.Classifications) {
		c := cfg.Classifications[name]
		path := "classification." + name
		if !slices.Contains(Levels(), name) {
			continue // already reported
		}
		if !c.Encrypted() || c.KEK == "" {
			if c.Encrypted() && encrypting == "" {
				encrypting = path
			}
			continue
		}
		if encrypting == "" {
			encrypting = path
		}
		k, ok := cfg.KEKs[c.KEK]
		switch {
		case !ok:
			d.add(d.lineOf(path+".kek"), "%s.kek: no [kek.%s] is defined%s", path, c.KEK, knownNames(cfg.KEKs))
		case k.Type == KEKLocal && (name == LevelConfidential || name == LevelRestricted):
			d.add(d.lineOf(path+".kek"), "%s.kek: %s data needs an HSM- or KMS-held key (type pkcs11 or awskms); kek %q is a local key file, allowed for internal data only", path, name, c.KEK)
		}
	}
	ks := cfg.Keystore.DSN
	switch {
	case ks == "" && encrypting != "":
		line := d.lineOf("keystore")
		if _, ok := d.lines["keystore"]; !ok {
			line = d.lineOf(encrypting)
		}
		d.add(line, "keystore.dsn: required because [%s] encrypts (the key store database)", encrypting)
	case ks != "":
		if err := checkDSN(ks); err != nil {
			d.add(d.lineOf("keystore.dsn"), "keystore.dsn: %v", err)
		}
	}
}

func knownNames[V any](m map[string]V) string {
	if len(m) == 0 {
		return ""
	}
	return " (defined: " + strings.Join(sortedKeys(m), ", ") + ")"
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

func (d *decoder) validateColumns(cfg *Config) {
	names := map[string]string{}    // qualified name -> path of first definition
	contexts := map[string]string{} // context -> path of first definition
	for i, c := range cfg.Columns {
		path := fmt.Sprintf("column[%d]", i+1)
		if c.Classification != "" && c.Classification != LevelPublic {
			if _, ok := cfg.Classifications[c.Classification]; !ok {
				d.add(d.lineOf(path+".classification"), "%s.classification: %q is not defined: add [classification.%s]",
					path, c.Classification, c.Classification)
			}
		}
		if c.Search == SearchEquality {
			switch {
			case c.Classification == LevelPublic:
				d.add(d.lineOf(path+".search"), "%s.search: public columns are not encrypted and need no blind index; remove search", path)
			case c.Type == "json":
				d.add(d.lineOf(path+".search"), "%s.search: json has no equality operator; use jsonb or text", path)
			}
		}
		if c.Schema == "" || c.Column == "" {
			continue
		}
		q := c.QualifiedName()
		if first, ok := names[q]; ok {
			d.add(d.lineOf(path), "%s: %s is already configured at line %d", path, q, d.lineOf(first))
			continue
		}
		names[q] = path
		if first, ok := contexts[c.Context]; ok && c.Classification != LevelPublic {
			d.add(d.lineOf(path+".context"), "%s.context: %q is already the context of %s (line %d); each column needs its own", path, c.Context, first, d.lineOf(first))
		} else if c.Classification != LevelPublic {
			contexts[c.Context] = path
		}
	}
}

// checkHostPort accepts "host:port" (host may be empty when listening).
func checkHostPort(addr string, listen bool) error {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("%q is not host:port", addr)
	}
	if host == "" && !listen {
		return fmt.Errorf("%q has no host", addr)
	}
	n, err := strconv.Atoi(port)
	lo := 1
	if listen {
		lo = 0
	}
	if err != nil || n < lo || n > 65535 {
		return fmt.Errorf("%q: port must be a number in %d..65535", addr, lo)
	}
	return nil
}

var kvPasswordRE = regexp.MustCompile(`(^|\s)password\s*=`)

// checkDSN refuses a key-store connection string that carries a password
// or is not a connection string at all.
func checkDSN(dsn string) error {
	const fix = "it must not contain a password; use PGPASSWORD or PGPASSFILE"
	if strings.HasPrefix(dsn, "postgres://") || strings.HasPrefix(dsn, "postgresql://") {
		u, err := url.Parse(dsn)
		if err != nil {
			// Never echo the DSN: it may hold a password.
			return fmt.Errorf("not a valid postgres:// URL")
		}
		if _, ok := u.User.Password(); ok || u.Query().Has("password") {
			return fmt.Errorf("%s", fix)
		}
		return nil
	}
	if !strings.Contains(dsn, "=") {
		return fmt.Errorf("not a connection string (want postgres://user@host:port/db or key=value pairs)")
	}
	if kvPasswordRE.MatchString(dsn) {
		return fmt.Errorf("%s", fix)
	}
	return nil
}

// checkFiles reports files named in the configuration that cannot be read.
// Only Load runs it: Parse works on documents that are not on this machine.
func (d *decoder) checkFiles(cfg *Config) {
	check := func(path, key string) {
		if path == "" {
			return
		}
		st, err := os.Stat(path)
		switch {
		case err != nil:
			d.add(d.lineOf(key), "%s: cannot read %s: %v", key, path, unwrapPathErr(err))
		case st.IsDir():
			d.add(d.lineOf(key), "%s: %s is a directory", key, path)
		}
	}
	check(cfg.Server.TLSCert, "server.tls_cert")
	check(cfg.Server.TLSKey, "server.tls_key")
	check(cfg.Upstream.TLSCA, "upstream.tls_ca")
	for _, name := range sortedKeys(cfg.KEKs) {
		k := cfg.KEKs[name]
		check(k.Module, "kek."+name+".module")
		check(k.KeyFile, "kek."+name+".key_file")
	}
}

func unwrapPathErr(err error) error {
	if pe, ok := err.(*os.PathError); ok {
		return pe.Err
	}
	return err
}
