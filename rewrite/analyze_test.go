package rewrite

import (
	"errors"
	"strings"
	"testing"
)

type okCase struct {
	name string
	sql  string
	want summary
}

func p(s ...string) []string { return s }

const (
	ssn     = "public.customers.ssn"
	email   = "public.customers.email"
	archive = "public.customers_archive.ssn"
	token   = "app.secrets.token"
	secret  = "public.MixedCase.Secret"
)

var supported = []okCase{
	{"insert params", "INSERT INTO customers (id, ssn, email) VALUES (1, $1, $2)",
		summary{Params: p("$1:encrypt:"+ssn, "$2:encrypt:"+email)}},
	{"insert multi-row", "INSERT INTO customers (ssn, name) VALUES ($1, $2), ($3, $4)",
		summary{Params: p("$1:encrypt:"+ssn, "$3:encrypt:"+ssn)}},
	{"insert literals", "INSERT INTO customers (ssn, email) VALUES ('123-45-6789', 'a@b.c')",
		summary{Literals: p("«'123-45-6789'»=123-45-6789:encrypt:"+ssn, "«'a@b.c'»=a@b.c:encrypt:"+email)}},
	{"insert literal forms", "INSERT INTO customers (ssn, email) VALUES ('it''s', E'a\\tb'), ($$x$$, -42), (1.5, true), ('9'::int8, CAST('y' AS varchar(10))), (text 'z', '2024-01-01'::timestamp with time zone)",
		summary{Literals: p("«'it''s'»=it's:encrypt:"+ssn, "«E'a\\tb'»=a\tb:encrypt:"+email,
			"«$$x$$»=x:encrypt:"+ssn, "«-42»=-42:encrypt:"+email,
			"«1.5»=1.5:encrypt:"+ssn, "«true»=true:encrypt:"+email,
			"«'9'::int8»=9:encrypt:"+ssn, "«CAST('y' AS varchar(10))»=y:encrypt:"+email,
			"«text 'z'»=z:encrypt:"+ssn, "«'2024-01-01'::timestamp with time zone»=2024-01-01:encrypt:"+email)}},
	{"insert default null", "INSERT INTO customers (ssn, email) VALUES (DEFAULT, NULL)", summary{}},
	{"insert default values", "INSERT INTO customers DEFAULT VALUES", summary{}},
	{"insert returning", "INSERT INTO customers (ssn) VALUES ($1) RETURNING id, ssn",
		summary{Params: p("$1:encrypt:" + ssn), Reads: p(ssn)}},
	{"insert returning star", "INSERT INTO customers (id) VALUES (1) RETURNING *",
		summary{Reads: p(ssn, email)}},
	{"on conflict excluded", "INSERT INTO customers (id, ssn) VALUES ($1, $2) ON CONFLICT (id) DO UPDATE SET ssn = EXCLUDED.ssn",
		summary{Params: p("$2:encrypt:" + ssn)}},
	{"on conflict set param", "INSERT INTO customers (id, ssn) VALUES ($1, $2) ON CONFLICT (id) DO UPDATE SET ssn = $2, email = 'e'",
		summary{Params: p("$2:encrypt:" + ssn), Literals: p("«'e'»=e:encrypt:" + email)}},
	{"on conflict nothing", "INSERT INTO customers (id, ssn) VALUES (1, 's') ON CONFLICT DO NOTHING",
		summary{Literals: p("«'s'»=s:encrypt:" + ssn)}},
	{"update set", "UPDATE customers SET ssn = $1, email = 'x', name = $3 WHERE id = $2",
		summary{Params: p("$1:encrypt:" + ssn), Literals: p("«'x'»=x:encrypt:" + email)}},
	{"update null default", "UPDATE customers SET ssn = NULL, email = DEFAULT", summary{}},
	{"update same context", "UPDATE customers SET ssn = a.ssn FROM customers_archive a WHERE a.id = customers.id", summary{}},
	{"update where blind", "UPDATE customers c SET ssn = $1 WHERE c.email = $2",
		summary{Params: p("$1:encrypt:"+ssn, "$2:blind-index:"+email), Blind: p("«c.email»:" + email)}},
	{"delete returning", "DELETE FROM customers WHERE id = $1 RETURNING ssn",
		summary{Reads: p(ssn)}},
	{"delete blind", "DELETE FROM customers WHERE email = $1",
		summary{Params: p("$1:blind-index:" + email), Blind: p("«email»:" + email)}},
	{"select columns", "SELECT id, ssn, email FROM customers", summary{Reads: p(ssn, email)}},
	{"select star", "SELECT * FROM customers", summary{Reads: p(ssn, email)}},
	{"select join star", "SELECT c.*, o.total FROM customers c JOIN orders o ON o.customer_id = c.id",
		summary{Reads: p(ssn, email)}},
	{"select subquery", "SELECT s.x FROM (SELECT ssn AS x FROM customers) s", summary{Reads: p(ssn)}},
	{"select cte", "WITH c AS (SELECT ssn FROM customers) SELECT ssn FROM c", summary{Reads: p(ssn)}},
	{"is null", "SELECT id FROM customers WHERE ssn IS NOT NULL AND email IS NULL", summary{}},
	{"count", "SELECT count(ssn), count(*) FROM customers", summary{}},
	{"blind in", "SELECT id FROM customers WHERE email IN ($1, 'b')",
		summary{Params: p("$1:blind-index:" + email), Literals: p("«'b'»=b:blind-index:" + email), Blind: p("«email»:" + email)}},
	{"blind reversed", "SELECT id FROM customers WHERE $1 = email",
		summary{Params: p("$1:blind-index:" + email), Blind: p("«email»:" + email)}},
	{"schema qualified", "SELECT token FROM app.secrets WHERE app.secrets.token = $1",
		summary{Params: p("$1:blind-index:" + token), Blind: p("«app.secrets.token»:" + token), Reads: p(token)}},
	{"quoted identifiers", `SELECT "Secret" FROM "MixedCase" m WHERE m."Secret" = 'k'`,
		summary{Literals: p("«'k'»=k:blind-index:" + secret), Blind: p(`«m."Secret"»:` + secret), Reads: p(secret)}},
	{"quoted lower is same name", `SELECT "ssn" FROM "customers"`, summary{Reads: p(ssn)}},
	{"exists", "SELECT id FROM orders o WHERE EXISTS (SELECT 1 FROM customers c WHERE c.id = o.customer_id AND c.ssn IS NULL)", summary{}},
	{"insert select same context", "INSERT INTO customers_archive (id, ssn) SELECT id, ssn FROM customers", summary{}},
	{"configured but not encrypted", "SELECT note FROM customers ORDER BY note, lower(note)", summary{}},
	{"explain", "EXPLAIN SELECT ssn FROM customers", summary{Reads: p(ssn)}},
	{"join alias", "SELECT j.ssn FROM (customers c JOIN orders o ON o.cid = c.id) AS j WHERE j.email = $1",
		summary{Params: p("$1:blind-index:" + email), Blind: p("«j.email»:" + email), Reads: p(ssn)}},
	{"nested casts", "INSERT INTO customers (ssn, email) VALUES ('a'::text::varchar(3), CAST(CAST('b' AS text) AS varchar))",
		summary{Literals: p("«'a'::text::varchar(3)»=a:encrypt:"+ssn, "«CAST(CAST('b' AS text) AS varchar)»=b:encrypt:"+email)}},
	{"unicode and dollar", "UPDATE customers SET email = U&'\\0041' WHERE email = $tag$x$tag$",
		summary{Literals: p("«U&'\\0041'»=A:encrypt:"+email, "«$tag$x$tag$»=x:blind-index:"+email), Blind: p("«email»:" + email)}},
	{"on conflict where", "INSERT INTO customers AS c (id, ssn) SELECT id, ssn FROM customers_archive ON CONFLICT (id) DO UPDATE SET ssn = EXCLUDED.ssn WHERE c.email = 'x'",
		summary{Literals: p("«'x'»=x:blind-index:" + email), Blind: p("«c.email»:" + email)}},
	{"table statement", "TABLE customers", summary{Reads: p(ssn, email)}},
	{"count filter window", "SELECT count(ssn) FILTER (WHERE email = $1) OVER (PARTITION BY id) FROM customers",
		summary{Params: p("$1:blind-index:" + email), Blind: p("«email»:" + email)}},
	{"declare cursor", "DECLARE cur CURSOR FOR SELECT ssn FROM customers", summary{Reads: p(ssn)}},
	{"create view", "CREATE VIEW v AS SELECT id FROM customers WHERE email = 'x'",
		summary{Literals: p("«'x'»=x:blind-index:" + email), Blind: p("«email»:" + email)}},
	{"having count", "SELECT id FROM customers GROUP BY id HAVING count(ssn) > 1", summary{}},
	{"correlated outer ref", "SELECT o.id FROM orders o WHERE o.x = (SELECT count(*) FROM customers c WHERE c.email = $1 AND c.id = o.cid)",
		summary{Params: p("$1:blind-index:" + email), Blind: p("«c.email»:" + email)}},
	{"string continuation and uescape", "INSERT INTO customers (ssn, email) VALUES ('12'\n'34', U&'d!0061t' UESCAPE '!')",
		summary{Literals: p("«'12'\n'34'»=1234:encrypt:"+ssn, "«U&'d!0061t' UESCAPE '!'»=dat:encrypt:"+email)}},
	{"spaced casts", "INSERT INTO customers (ssn, email) VALUES ('1'::\"varchar\"(3), '2' :: text [ ])",
		summary{Literals: p("«'1'::\"varchar\"(3)»=1:encrypt:"+ssn, "«'2' :: text [ ]»=2:encrypt:"+email)}},
	{"lateral", "SELECT x.ssn FROM orders o, LATERAL (SELECT ssn FROM customers c WHERE c.id = o.customer_id) x", summary{Reads: p(ssn)}},
}

