package proxy

import (
	"fmt"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/pgcloak/pgcloak/crypto/envelope"
)

func TestCloakRoundTripAllModes(t *testing.T) {
	env := newCloakEnv(t, nil)
	for i, mode := range execModes {
		t.Run(mode.String(), func(t *testing.T) {
			conn := env.connect("app", mode)
			id := i + 1
			ssn := fmt.Sprintf("078-05-112%d", id)
			_, err := conn.Exec(env.ctx, `INSERT INTO customers (id, name, ssn, age, secret, nick) VALUES ($1, $2, $3, $4, $5, $6)`,
				id, "name", ssn, int32(40+id), "s3cr3t", "nick")
			if err != nil {
				t.Fatalf("insert: %v", err)
			}
			var gotSSN, gotSecret, gotNick string
			var gotAge int32
			err = conn.QueryRow(env.ctx, `SELECT ssn, age, secret, nick FROM customers WHERE id = $1`, id).Scan(&gotSSN, &gotAge, &gotSecret, &gotNick)
			if err != nil {
				t.Fatalf("select: %v", err)
			}
			if gotSSN != ssn || gotAge != int32(40+id) || gotSecret != "s3cr3t" || gotNick != "nick" {
				t.Fatalf("round trip: got %q %d %q %q", gotSSN, gotAge, gotSecret, gotNick)
			}
			raw := env.rawColumn("customers", "ssn", id)
			h, err := envelope.ParseHeader(raw)
			if err != nil {
				t.Fatalf("stored ssn is not an envelope: %v", err)
			}
			if h.KeyringID != 1 || h.KeyVersion != 1 {
				t.Fatalf("stored ssn names ring %d version %d, want 1/1", h.KeyringID, h.KeyVersion)
			}
		})
	}
}

// TestCloakTypes stores a value of every logical type through the proxy in
// every pgx mode and reads it back: the result must be what PostgreSQL
// itself returns for the same parameter cast to the logical type (the
// oracle), and the stored value must be an envelope of the right key.
func TestCloakTypes(t *testing.T) {
	env := typedEnv(t)
	id := 0
	for _, mode := range execModes {
		t.Run(mode.String(), func(t *testing.T) {
			conn := env.connect("app", mode)
			cfg := conn.Config().Copy()
			cfg.Host, cfg.Port = env.cluster.Host(), uint16(env.cluster.Port())
			cfg.User = "postgres"
			plain, err := pgx.ConnectConfig(env.ctx, cfg)
			if err != nil {
				t.Fatal(err)
			}
			defer plain.Close(env.ctx)
			for _, c := range typedCases {
				id++
				if _, err := conn.Exec(env.ctx, fmt.Sprintf(`INSERT INTO typed (id, %s) VALUES ($1, $2)`, c.col), id, c.value); err != nil {
					t.Fatalf("%s: insert: %v", c.typ, err)
				}
				var got, want any
				if err := conn.QueryRow(env.ctx, fmt.Sprintf(`SELECT %s FROM typed WHERE id = $1`, c.col), id).Scan(&got); err != nil {
					t.Fatalf("%s: select: %v", c.typ, err)
				}
				if err := plain.QueryRow(env.ctx, fmt.Sprintf(`SELECT $1::%s`, c.typ), c.value).Scan(&want); err != nil {
					t.Fatalf("%s: oracle: %v", c.typ, err)
				}
				if !sameValue(got, want) {
					t.Errorf("%s: through pgcloak %#v, PostgreSQL says %#v", c.typ, got, want)
				}
				h, err := envelope.ParseHeader(env.rawColumn("typed", c.col, id))
				if err != nil || h.KeyringID != 1 || h.KeyVersion != 1 {
					t.Errorf("%s: stored value: header %+v, %v", c.typ, h, err)
				}
				// NULL stays NULL, in both directions.
				id++
				if _, err := conn.Exec(env.ctx, fmt.Sprintf(`INSERT INTO typed (id, %s) VALUES ($1, $2)`, c.col), id, nil); err != nil {
					t.Fatalf("%s: insert NULL: %v", c.typ, err)
				}
				got = "not null"
				if err := conn.QueryRow(env.ctx, fmt.Sprintf(`SELECT %s FROM typed WHERE id = $1`, c.col), id).Scan(&got); err != nil {
					t.Fatalf("%s: select NULL: %v", c.typ, err)
				}
				if got != nil || env.rawColumn("typed", c.col, id) != nil {
					t.Errorf("%s: NULL came back as %#v", c.typ, got)
				}
			}
			// Empty strings survive (and are encrypted: not NULL, not empty).
			id++
			if _, err := conn.Exec(env.ctx, `INSERT INTO typed (id, v_text, v_varchar, v_bytea) VALUES ($1, $2, $3, $4)`, id, "", "", []byte{}); err != nil {
				t.Fatalf("insert empty: %v", err)
			}
			var s1, s2 string
			var b []byte
			if err := conn.QueryRow(env.ctx, `SELECT v_text, v_varchar, v_bytea FROM typed WHERE id = $1`, id).Scan(&s1, &s2, &b); err != nil {
				t.Fatalf("select empty: %v", err)
			}
			if s1 != "" || s2 != "" || b == nil || len(b) != 0 {
				t.Errorf("empty values came back as %q %q %#v", s1, s2, b)
			}
			if raw := env.rawColumn("typed", "v_text", id); len(raw) < 13+12+16 {
				t.Errorf("empty text stored as %d bytes, want an envelope", len(raw))
			}
		})
	}
}

