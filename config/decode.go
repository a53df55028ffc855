package config

import (
	"fmt"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// decoder applies the schema to a tree, collecting problems and the line of
// every key it reads (for the cross-checks in validate.go).
type decoder struct {
	file  string
	dir   string // directory relative paths are resolved against
	probs Problems
	lines map[string]int // key path ("server.listen", "column[2].type", "kek.hsm") -> line
}

func (d *decoder) add(line int, format string, args ...any) {
	d.probs = append(d.probs, Problem{File: d.file, Line: max(line, 1), Msg: fmt.Sprintf(format, args...)})
}

// lineOf returns the line recorded for a key path, falling back to its
// enclosing sections, then to line 1.
func (d *decoder) lineOf(path string) int {
	for {
		if l, ok := d.lines[path]; ok {
			return l
		}
		i := strings.LastIndexAny(path, ".[")
		if i <= 0 {
			return 1
		}
		path = path[:i]
	}
}

// parse runs the whole pipeline except the file-system checks. cfg is nil
// when the document is not valid TOML.
func parse(file string, data []byte) (*Config, *decoder) {
	d := &decoder{file: file, dir: filepath.Dir(file), lines: map[string]int{}}
	if p := syntaxProblem(file, data); p != nil {
		d.probs = append(d.probs, *p)
		return nil, d
	}
	root, errs := parseTree(file, data)
	d.probs = append(d.probs, errs...)
	cfg := d.decodeRoot(root)
	cfg.File = file
	d.validate(cfg)
	return cfg, d
}

// section reads the keys of one table. Every key read is marked; finish
// reports the rest as unknown.
type section struct {
	d     *decoder
	t     *table
	path  string // key path of the table itself
	known []string
	used  map[string]bool
}

func (d *decoder) section(t *table, path string, known ...string) *section {
	s := &section{d: d, t: t, path: path, known: known, used: map[string]bool{}}
	if path != "" {
		d.lines[path] = t.line
	}
	for _, k := range t.keys {
		d.lines[s.keyPath(k)] = t.entries[k].line
	}
	return s
}

// keyPath is the dotted path of key k of this section.
func (s *section) keyPath(k string) string {
	if s.path == "" {
		return k
	}
	return s.path + "." + k
}

// get returns the entry for k (nil when absent) and marks k as known.
func (s *section) get(k string) *entry {
	s.used[k] = true
	return s.t.get(k)
}

func (s *section) typeErr(k string, e *entry, want string) {
	got := describe(e.val)
	if _, secret := secretHint(k); secret || k == "pin_env" || k == "dsn" {
		got = article(e.val.kind) // the value may be a secret written in the wrong place
	}
	s.d.add(e.line, "%s: must be %s, not %s", s.keyPath(k), want, got)
}

// describe names the kind of v and shows scalar values.
func describe(v *value) string {
	switch v.kind {
	case kindString:
		return fmt.Sprintf("a string (%q)", v.text)
	case kindInteger, kindFloat, kindBool, kindTime:
		return fmt.Sprintf("%s (%s)", article(v.kind), v.text)
	}
	return article(v.kind)
}

func article(k kind) string {
	switch k {
	case kindInteger, kindArray:
		return "an " + k.String()
	}
	return "a " + k.String()
}

// str reads a string. It reports whether the key was present with the right
// type.
func (s *section) str(k string, dst *string) bool {
	e := s.get(k)
	if e == nil {
		return false
	}
	if e.val.kind != kindString {
		s.typeErr(k, e, "a string")
		return false
	}
	*dst = e.val.text
	return true
}

// filePath reads a file path and resolves it against the file's directory.
func (s *section) filePath(k string, dst *string) {
	var p string
	if !s.str(k, &p) {
		return
	}
	if p == "" {
		s.d.add(s.t.get(k).line, "%s: must not be empty (remove the key instead)", s.keyPath(k))
		return
	}
	if !filepath.IsAbs(p) {
		p = filepath.Join(s.d.dir, p)
	}
	*dst = p
}

// enum reads a string that must be one of allowed.
func (s *section) enum(k string, dst *string, allowed ...string) {
	var v string
	if !s.str(k, &v) {
		return
	}
	for _, a := range allowed {
		if v == a {
			*dst = v
			return
		}
	}
	s.d.add(s.t.get(k).line, "%s: %q is not one of %s", s.keyPath(k), v, orList(allowed))
}

// strList reads an array of strings.
func (s *section) strList(k string, dst *[]string) bool {
	e := s.get(k)
	if e == nil {
		return false
	}
	if e.val.kind != kindArray {
		s.typeErr(k, e, "an array of strings")
		return false
	}
	out := make([]string, 0, len(e.val.items))
	ok := true
	for i, it := range e.val.items {
		if it.kind != kindString {
			s.d.add(it.line, "%s[%d]: must be a string, not %s", s.keyPath(k), i+1, describe(it))
			ok = false
			continue
		}
		out = append(out, it.text)
	}
	if ok {
		*dst = out
	}
	return ok
}

// integer reads a TOML integer.
func (s *section) integer(k string, dst *int64) bool {
	e := s.get(k)
	if e == nil {
		return false
	}
	if e.val.kind != kindInteger {
		s.typeErr(k, e, "an integer")
		return false
	}
	n, err := strconv.ParseInt(e.val.text, 0, 64)
	if err != nil {
		s.d.add(e.line, "%s: integer %s out of range", s.keyPath(k), e.val.text)
		return false
	}
	*dst = n
	return true
}

// duration reads a duration string such as "30s", "1h30m" or "90d".
func (s *section) duration(k string, dst *time.Duration) {
	e := s.get(k)
	if e == nil {
		return
	}
	if e.val.kind != kindString {
		s.typeErr(k, e, `a duration string such as "30s" or "90d"`)
		return
	}
	d, err := parseDuration(e.val.text)
	if err != nil {
		s.d.add(e.line, "%s: %v", s.keyPath(k), err)
		return
	}
	*dst = d
}

// size reads a byte count: an integer, or a string such as "64MiB".
func (s *section) size(k string, dst *int64) {
	e := s.get(k)
	if e == nil {
		return
	}
	switch e.val.kind {
	case kindInteger:
		s.integer(k, dst)
	case kindString:
		n, err := parseSize(e.val.text)
		if err != nil {
			s.d.add(e.line, "%s: %v", s.keyPath(k), err)
			return
		}
		*dst = n
	default:
		s.typeErr(k, e, `a byte count (an integer, or a string such as "64MiB")`)
	}
}

// subtable returns the table at k, or nil (reporting a problem when k holds
// something else).
func (s *section) subtable(k string) *table {
	e := s.get(k)
	if e == nil {
		return nil
	}
	if e.val.kind != kindTable {
		s.typeErr(k, e, "a table")
		return nil
	}
	return e.val.tbl
}

// finish reports every key of the table that was not read.
func (s *section) finish() {
	for _, k := range s.t.keys {
		if s.used[k] {
			continue
		}
		line := s.t.entries[k].line
		if hint, ok := secretHint(k); ok {
			s.d.add(line, "%s: secrets must not be written in the configuration file; %s", s.keyPath(k), hint)
			continue
		}
		msg := fmt.Sprintf("%s: unknown key", s.keyPath(k))
		if s.path == "" {
			msg = fmt.Sprintf("%s: unknown top-level key", k)
			if s.t.entries[k].val.kind == kindTable {
				msg = fmt.Sprintf("[%s]: unknown section", k)
			}
		}
		if sug := suggest(k, s.known); sug != "" {
			msg += fmt.Sprintf(" (did you mean %q?)", sug)
		} else if len(s.known) > 0 {
			msg += " (known keys: " + strings.Join(s.known, ", ") + ")"
		}
		s.d.add(line, "%s", msg)
	}
}

// secretHint says where a secret-looking key belongs instead.
func secretHint(k string) (string, bool) {
	switch strings.ToLower(k) {
	case "pin", "user_pin", "so_pin", "sopin", "pin_code":
		return "put the PIN in an environment variable and name that variable with pin_env", true
	case "password", "passwd", "pass", "pgpassword":
		return "the password comes from the environment (PGPASSWORD or PGPASSFILE)", true
	case "access_key", "access_key_id", "aws_access_key_id", "secret_key", "secret_access_key",
		"aws_secret_access_key", "session_token", "aws_session_token":
		return "AWS credentials come from the AWS environment (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, AWS_PROFILE or an instance role)", true
	case "key", "key_hex", "key_bytes", "secret", "kek_key", "dek":
		return "key material never goes in the file: use an HSM or KMS kek, or key_file for a local development kek", true
	}
	return "", false
}

// suggest returns the known key closest to k when it is a likely typo.
func suggest(k string, known []string) string {
	best, bestDist := "", 3
	for _, c := range known {
		if d := editDistance(k, c); d < bestDist {
			best, bestDist = c, d
		}
	}
	return best
}

func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

func orList(xs []string) string {
	q := make([]string, len(xs))
	for i, x := range xs {
		q[i] = strconv.Quote(x)
	}
	if len(q) == 1 {
		return q[0]
	}
	return strings.Join(q[:len(q)-1], ", ") + " or " + q[len(q)-1]
}