func TestAnalyzeSupported(t *testing.T) {
	cat := testCatalog()
	for _, tc := range supported {
		t.Run(tc.name, func(t *testing.T) {
			plan, err := Analyze(tc.sql, cat, nil)
			if err != nil {
				t.Fatalf("%s: %v", tc.sql, err)
			}
			if got := summarize(tc.sql, plan); !got.equal(tc.want) {
				t.Fatalf("%s\n got %s\nwant %s", tc.sql, got, tc.want)
			}
			for _, st := range plan.Statements {
				if st.Decrypts != (len(st.Reads) > 0) || (st.Decrypts && st.Fingerprint == "") {
					t.Fatalf("statement %+v: Decrypts/Fingerprint inconsistent", st)
				}
			}
		})
	}
}

type refusedCase struct {
	sql, column, construct string
}

var refused = []refusedCase{
	{"SELECT id FROM customers ORDER BY ssn", ssn, "ORDER BY"},
	{"SELECT id, ssn FROM customers ORDER BY 2 DESC", ssn, "ORDER BY"},
	{"SELECT ssn AS s FROM customers ORDER BY s", ssn, "ORDER BY"},
	{"SELECT ssn, count(*) FROM customers GROUP BY ssn", ssn, "GROUP BY"},
	{"SELECT DISTINCT ssn FROM customers", ssn, "DISTINCT"},
	{"SELECT DISTINCT ON (email) id FROM customers", email, "DISTINCT ON"},
	{"SELECT id FROM customers WHERE ssn = $1", ssn, "comparison ="},
	{"SELECT id FROM customers WHERE ssn = '1'", ssn, "comparison ="},
	{"SELECT id FROM customers WHERE email < $1", email, "comparison <"},
	{"SELECT id FROM customers WHERE email <> 'x'", email, "comparison <>"},
	{"SELECT id FROM customers WHERE ssn BETWEEN 'a' AND 'b'", ssn, "BETWEEN"},
	{"SELECT id FROM customers WHERE ssn LIKE 'x%'", ssn, "LIKE"},
	{"SELECT id FROM customers WHERE email ILIKE 'x%'", email, "ILIKE"},
	{"SELECT id FROM customers WHERE ssn SIMILAR TO 'x'", ssn, "SIMILAR TO"},
	{"SELECT lower(ssn) FROM customers", ssn, "function lower()"},
	{"SELECT ssn || 'x' FROM customers", ssn, "concatenation ||"},
	{"SELECT ssn::text FROM customers", ssn, "cast ::text"},
	{"SELECT count(DISTINCT ssn) FROM customers", ssn, "function count(DISTINCT …)"},
	{"SELECT COALESCE(ssn, 'x') FROM customers", ssn, "COALESCE"},
	{"SELECT CASE WHEN id > 1 THEN ssn END FROM customers", ssn, "CASE"},
	{"SELECT row_number() OVER (ORDER BY ssn) FROM customers", ssn, "window ORDER BY"},
	{"SELECT c.id FROM customers c JOIN customers_archive a ON c.email = a.ssn", email, "comparison with another column"},
	{"SELECT id FROM customers WHERE email = name", email, "comparison with another column"},
	{"SELECT id FROM customers WHERE email = lower($1)", email, "comparison with an expression"},
	{"SELECT id FROM customers WHERE email NOT IN ('a')", email, "NOT IN"},
	{"SELECT id FROM customers WHERE ssn IN ('a')", ssn, "IN"},
	{"SELECT id FROM customers WHERE ssn IN (SELECT ssn FROM customers_archive)", ssn, "IN (subquery)"},
	{"SELECT (SELECT ssn FROM customers LIMIT 1)", ssn, "scalar subquery"},
	{"SELECT ssn FROM customers UNION ALL SELECT ssn FROM customers_archive", ssn, "UNION"},
	{"SELECT * FROM customers JOIN customers_archive USING (ssn)", ssn, "JOIN USING"},
	{"SELECT x FROM (SELECT ssn AS x FROM customers) s WHERE x LIKE 'a%'", ssn, "LIKE"},
	{"WITH c AS (SELECT email FROM customers) SELECT 1 FROM c WHERE email > 'a'", email, "comparison >"},
	{"SELECT card + 1 FROM app.customers", "app.customers.card", "arithmetic +"},
	{"INSERT INTO customers VALUES (1, 'x')", ssn, "INSERT without a column list"},
	{"INSERT INTO customers (ssn) VALUES (lower($1))", ssn, "function lower()"},
	{"INSERT INTO customers (ssn) VALUES ($1::text)", ssn, "cast of a parameter"},
	{"INSERT INTO customers (ssn, name) VALUES ($1, $1)", ssn, "one parameter for an encrypted and a plaintext use"},
	{"INSERT INTO customers (ssn) SELECT email FROM customers", email, "INSERT … SELECT from another column"},
	{"INSERT INTO customers (ssn) SELECT name FROM people", ssn, "INSERT … SELECT from another column"},
	{"INSERT INTO people (name) SELECT ssn FROM customers", ssn, "INSERT … SELECT into another column"},
	{"INSERT INTO customers (id, ssn) VALUES (1, $1) ON CONFLICT (ssn) DO NOTHING", ssn, "ON CONFLICT on an encrypted column"},
	{"INSERT INTO customers (id, ssn) VALUES (1, $1) ON CONFLICT (id) DO UPDATE SET ssn = EXCLUDED.email", email, "assignment from another column"},
	{"UPDATE customers SET ssn = email", email, "assignment from another column"},
	{"UPDATE customers SET ssn = ssn || 'x'", ssn, "concatenation ||"},
	{"UPDATE customers SET (ssn, id) = ($1, $2)", ssn, "multi-column assignment"},
	{"UPDATE customers SET name = ssn", ssn, "assignment to another column"},
	{"DELETE FROM customers WHERE ssn > $1", ssn, "comparison >"},
	{"COPY customers FROM STDIN", ssn, "COPY"},
	{"COPY customers (id, email) TO STDOUT", email, "COPY"},
	{"COPY (SELECT ssn FROM customers) TO STDOUT", ssn, "COPY"},
	{"PREPARE p AS INSERT INTO customers (ssn) VALUES ($1)", ssn, "SQL PREPARE with parameters"},
	{"MERGE INTO customers c USING src s ON c.id = s.id WHEN MATCHED THEN UPDATE SET ssn = s.v", ssn, "MERGE"},
	{`SELECT id FROM "MixedCase" WHERE "Secret" > 'a'`, secret, "comparison >"},
	{"SELECT c FROM customers c", ssn, "whole-row reference"},
	{"INSERT INTO customers (ssn) VALUES (B'101')", ssn, "bit-string literal"},
	{"INSERT INTO customers (ssn) VALUES ('a' COLLATE \"C\")", ssn, "COLLATE"},
	{"SELECT * FROM customers NATURAL JOIN customers_archive", ssn, "NATURAL JOIN"},
	{"SELECT 1 FROM customers WHERE ssn IS DISTINCT FROM $1", ssn, "IS DISTINCT FROM"},
	{"SELECT 1 FROM customers WHERE email NOT BETWEEN $1 AND $2", email, "NOT BETWEEN"},
	{"SELECT * FROM (SELECT ssn FROM customers) s ORDER BY 1", ssn, "ORDER BY position"},
	{"UPDATE customers SET ssn = (SELECT ssn FROM customers_archive LIMIT 1)", archive, "scalar subquery"},
	{"SELECT id FROM customers GROUP BY ROLLUP (email)", email, "expression grouping_set"},
	{"SELECT id FROM customers WINDOW w AS (ORDER BY ssn)", ssn, "expression sort_by"},
	{"PREPARE q AS SELECT ssn FROM customers WHERE email = $1", email, "SQL PREPARE with parameters"},
	{"INSERT INTO customers (id, ssn) VALUES (1, $0)", ssn, "parameter $0"},
	{"SELECT row_to_json(customers) FROM customers", ssn, "whole-row reference"},
	{"INSERT INTO customers (ssn) VALUES (interval '1' day)", ssn, "literal form"},
	{"SELECT id FROM customers WHERE email = $1 AND ssn IS NULL AND email = ANY($2)", email, "= ANY"},
	{"UPDATE customers SET email = $1 WHERE email = $1", email, "one parameter for two different encrypted uses"},
	{"WITH u AS (UPDATE customers SET ssn = $1 RETURNING ssn) SELECT ssn FROM u ORDER BY 1", ssn, "ORDER BY"},
	{"SELECT * FROM customers c, LATERAL unnest(ARRAY[c.ssn]) u", ssn, "ARRAY[]"},
	{"SELECT max(ssn) FROM customers", ssn, "function max()"},
}

