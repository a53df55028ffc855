package rewrite

import (
	"errors"
	"testing"
)

func TestCache(t *testing.T) {
	c, err := NewCache(2)
	if err != nil {
		t.Fatal(err)
	}
	cat := testCatalog()
	q1, q2, q3 := "SELECT ssn FROM customers", "SELECT email FROM customers", "SELECT id FROM customers"
	p1, err := c.Analyze(q1, cat, nil)
	if err != nil {
		t.Fatal(err)
	}
	p1b, _ := c.Analyze(q1, cat, nil)
	if p1 != p1b {
		t.Fatal("second Analyze of the same text did not hit")
	}
	if s := c.Stats(); s.Hits != 1 || s.Misses != 1 || s.Len != 1 {
		t.Fatalf("stats %+v", s)
	}
	// search_path and generation are part of the key.
	if p, _ := c.Analyze(q1, cat, []string{"app"}); p == p1 {
		t.Fatal("different search_path shared an entry")
	}
	if p, _ := c.Analyze(q1, NewStaticCatalog(8, nil), nil); p == p1 || !p.Empty() {
		t.Fatal("new generation shared an entry")
	}
	// Bounded: q1 was evicted by the two entries above.
	c.Analyze(q2, cat, nil)
	c.Analyze(q3, cat, nil)
	if s := c.Stats(); s.Len != 2 {
		t.Fatalf("len %d, want 2", s.Len)
	}
	before := c.Stats().Misses
	c.Analyze(q1, cat, nil)
	if c.Stats().Misses != before+1 {
		t.Fatal("evicted entry counted as a hit")
	}
	// Refusals are cached too; parse errors are not.
	_, e1 := c.Analyze("SELECT ssn FROM customers ORDER BY ssn", cat, nil)
	_, e2 := c.Analyze("SELECT ssn FROM customers ORDER BY ssn", cat, nil)
	var r *Refusal
	if !errors.As(e1, &r) || e1 != e2 {
		t.Fatalf("refusal not cached: %v %v", e1, e2)
	}
	if _, err := NewCache(0); err == nil {
		t.Fatal("NewCache(0) accepted")
	}
}

func TestCacheConcurrent(t *testing.T) {
	c, err := NewCache(8)
	if err != nil {
		t.Fatal(err)
	}
	cat := testCatalog()
	sqls := []string{"SELECT ssn FROM customers", "SELECT id FROM customers ORDER BY ssn", "INSERT INTO customers (ssn) VALUES ($1)"}
	done := make(chan struct{})
	for g := 0; g < 4; g++ {
		go func() {
			defer func() { done <- struct{}{} }()
			for i := 0; i < 50; i++ {
				c.Analyze(sqls[i%len(sqls)], cat, nil)
			}
		}()
	}
	for g := 0; g < 4; g++ {
		<-done
	}
	if s := c.Stats(); s.Hits+s.Misses != 200 || s.Misses < 3 {
		t.Fatalf("stats %+v", s)
	}
}