// TestCloakOnDenied reads the same row as a role allowed plaintext and as
// roles that are not, for each policy of the test environment: internal
// (analyst allowed), confidential (mask), restricted (null); and, in a
// second environment, ciphertext and error.
func TestCloakOnDenied(t *testing.T) {
	env := newCloakEnv(t, nil)
	app := env.connect("app", pgx.QueryExecModeCacheStatement)
	env.seed(app, 1)
	for _, mode := range execModes {
		analyst := env.connect("analyst", mode)
		var ssn, secret, nick *string
		var age *int32
		if err := analyst.QueryRow(env.ctx, `SELECT ssn, age, secret, nick FROM customers WHERE id = 1`).Scan(&ssn, &age, &secret, &nick); err != nil {
			t.Fatalf("%v: %v", mode, err)
		}
		if ssn == nil || *ssn != "****" || age == nil || *age != 0 {
			t.Errorf("%v: confidential columns for a denied role with on_denied=mask: %v %v", mode, ssn, age)
		}
		if secret != nil {
			t.Errorf("%v: restricted column for a denied role with on_denied=null: %q", mode, *secret)
		}
		if nick == nil || *nick != "nicky" {
			t.Errorf("%v: internal column for an allowed role: %v", mode, nick)
		}
		// Writes by a denied role are encrypted as usual.
		if _, err := analyst.Exec(env.ctx, `UPDATE customers SET ssn = $1 WHERE id = 1`, "999-99-9999"); err != nil {
			t.Fatalf("%v: update by denied role: %v", mode, err)
		}
		var back string
		if err := app.QueryRow(env.ctx, `SELECT ssn FROM customers WHERE id = 1`).Scan(&back); err != nil || back != "999-99-9999" {
			t.Fatalf("%v: app reads %q, %v", mode, back, err)
		}
	}

	env2 := newCloakEnvPolicies(t, map[string]Policy{
		"internal":     {PlaintextRoles: []string{"app"}, OnDenied: DeniedCiphertext},
		"confidential": {PlaintextRoles: []string{"app"}, OnDenied: DeniedError},
		"restricted":   {PlaintextRoles: []string{"app"}, OnDenied: DeniedError},
	})
	env2.seed(env2.connect("app", pgx.QueryExecModeExec), 1)
	for _, mode := range execModes {
		analyst := env2.connect("analyst", mode)
		var nick []byte
		if err := analyst.QueryRow(env2.ctx, `SELECT nick FROM customers WHERE id = 1`).Scan(&nick); err != nil {
			t.Fatalf("%v: ciphertext mode: %v", mode, err)
		}
		if h, err := envelope.ParseHeader(nick); err != nil || h.KeyringID != 3 {
			t.Errorf("%v: on_denied=ciphertext delivered %x (%v), want the stored envelope", mode, nick, err)
		}
		_, err := analyst.Exec(env2.ctx, `SELECT ssn FROM customers WHERE id = 1`)
		if code, msg := pgCode(err); code != "42501" || !strings.Contains(msg, "public.customers.ssn") {
			t.Errorf("%v: on_denied=error: %q %q", mode, code, msg)
		}
		// The session goes on.
		var n int
		if err := analyst.QueryRow(env2.ctx, `SELECT count(*) FROM customers`).Scan(&n); err != nil || n != 1 {
			t.Errorf("%v: after a refusal: %d, %v", mode, n, err)
		}
	}
}

