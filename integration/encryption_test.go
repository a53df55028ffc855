package integration

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgcloak/pgcloak/crypto/envelope"
	"github.com/pgcloak/pgcloak/internal/hsmtest"
	"github.com/pgcloak/pgcloak/internal/pgtest"
)

// End-to-end column encryption through the real binary: a throwaway
// cluster with log_statement = 'all', a SoftHSM2 token holding the KEK,
// `pgcloak kek create` and `pgcloak schema apply`, then `pgcloak serve`
// with real clients (pgx in every mode, psql, pgbench).

// encType is one logical type, with a SQL literal for psql and pgbench
// and a Go value for pgx. Text values carry the run's marker so that the
// leak check can grep every log for them.
type encType struct {
	typ, col string
	literal  string // SQL literal (without quotes for numbers)
	value    any
}

func encTypes(marker string) []encType {
	return []encType{
		{"text", "v_text", "'text-" + marker + " ünï ✓'", "text-" + marker + " ünï ✓"},
		{"varchar(40)", "v_varchar", "'vc-" + marker + "'", "vc-" + marker},
		{"int2", "v_int2", "-12", int16(-12)},
		{"int4", "v_int4", "123456", int32(123456)},
		{"int8", "v_int8", "-9007199254740993", int64(-9007199254740993)},
		{"numeric(12,2)", "v_numeric", "1234.5", float64(1234.5)},
		{"float4", "v_float4", "1.5", float32(1.5)},
		{"float8", "v_float8", "-2.25e-300", float64(-2.25e-300)},
		{"bool", "v_bool", "true", true},
		{"date", "v_date", "'2024-01-31'", time.Date(2024, 1, 31, 0, 0, 0, 0, time.UTC)},
		{"timestamp", "v_timestamp", "'2024-01-31 12:34:56.789123'", time.Date(2024, 1, 31, 12, 34, 56, 789123000, time.UTC)},
		{"timestamptz", "v_timestamptz", "'1999-12-31 23:59:59.5+00'", time.Date(1999, 12, 31, 23, 59, 59, 500000000, time.UTC)},
		{"uuid", "v_uuid", "'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11'", "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"},
		{"json", "v_json", `'{"m": "json-` + marker + `", "a": [1, 2]}'`, `{"m": "json-` + marker + `", "a": [1, 2]}`},
		{"jsonb", "v_jsonb", `'{"mm": "jsonb-` + marker + `", "a": 1}'`, `{"mm": "jsonb-` + marker + `", "a": 1}`},
		{"bytea", "v_bytea", `'\x0001feff'`, []byte{0, 1, 0xfe, 0xff}},
	}
}

// encStack is the whole product on one machine.
type encStack struct {
	c        *pgtest.Cluster
	tok      *hsmtest.Token
	p        *proxy
	conf     string // the configuration file, for CLI verbs
	env      []string
	marker   string
	types    []encType
	ringID   uint32 // id of the confidential key ring
	appDSN   string // superuser, straight to the app database
	direct   *pgx.Conn
	userPass string
}

