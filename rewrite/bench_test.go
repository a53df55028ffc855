package rewrite

import "testing"

const (
	benchInsert = "INSERT INTO customers (id, name, ssn, email) VALUES ($1, $2, $3, $4) RETURNING id"
	benchSelect = "SELECT c.id, c.ssn, o.total FROM customers c JOIN orders o ON o.customer_id = c.id WHERE c.email = $1 AND o.total > 10"
)

func BenchmarkAnalyzeInsert(b *testing.B) {
	cat := testCatalog()
	for b.Loop() {
		if _, err := Analyze(benchInsert, cat, nil); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkAnalyzeSelect(b *testing.B) {
	cat := testCatalog()
	for b.Loop() {
		if _, err := Analyze(benchSelect, cat, nil); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkMentionsConfiguredHit(b *testing.B) {
	cat := testCatalog()
	for b.Loop() {
		if !MentionsConfigured(benchSelect, cat) {
			b.Fatal("miss")
		}
	}
}

func BenchmarkMentionsConfiguredMiss(b *testing.B) {
	cat := testCatalog()
	sql := "SELECT abalance FROM pgbench_accounts WHERE aid = $1"
	for b.Loop() {
		if MentionsConfigured(sql, cat) {
			b.Fatal("hit")
		}
	}
}

func BenchmarkCacheHit(b *testing.B) {
	cat := testCatalog()
	c, err := NewCache(1024)
	if err != nil {
		b.Fatal(err)
	}
	if _, err := c.Analyze(benchSelect, cat, nil); err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		if _, err := c.Analyze(benchSelect, cat, nil); err != nil {
			b.Fatal(err)
		}
	}
}