// TestCloakRefusals: every unsupported use of an encrypted column fails
// with 0A000 naming the column, in every mode, before anything reaches the
// server; the session and an open transaction behave as after any error.
func TestCloakRefusals(t *testing.T) {
	env := newCloakEnv(t, nil)
	cases := []struct{ sql, col string }{
		{`SELECT id FROM customers WHERE ssn = $1`, "public.customers.ssn"},
		{`SELECT id FROM customers WHERE name <> $1 ORDER BY age`, "public.customers.age"},
		{`SELECT id FROM customers WHERE ssn LIKE $1`, "public.customers.ssn"},
		{`SELECT lower(ssn) FROM customers WHERE id > $1`, "public.customers.ssn"},
		{`UPDATE customers SET ssn = nick WHERE id = $1`, "public.customers."},
		{`SELECT id FROM customers WHERE age > $1`, "public.customers.age"},
	}
	for _, mode := range execModes {
		conn := env.connect("app", mode)
		for _, c := range cases {
			_, err := conn.Exec(env.ctx, c.sql, "078-05-1120")
			code, msg := pgCode(err)
			if code != "0A000" || !strings.Contains(msg, c.col) {
				t.Errorf("%v: %s: got %q %q, want 0A000 naming %s", mode, c.sql, code, msg, c.col)
			}
		}
		// In a transaction block, a refusal aborts the transaction like
		// any error; ROLLBACK recovers.
		tx, err := conn.Begin(env.ctx)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := tx.Exec(env.ctx, cases[0].sql, "x"); err == nil {
			t.Fatalf("%v: refused statement succeeded in a transaction", mode)
		}
		_, err = tx.Exec(env.ctx, `SELECT 1`)
		if code, _ := pgCode(err); code != "25P02" {
			t.Errorf("%v: after a refusal in a transaction: %q, want 25P02", mode, code)
		}
		if err := tx.Rollback(env.ctx); err != nil {
			t.Fatal(err)
		}
		var one int
		if err := conn.QueryRow(env.ctx, `SELECT 1`).Scan(&one); err != nil || one != 1 {
			t.Fatalf("%v: session unusable after refusals: %v", mode, err)
		}
	}
	// Bad values for the logical type get PostgreSQL's SQLSTATE and never
	// quote the value.
	conn := env.connect("app", pgx.QueryExecModeExec)
	_, err := conn.Exec(env.ctx, `INSERT INTO customers (id, age) VALUES (1, $1)`, "forty-two")
	if code, msg := pgCode(err); code != "22P02" || strings.Contains(msg, "forty-two") {
		t.Errorf("bad int4: %q %q", code, msg)
	}
}