func newEncStack(t *testing.T) *encStack {
	t.Helper()
	c := newCluster(t, pgtest.Opts{LogStatementAll: true, Conf: map[string]string{"timezone": "UTC"}})
	tok := hsmtest.New(t, "pgcloak-it")
	mk := make([]byte, 6)
	_, _ = rand.Read(mk)
	s := &encStack{c: c, tok: tok, marker: "pgck" + hex.EncodeToString(mk), userPass: roles.scram.password}
	s.types = encTypes(s.marker)
	s.env = append(tok.Env(), "PGCLOAK_HSM_PIN="+tok.PIN)
	s.appDSN = c.DSN("postgres", "", "app")

	var cols strings.Builder
	ddl := "CREATE TABLE typed (id int PRIMARY KEY, note text"
	for _, ty := range s.types {
		fmt.Fprintf(&cols, "[[column]]\ntable = \"typed\"\ncolumn = %q\ntype = %q\nclassification = \"confidential\"\n\n", ty.col, ty.typ)
		ddl += ", " + ty.col + " bytea"
	}
	cols.WriteString("[[column]]\ntable = \"people\"\ncolumn = \"ssn\"\ntype = \"text\"\nclassification = \"confidential\"\n\n")
	cols.WriteString("[[column]]\ntable = \"people\"\ncolumn = \"diagnosis\"\ntype = \"text\"\nclassification = \"restricted\"\n\n")
	extra := fmt.Sprintf(`[keystore]
dsn = %q

[kek.hsm]
type = "pkcs11"
module = %q
token_label = %q
pin_env = "PGCLOAK_HSM_PIN"
key_label = "pgcloak-kek"

[classification.confidential]
kek = "hsm"
plaintext_roles = [%q]
on_denied = "mask"

[classification.restricted]
kek = "hsm"
plaintext_roles = [%q]
on_denied = "null"

%s`, c.DSN("postgres", "", "postgres"), tok.Module, tok.Label, roles.scram.name, roles.scram.name, cols.String())
	cfg := proxyConfig{Upstream: c.Addr(), Extra: extra, Env: s.env}
	s.conf = filepath.Join(t.TempDir(), "pgcloak.toml")
	if err := os.WriteFile(s.conf, []byte(cfg.toml()), 0o600); err != nil {
		t.Fatal(err)
	}
	s.cli(t, 0, "kek", "create")

	s.direct = connect(t, s.appDSN, pgx.QueryExecModeExec)
	for _, q := range []string{ddl + ")",
		`CREATE TABLE people (id int PRIMARY KEY, name text, ssn bytea, diagnosis bytea)`,
		`CREATE SEQUENCE typed_ids START 100000`,
		`GRANT ALL ON typed, people, typed_ids TO ` + roles.scram.name + `, ` + roles.md5.name} {
		if _, err := s.direct.Exec(t.Context(), q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	s.cli(t, 0, "schema", "apply", "--yes", "--dsn", s.appDSN)
	s.p = startProxy(t, cfg)
	ks := connect(t, c.DSN("postgres", "", "postgres"), pgx.QueryExecModeExec)
	if err := ks.QueryRow(t.Context(), `SELECT id FROM pgcloak.keyrings WHERE name = 'confidential'`).Scan(&s.ringID); err != nil {
		t.Fatalf("confidential key ring: %v", err)
	}
	return s
}

// cli runs a pgcloak verb with the stack's configuration and requires exit
// code want.
func (s *encStack) cli(t *testing.T, want int, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, needBinary(t), append([]string{"--config", s.conf}, args...)...)
	cmd.Env = append(os.Environ(), s.env...)
	out, err := cmd.CombinedOutput()
	if code := cmd.ProcessState.ExitCode(); code != want {
		t.Fatalf("pgcloak %s: exit %d (%v), want %d\n%s", strings.Join(args, " "), code, err, want, out)
	}
	return string(out)
}

func (s *encStack) dsn(extra ...string) string {
	return s.p.DSN(roles.scram.name, roles.scram.password, "app", extra...)
}

// checkStored requires every non-NULL encrypted value of row id to be an
// envelope of the confidential ring, version 1.
func (s *encStack) checkStored(t *testing.T, id int) {
	t.Helper()
	for _, ty := range s.types {
		var raw []byte
		if err := s.direct.QueryRow(t.Context(), fmt.Sprintf(`SELECT %s FROM typed WHERE id = $1`, ty.col), id).Scan(&raw); err != nil {
			t.Fatal(err)
		}
		if raw == nil {
			continue
		}
		h, err := envelope.ParseHeader(raw)
		if err != nil || h.KeyringID != s.ringID || h.KeyVersion != 1 {
			t.Errorf("row %d %s stored as %x… (%v), want an envelope of ring %d version 1", id, ty.col, raw[:min(len(raw), 16)], err, s.ringID)
		}
	}
}

// The oracle (PostgreSQL itself, queried directly) must never see the
// marker, or the server log would hold it for a reason that has nothing to
// do with pgcloak: it gets the value with the marker replaced by a
// surrogate of the same length, and its answer gets the marker back.
func (s *encStack) surrogate() string { return strings.Repeat("q", len(s.marker)) }

func (s *encStack) hide(v any) any {
	if str, ok := v.(string); ok {
		return strings.ReplaceAll(str, s.marker, s.surrogate())
	}
	return v
}

func (s *encStack) unhide(v any) any {
	switch x := v.(type) {
	case string:
		return strings.ReplaceAll(x, s.surrogate(), s.marker)
	case map[string]any:
		out := map[string]any{}
		for k, e := range x {
			out[s.unhide(k).(string)] = s.unhide(e)
		}
		return out
	case []any:
		out := make([]any, len(x))
		for i, e := range x {
			out[i] = s.unhide(e)
		}
		return out
	}
	return v
}

// oracle returns what PostgreSQL gives for the parameter value cast to typ.
func (s *encStack) oracle(t *testing.T, conn *pgx.Conn, typ string, value any) any {
	t.Helper()
	var want any
	if err := conn.QueryRow(t.Context(), fmt.Sprintf(`SELECT $1::%s`, typ), s.hide(value)).Scan(&want); err != nil {
		t.Fatalf("oracle %s: %v", typ, err)
	}
	return s.unhide(want)
}

// oracleLiteral is oracle for a SQL literal.
func (s *encStack) oracleLiteral(t *testing.T, conn *pgx.Conn, typ, literal string) any {
	t.Helper()
	var want any
	if err := conn.QueryRow(t.Context(), fmt.Sprintf(`SELECT %s::%s`, s.hide(literal), typ)).Scan(&want); err != nil {
		t.Fatalf("oracle %s: %v", typ, err)
	}
	return s.unhide(want)
}

func sameScanned(a, b any) bool {
	if ta, ok := a.(time.Time); ok {
		tb, ok := b.(time.Time)
		return ok && ta.Equal(tb)
	}
	return reflect.DeepEqual(a, b)
}

func TestEncryptionEndToEnd(t *testing.T) {
	s := newEncStack(t)
	ctx := t.Context()
	oracle := connect(t, s.appDSN, pgx.QueryExecModeCacheStatement)

	t.Run("pgx", func(t *testing.T) {
		id := 1000
		for _, mode := range []pgx.QueryExecMode{pgx.QueryExecModeCacheStatement, pgx.QueryExecModeCacheDescribe,
			pgx.QueryExecModeDescribeExec, pgx.QueryExecModeExec, pgx.QueryExecModeSimpleProtocol} {
			conn := connect(t, s.dsn(), mode)
			for _, ty := range s.types {
				id++
				if _, err := conn.Exec(ctx, fmt.Sprintf(`INSERT INTO typed (id, %s) VALUES ($1, $2)`, ty.col), id, ty.value); err != nil {
					t.Fatalf("%v %s: insert: %v", mode, ty.typ, err)
				}
				var got any
				if err := conn.QueryRow(ctx, fmt.Sprintf(`SELECT %s FROM typed WHERE id = $1`, ty.col), id).Scan(&got); err != nil {
					t.Fatalf("%v %s: select: %v", mode, ty.typ, err)
				}
				want := s.oracle(t, oracle, ty.typ, ty.value)
				if !sameScanned(got, want) {
					t.Errorf("%v %s: got %#v, PostgreSQL says %#v", mode, ty.typ, got, want)
				}
				s.checkStored(t, id)
			}
			// NULL and empty string.
			id++
			if _, err := conn.Exec(ctx, `INSERT INTO typed (id, v_text, v_varchar, v_int4) VALUES ($1, $2, $3, $4)`, id, "", "", nil); err != nil {
				t.Fatal(err)
			}
			var txt, vc *string
			var i4 *int32
			if err := conn.QueryRow(ctx, `SELECT v_text, v_varchar, v_int4 FROM typed WHERE id = $1`, id).Scan(&txt, &vc, &i4); err != nil {
				t.Fatal(err)
			}
			if txt == nil || *txt != "" || vc == nil || *vc != "" || i4 != nil {
				t.Errorf("%v: empty strings and NULL came back as %v %v %v", mode, txt, vc, i4)
			}
			s.checkStored(t, id)
		}
	})

	t.Run("psql", func(t *testing.T) {
		psql := clientBinary(t, s.c, "psql")
		for i, ty := range s.types {
			id := 2000 + i
			q := fmt.Sprintf(`INSERT INTO typed (id, %s) VALUES (%d, %s)`, ty.col, id, ty.literal)
			if out, errOut, err := runTool(t, time.Minute, psql, s.userPass, "-X", "-v", "ON_ERROR_STOP=1", "-d", s.dsn(), "-c", q); err != nil {
				t.Fatalf("psql %s: %v\n%s%s", q, err, out, errOut)
			}
			got, errOut, err := runTool(t, time.Minute, psql, s.userPass, "-X", "-At", "-d", s.dsn(), "-c",
				fmt.Sprintf(`SELECT %s FROM typed WHERE id = %d`, ty.col, id))
			if err != nil {
				t.Fatalf("psql select %s: %v\n%s", ty.typ, err, errOut)
			}
			want, errOut, err := runTool(t, time.Minute, psql, "", "-X", "-At", "-d", s.appDSN, "-c", fmt.Sprintf(`SELECT %s::%s`, s.hide(ty.literal), ty.typ))
			if err != nil {
				t.Fatalf("psql oracle %s: %v\n%s", ty.typ, err, errOut)
			}
			want = s.unhide(want).(string)
			if got != want {
				t.Errorf("psql %s: got %q, PostgreSQL says %q", ty.typ, got, want)
			}
			s.checkStored(t, id)
		}
	})

	t.Run("pgbench", func(t *testing.T) {
		pgbench := clientBinary(t, s.c, "pgbench")
		cols, vals := []string{"id"}, []string{":id"}
		for _, ty := range s.types {
			cols = append(cols, ty.col)
			vals = append(vals, ty.literal)
		}
		script := filepath.Join(t.TempDir(), "insert.sql")
		body := fmt.Sprintf("SELECT nextval('typed_ids') AS id \\gset\n"+
			"INSERT INTO typed (%s) VALUES (%s);\nSELECT %s FROM typed WHERE id = :id;\n",
			strings.Join(cols, ", "), strings.Join(vals, ", "), strings.Join(cols[1:], ", "))
		if err := os.WriteFile(script, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		for _, mode := range []string{"simple", "extended", "prepared"} {
			if _, err := s.direct.Exec(ctx, `DELETE FROM typed WHERE id >= 100000`); err != nil {
				t.Fatal(err)
			}
			out, errOut, err := runTool(t, 2*time.Minute, pgbench, s.userPass, "-n", "-M", mode, "-c", "2", "-t", "15",
				"-f", script, "-d", s.dsn())
			res := parsePgbench(t, out)
			if err != nil || res.failed != 0 {
				t.Fatalf("pgbench -M %s: %v, %d failed\n%s%s", mode, err, res.failed, out, errOut)
			}
			rows, err := connect(t, s.dsn(), pgx.QueryExecModeCacheStatement).Query(ctx,
				fmt.Sprintf(`SELECT %s FROM typed WHERE id >= 100000`, strings.Join(cols, ", ")))
			if err != nil {
				t.Fatal(err)
			}
			count := 0
			for rows.Next() {
				vals, err := rows.Values()
				if err != nil {
					t.Fatal(err)
				}
				count++
				for i, ty := range s.types {
					want := s.oracleLiteral(t, oracle, ty.typ, ty.literal)
					if !sameScanned(vals[i+1], want) {
						t.Errorf("pgbench -M %s %s: got %#v, want %#v", mode, ty.typ, vals[i+1], want)
					}
				}
				s.checkStored(t, int(vals[0].(int32)))
			}
			if rows.Err() != nil || count == 0 {
				t.Fatalf("pgbench -M %s: %d rows, %v", mode, count, rows.Err())
			}
		}
	})

	t.Run("refusals and tampering", func(t *testing.T) {
		conn := connect(t, s.dsn(), pgx.QueryExecModeCacheStatement)
		_, err := conn.Exec(ctx, `SELECT id FROM typed ORDER BY v_text`)
		if sqlState(err) != "0A000" || !strings.Contains(err.Error(), "public.typed.v_text") {
			t.Errorf("ORDER BY an encrypted column: %v", err)
		}
		// A ciphertext copied into another column of the same table (the
		// CHECK constraint lets it in: it is an envelope).
		if _, err := s.direct.Exec(ctx, `UPDATE typed SET v_varchar = v_text WHERE id = 1001`); err != nil {
			t.Fatal(err)
		}
		var v string
		err = conn.QueryRow(ctx, `SELECT v_varchar FROM typed WHERE id = 1001`).Scan(&v)
		if sqlState(err) != "XX001" || !strings.Contains(err.Error(), "public.typed.v_varchar") {
			t.Errorf("ciphertext moved between columns: %v", err)
		}
		// The leak guard: plaintext written around the proxy is refused.
		_, err = s.direct.Exec(ctx, `INSERT INTO typed (id, v_text) VALUES (9, 'plain'::bytea)`)
		if sqlState(err) != "23514" {
			t.Errorf("plaintext written directly: %v, want 23514 from the CHECK constraint", err)
		}
	})

	t.Run("denied role and restricted audit", func(t *testing.T) {
		app := connect(t, s.dsn(), pgx.QueryExecModeCacheStatement)
		if _, err := app.Exec(ctx, `INSERT INTO people (id, name, ssn, diagnosis) VALUES (1, 'a', $1, $2), (2, 'b', $1, $2)`,
			"ssn-"+s.marker, "dx-"+s.marker); err != nil {
			t.Fatal(err)
		}
		other := connect(t, s.p.DSN(roles.md5.name, roles.md5.password, "app"), pgx.QueryExecModeCacheStatement)
		var ssn string
		var dx *string
		if err := other.QueryRow(ctx, `SELECT ssn, diagnosis FROM people WHERE id = 1`).Scan(&ssn, &dx); err != nil {
			t.Fatal(err)
		}
		if ssn != "****" || dx != nil {
			t.Errorf("denied role read %q %v, want the mask and NULL", ssn, dx)
		}
		rows, err := app.Query(ctx, `SELECT diagnosis FROM people`)
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for rows.Next() {
			var d string
			if err := rows.Scan(&d); err != nil || d != "dx-"+s.marker {
				t.Fatalf("restricted read: %q %v", d, err)
			}
			n++
		}
		if rows.Err() != nil || n != 2 {
			t.Fatalf("restricted read: %d rows, %v", n, rows.Err())
		}
		ks := connect(t, s.c.DSN("postgres", "", "postgres"), pgx.QueryExecModeExec)
		deadline := time.Now().Add(15 * time.Second)
		for {
			var details string
			err := ks.QueryRow(ctx, `SELECT details::text FROM pgcloak.audit_log WHERE event = 'data.read' ORDER BY seq DESC LIMIT 1`).Scan(&details)
			if err == nil {
				if !strings.Contains(details, "public.people.diagnosis") || !strings.Contains(details, roles.scram.name) ||
					!regexp.MustCompile(`"rows": "?2"?`).MatchString(details) || strings.Contains(details, s.marker) {
					t.Errorf("audit details: %s", details)
				}
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("no data.read audit entry: %v", err)
			}
			time.Sleep(200 * time.Millisecond)
		}
		s.cli(t, 0, "audit", "verify")
	})

	t.Run("no plaintext in any log", func(t *testing.T) {
		s.p.Stop(t)
		pglog, err := os.ReadFile(s.c.LogFile())
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(string(pglog), "INSERT INTO typed") {
			t.Fatal("the server log does not show the statements: log_statement is not in effect, the check would prove nothing")
		}
		for name, text := range map[string]string{"PostgreSQL log": string(pglog), "pgcloak log": s.p.logs.String()} {
			if i := strings.Index(text, s.marker); i >= 0 {
				t.Errorf("%s holds a plaintext test value: …%s…", name, text[max(0, i-200):min(len(text), i+100)])
			}
		}
		if !strings.Contains(s.p.logs.String(), "statement refused") {
			t.Error("the pgcloak log has no refusal line: the grep covers too little")
		}
	})
}