func TestAnalyzeRefused(t *testing.T) {
	cat := testCatalog()
	for _, tc := range refused {
		t.Run(tc.sql, func(t *testing.T) {
			plan, err := Analyze(tc.sql, cat, nil)
			if plan != nil {
				t.Fatalf("refused statement returned a plan")
			}
			mustRefusal(t, tc.sql, err, tc.column, tc.construct)
		})
	}
}

var otherTables = []string{
	"SELECT * FROM orders WHERE name LIKE 'x%' ORDER BY 1",
	"INSERT INTO orders VALUES (1, 'x')",
	"UPDATE orders SET ssn = 'x' WHERE ssn < 'y'",
	"DELETE FROM orders WHERE total > 10",
	"COPY orders FROM STDIN",
	"COPY customers (id, name) FROM STDIN",
	"SELECT ssn FROM other.customers ORDER BY ssn",
	"SELECT lower(ssn) FROM customers_log",
	"CREATE TABLE t (id int)",
	"SET search_path = app",
	"BEGIN",
}

func TestAnalyzeOtherTablesEmpty(t *testing.T) {
	cat := testCatalog()
	for _, sql := range otherTables {
		plan, err := Analyze(sql, cat, nil)
		if err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
		if !plan.Empty() || len(plan.Statements) != 1 {
			t.Fatalf("%s: want an empty plan, got %s", sql, summarize(sql, plan))
		}
	}
}

