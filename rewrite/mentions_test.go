package rewrite

import (
	"errors"
	"testing"
)

func TestMentionsConfiguredNoFalseNegatives(t *testing.T) {
	cat := testCatalog()
	corpus := []string{
		"SELECT * FROM CUSTOMERS",
		"select * from Customers c",
		`SELECT * FROM "customers"`,
		"SELECT * FROM public . customers",
		"SELECT * FROM/*c*/customers",
		"SELECT * FROM\tcustomers;",
		`SELECT "Secret" FROM "MixedCase"`,
		`SELECT 1 FROM "Mixed""Case"`, // not configured, but must not crash
		`SELECT * FROM U&"\0063ustomers"`,
		"DO $$ BEGIN INSERT INTO customers (ssn) VALUES ('x'); END $$",
		"SELECT token FROM app.secrets",
		"SELECT token FROM secrets",
		"DO $$BEGIN EXECUTE $q$DELETE FROM$q$||$q$ customers$q$; END$$",
		"SELECT $$x$$||(SELECT count(*) FROM$$customers$$)",
	}
	for _, tc := range supported {
		corpus = append(corpus, tc.sql)
	}
	for _, tc := range refused {
		corpus = append(corpus, tc.sql)
	}
	for _, sql := range corpus {
		plan, err := Analyze(sql, cat, []string{"app", "public"})
		var r *Refusal
		touches := errors.As(err, &r) || (err == nil && !plan.Empty())
		if touches && !MentionsConfigured(sql, cat) {
			t.Errorf("false negative: %s", sql)
		}
	}
	for _, sql := range []string{
		"SELECT * FROM CUSTOMERS", `SELECT * FROM U&"\0063ustomers"`,
		"DO $$ BEGIN INSERT INTO customers (ssn) VALUES ('x'); END $$", `SELECT 1 FROM "MixedCase"`,
		"DO $$BEGIN EXECUTE $q$DELETE FROM$q$||$q$ customers$q$; END$$",
	} {
		if !MentionsConfigured(sql, cat) {
			t.Errorf("false negative: %s", sql)
		}
	}
	// It must be able to say no, or the fast path is useless.
	for _, sql := range []string{"SELECT * FROM orders WHERE id = $1", "INSERT INTO orders VALUES (1, 'x')", "BEGIN", `SELECT 1 FROM "mixedcase"`} {
		if MentionsConfigured(sql, cat) {
			t.Errorf("false positive on %q", sql)
		}
	}
}