// TestCloakTamper: a modified ciphertext, one copied from another column,
// and one whose key was destroyed all fail with the documented SQLSTATE,
// naming the column and key version and never a value.
func TestCloakTamper(t *testing.T) {
	env := newCloakEnv(t, nil)
	app := env.connect("app", pgx.QueryExecModeCacheStatement)
	for id := 1; id <= 4; id++ {
		env.seed(app, id)
	}
	exec := func(sql string, args ...any) {
		t.Helper()
		if _, err := env.direct.Exec(env.ctx, sql, args...); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
	}
	// Flip one ciphertext byte of row 2; copy row 3's ssn into its secret.
	raw := env.rawColumn("customers", "ssn", 2)
	raw[len(raw)-1] ^= 1
	exec(`UPDATE customers SET ssn = $1 WHERE id = 2`, raw)
	exec(`UPDATE customers SET secret = ssn WHERE id = 3`)
	for _, mode := range execModes {
		conn := env.connect("app", mode)
		for _, c := range []struct {
			id        int
			col, want string
		}{{2, "ssn", "public.customers.ssn (key ring 1, version 1) failed authentication"},
			{3, "secret", "public.customers.secret (key ring 1, version 1) failed authentication"}} {
			var s string
			err := conn.QueryRow(env.ctx, fmt.Sprintf(`SELECT %s FROM customers WHERE id = $1`, c.col), c.id).Scan(&s)
			code, msg := pgCode(err)
			if code != "XX001" || !strings.Contains(msg, c.want) || strings.Contains(msg, "123-45") {
				t.Errorf("%v: row %d: %q %q", mode, c.id, code, msg)
			}
		}
		var s string
		if err := conn.QueryRow(env.ctx, `SELECT ssn FROM customers WHERE id = 1`).Scan(&s); err != nil || s != "123-45-6789" {
			t.Fatalf("%v: intact row after errors: %q %v", mode, s, err)
		}
	}
	// Crypto-shredding: version 1 of the confidential ring destroyed.
	env.keys.mu.Lock()
	env.keys.destroyed[[2]uint32{1, 1}] = true
	env.keys.mu.Unlock()
	var s string
	err := app.QueryRow(env.ctx, `SELECT ssn FROM customers WHERE id = 4`).Scan(&s)
	if code, msg := pgCode(err); code != "58000" || !strings.Contains(msg, "destroyed") {
		t.Errorf("destroyed key: %q %q", code, msg)
	}
	// A failed read inside a transaction block leaves it failed on both
	// sides.
	tx, err := app.Begin(env.ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := tx.QueryRow(env.ctx, `SELECT ssn FROM customers WHERE id = 4`).Scan(&s); err == nil {
		t.Fatal("read with a destroyed key succeeded")
	}
	_, err = tx.Exec(env.ctx, `UPDATE customers SET name = 'changed' WHERE id = 4`)
	if code, _ := pgCode(err); code != "25P02" {
		t.Errorf("after a failed read in a transaction: %q, want 25P02", code)
	}
	_ = tx.Rollback(env.ctx)
	var name string
	if err := env.direct.QueryRow(env.ctx, `SELECT name FROM customers WHERE id = 4`).Scan(&name); err != nil || name != "n" {
		t.Errorf("the aborted transaction's update landed: %q %v", name, err)
	}
}

// TestCloakAuditRestricted: reading a restricted column produces one audit
// record per statement with the row count; other reads produce none.
func TestCloakAuditRestricted(t *testing.T) {
	env := newCloakEnv(t, nil)
	app := env.connect("app", pgx.QueryExecModeCacheStatement)
	for id := 1; id <= 3; id++ {
		env.seed(app, id)
	}
	before := len(env.audit.all())
	rows, err := app.Query(env.ctx, `SELECT id, secret FROM customers WHERE id <= $1`, 2)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for rows.Next() {
		n++
	}
	if rows.Err() != nil || n != 2 {
		t.Fatalf("rows %d, %v", n, rows.Err())
	}
	if _, err := app.Exec(env.ctx, `SELECT ssn FROM customers`); err != nil {
		t.Fatal(err)
	}
	got := env.audit.all()[before:]
	if len(got) != 1 {
		t.Fatalf("audit records: %+v", got)
	}
	a := got[0]
	if a.Role != "app" || a.Rows != 2 || a.Command != "SELECT" || a.Fingerprint == "" ||
		len(a.Columns) != 1 || a.Columns[0] != "public.customers.secret" {
		t.Errorf("audit record %+v", a)
	}
}

// TestCloakPipelines: batches (many Parse/Bind/Execute before one Sync),
// an error in the middle of one, cursors and multi-statement queries.
func TestCloakPipelines(t *testing.T) {
	env := newCloakEnv(t, nil)
	for _, mode := range execModes {
		t.Run(mode.String(), func(t *testing.T) {
			conn := env.connect("app", mode)
			if _, err := conn.Exec(env.ctx, `DELETE FROM customers`); err != nil {
				t.Fatal(err)
			}
			b := &pgx.Batch{}
			for id := 1; id <= 20; id++ {
				b.Queue(`INSERT INTO customers (id, ssn, age) VALUES ($1, $2, $3)`, id, fmt.Sprint("ssn-", id), int32(id))
			}
			b.Queue(`SELECT ssn, age FROM customers ORDER BY id`)
			br := conn.SendBatch(env.ctx, b)
			for i := 0; i < 20; i++ {
				if _, err := br.Exec(); err != nil {
					t.Fatalf("batch insert %d: %v", i, err)
				}
			}
			rows, err := br.Query()
			if err != nil {
				t.Fatal(err)
			}
			i := 0
			for rows.Next() {
				i++
				var ssn string
				var age int32
				if err := rows.Scan(&ssn, &age); err != nil || ssn != fmt.Sprint("ssn-", i) || age != int32(i) {
					t.Fatalf("row %d: %q %d %v", i, ssn, age, err)
				}
			}
			if rows.Err() != nil || i != 20 {
				t.Fatalf("batch select: %d rows, %v", i, rows.Err())
			}
			if err := br.Close(); err != nil {
				t.Fatal(err)
			}

			// An error in the middle: the rest of the batch is skipped.
			b = &pgx.Batch{}
			b.Queue(`UPDATE customers SET ssn = $1 WHERE id = 1`, "changed")
			b.Queue(`SELECT id FROM customers ORDER BY ssn`)
			b.Queue(`UPDATE customers SET ssn = $1 WHERE id = 2`, "must not land")
			err = conn.SendBatch(env.ctx, b).Close()
			if code, _ := pgCode(err); code != "0A000" {
				t.Fatalf("batch with a refused statement: %v", err)
			}
			var ssn string
			if err := conn.QueryRow(env.ctx, `SELECT ssn FROM customers WHERE id = 2`).Scan(&ssn); err != nil || ssn != "ssn-2" {
				t.Fatalf("after the failed batch: %q %v", ssn, err)
			}

			// Cursors: DECLARE in SQL, FETCH in this mode.
			tx, err := conn.Begin(env.ctx)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := tx.Exec(env.ctx, `DECLARE c CURSOR FOR SELECT id, ssn FROM customers ORDER BY id`); err != nil {
				t.Fatal(err)
			}
			for want := 1; want <= 20; want += 5 {
				rows, err := tx.Query(env.ctx, `FETCH 5 FROM c`)
				if err != nil {
					t.Fatal(err)
				}
				k := want
				for rows.Next() {
					var id int
					var ssn string
					if err := rows.Scan(&id, &ssn); err != nil || id != k || (id > 2 && ssn != fmt.Sprint("ssn-", id)) {
						t.Fatalf("fetch: %d %q %v", id, ssn, err)
					}
					k++
				}
				if rows.Err() != nil || k != want+5 {
					t.Fatalf("fetch: %d rows, %v", k-want, rows.Err())
				}
			}
			_ = tx.Rollback(env.ctx)
		})
	}
	// Multi-statement simple Query with literals in several statements.
	conn := env.connect("app", pgx.QueryExecModeSimpleProtocol)
	if _, err := conn.Exec(env.ctx, `UPDATE customers SET ssn = 'multi-1' WHERE id = 1; SELECT 1; UPDATE customers SET age = '77' WHERE id = 1`); err != nil {
		t.Fatal(err)
	}
	var ssn string
	var age int32
	if err := conn.QueryRow(env.ctx, `SELECT ssn, age FROM customers WHERE id = 1`).Scan(&ssn, &age); err != nil || ssn != "multi-1" || age != 77 {
		t.Fatalf("multi-statement: %q %d %v", ssn, age, err)
	}
}

// TestCloakStats: the counters move with the work done.
func TestCloakStats(t *testing.T) {
	env := newCloakEnv(t, nil)
	conn := env.connect("app", pgx.QueryExecModeCacheStatement)
	env.seed(conn, 1)
	var s string
	for i := 0; i < 3; i++ {
		if err := conn.QueryRow(env.ctx, `SELECT ssn FROM customers WHERE id = 1`).Scan(&s); err != nil {
			t.Fatal(err)
		}
	}
	_, _ = conn.Exec(env.ctx, `SELECT id FROM customers ORDER BY ssn`)
	// Unnamed statements (exec mode) are planned at every Parse: the
	// second one comes from the plan cache.
	exec := env.connect("app", pgx.QueryExecModeExec)
	for i := 0; i < 2; i++ {
		if err := exec.QueryRow(env.ctx, `SELECT age FROM customers WHERE id = 1`).Scan(new(int32)); err != nil {
			t.Fatal(err)
		}
	}
	st := env.proxy.srv.Stats()
	// seed seals four values (three literals, one parameter).
	if st.ValuesEncrypted != 4 || st.ValuesDecrypted != 5 || st.StatementsRefused != 1 ||
		st.PlanCacheMisses != 4 || st.PlanCacheHits != 1 || st.DecryptFailures != 0 {
		t.Errorf("stats %+v", st)
	}
}

// TestCloakMaxParams: counts on the wire are unsigned 16-bit (65535
// parameters is legal), in statements with and without encryption.
func TestCloakMaxParams(t *testing.T) {
	env := newCloakEnv(t, nil)
	conn := env.connect("app", pgx.QueryExecModeExec)
	const n = 65535
	params := make([]string, n)
	args := make([][]byte, n)
	for i := range params {
		params[i] = fmt.Sprintf("($%d::text)", i+1)
		args[i] = []byte(fmt.Sprint(i))
	}
	res := conn.PgConn().ExecParams(env.ctx, "values"+strings.Join(params, ", "), args, nil, nil, nil).Read()
	if res.Err != nil || len(res.Rows) != n {
		t.Fatalf("65535 parameters: %d rows, %v", len(res.Rows), res.Err)
	}
	// The same count into an encrypted column (one row per parameter).
	values := make([]string, n/3)
	var eargs []any
	for i := range values {
		values[i] = fmt.Sprintf("($%d, $%d, $%d)", 3*i+1, 3*i+2, 3*i+3)
		eargs = append(eargs, i, fmt.Sprint("ssn-", i), int32(i))
	}
	if _, err := conn.Exec(env.ctx, "INSERT INTO customers (id, ssn, age) VALUES "+strings.Join(values, ", "), eargs...); err != nil {
		t.Fatalf("insert with %d parameters: %v", len(eargs), err)
	}
	var last string
	if err := conn.QueryRow(env.ctx, `SELECT ssn FROM customers WHERE id = $1`, n/3-1).Scan(&last); err != nil || last != fmt.Sprint("ssn-", n/3-1) {
		t.Fatalf("last row: %q %v", last, err)
	}
}