func TestSearchPath(t *testing.T) {
	cat := testCatalog()
	sql := "SELECT card, ssn FROM customers"
	cases := []struct {
		path []string
		want []string
	}{
		{nil, p(ssn)},
		{[]string{"public"}, p(ssn)},
		{[]string{"app", "public"}, p("app.customers.card")},
		{[]string{"$user", "pg_catalog", "app"}, p("app.customers.card")},
		{[]string{"other"}, nil},
	}
	for _, tc := range cases {
		plan, err := Analyze(sql, cat, tc.path)
		if err != nil {
			t.Fatalf("%v: %v", tc.path, err)
		}
		if got := summarize(sql, plan).Reads; !eqStrings(got, tc.want) {
			t.Fatalf("search_path %v: reads %q, want %q", tc.path, got, tc.want)
		}
	}
	// Unqualified secrets resolves only through search_path.
	if _, err := Analyze("SELECT id FROM secrets ORDER BY token", cat, []string{"app"}); err == nil {
		t.Fatal("app.secrets via search_path: want refusal")
	}
	if _, err := Analyze("SELECT id FROM secrets ORDER BY token", cat, nil); err != nil {
		t.Fatalf("secrets not on search_path: %v", err)
	}
}

func TestMultiStatement(t *testing.T) {
	sql := "INSERT INTO customers (ssn) VALUES ('a'); SELECT ssn FROM customers;\nUPDATE orders SET x = 1"
	plan, err := Analyze(sql, testCatalog(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(plan.Statements) != 3 {
		t.Fatalf("got %d statements", len(plan.Statements))
	}
	kinds := []string{"INSERT", "SELECT", "UPDATE"}
	texts := []string{"INSERT INTO customers (ssn) VALUES ('a')", "SELECT ssn FROM customers", "UPDATE orders SET x = 1"}
	for i, st := range plan.Statements {
		got := sql[st.Span.Offset:st.Span.End()]
		if st.Kind != kinds[i] || trimSpace(got) != texts[i] {
			t.Fatalf("statement %d: %s %q", i, st.Kind, got)
		}
	}
	if plan.Statements[0].Decrypts || !plan.Statements[1].Decrypts || plan.Statements[2].Decrypts {
		t.Fatalf("Decrypts wrong: %+v", plan.Statements)
	}
	want := summary{Literals: p("«'a'»=a:encrypt:" + ssn), Reads: p(ssn)}
	if got := summarize(sql, plan); !got.equal(want) {
		t.Fatalf("got %s want %s", got, want)
	}
	// One refused statement refuses the whole text.
	_, err = Analyze("SELECT 1; SELECT id FROM customers ORDER BY ssn", testCatalog(), nil)
	mustRefusal(t, "multi", err, ssn, "ORDER BY")
}

func trimSpace(s string) string {
	for len(s) > 0 && (s[0] == ' ' || s[0] == '\n') {
		s = s[1:]
	}
	return s
}

func TestParseErrorHasNoText(t *testing.T) {
	_, err := Analyze("INSERT INTO customers (ssn) VALUES ('123-45-6789' 'oops", testCatalog(), nil)
	var pe *ParseError
	if !errors.As(err, &pe) {
		t.Fatalf("want *ParseError, got %v", err)
	}
	for _, s := range []string{"123", "oops"} {
		if strings.Contains(err.Error(), s) {
			t.Fatalf("parse error %q leaks statement text", err)
		}
	}
}

func TestDeepNesting(t *testing.T) {
	sql := "SELECT id FROM customers WHERE id = 1" + strings.Repeat(" + 1", 400)
	if _, err := Analyze(sql, testCatalog(), nil); err != nil {
		t.Fatalf("400 nested operators: %v", err)
	}
	sql = "SELECT 1 FROM customers WHERE " + strings.Repeat("lower(", 300) + "ssn" + strings.Repeat(")", 300) + " IS NULL"
	_, err := Analyze(sql, testCatalog(), nil)
	var r *Refusal
	var pe *ParseError
	if !errors.As(err, &r) && !errors.As(err, &pe) {
		t.Fatalf("deeply nested function over ssn: %v", err)
	}
}
