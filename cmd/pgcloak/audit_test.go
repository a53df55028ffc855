package main

import (
	"context"
	"fmt"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgcloak/pgcloak/internal/pgtest"
)

func testAuditVerifyTamper(t *testing.T, c *pgtest.Cluster) {
	e := newKeysEnv(t, c, localConfig)
	e.ok("keys", "init")
	e.ok("keys", "rotate", "internal")
	e.ok("keys", "rotate", "internal:search")
	e.ok("keys", "set-state", "internal", "1", "retired", "--yes", "--dsn", e.dsn)

	type report struct {
		Intact   bool  `json:"intact"`
		Tampered bool  `json:"tampered"`
		Entries  int64 `json:"entries"`
		LastCP   int64 `json:"last_verified_checkpoint"`
		Problems []struct {
			Kind   string `json:"kind"`
			Seq    int64  `json:"seq"`
			Detail string `json:"detail"`
		} `json:"problems"`
	}
	ok := decodeJSON[report](t, e.ok("audit", "verify", "--json"))
	if !ok.Intact || ok.Tampered || ok.Entries < 8 || ok.LastCP != ok.Entries || len(ok.Problems) != 0 {
		t.Fatalf("audit verify --json on an intact log: %+v", ok)
	}
	out := e.ok("audit", "verify")
	if want := fmt.Sprintf("audit chain intact: %d entries, last checkpoint at seq %d\n", ok.Entries, ok.LastCP); out != want {
		t.Errorf("audit verify:\n%s\nwant:\n%s", out, want)
	}

	// Edit one entry behind the triggers' back, as the owner could.
	const seq = 5
	actor := e.queryString(fmt.Sprintf("SELECT actor FROM pgcloak.audit_log WHERE seq = %d", seq))
	e.exec("SET session_replication_role = replica",
		fmt.Sprintf("UPDATE pgcloak.audit_log SET actor = 'mallory' WHERE seq = %d", seq))
	all := e.fails(exitRuntime, fmt.Sprintf(`audit log was tampered with: \d+ finding\(s\), first at seq %d \(edited\)`, seq), "audit", "verify")
	if !strings.Contains(all, fmt.Sprintf("seq %d: edited: entry %d was edited: its content does not match its hash", seq, seq)) ||
		!strings.Contains(all, "audit chain TAMPERED") {
		t.Errorf("audit verify after an edit:\n%s", all)
	}
	code, stdout, _ := e.cli("audit", "verify", "--json")
	bad := decodeJSON[report](t, stdout)
	if code != exitRuntime || bad.Intact || !bad.Tampered || len(bad.Problems) == 0 || bad.Problems[0].Seq != seq || bad.Problems[0].Kind != "edited" {
		t.Errorf("audit verify --json after an edit: exit %d, %+v", code, bad)
	}

	// Put it back, then delete an entry.
	e.exec("SET session_replication_role = replica",
		fmt.Sprintf("UPDATE pgcloak.audit_log SET actor = %s WHERE seq = %d", quoteSQL(actor), seq),
		"DELETE FROM pgcloak.audit_log WHERE seq = 3")
	all = e.fails(exitRuntime, `first at seq 3 \(missing\)`, "audit", "verify")
	if !strings.Contains(all, "seq 3: missing: entries 3 to 3 are missing (deleted)") {
		t.Errorf("audit verify after a deletion:\n%s", all)
	}
}

func quoteSQL(s string) string { return "'" + strings.ReplaceAll(s, "'", "''") + "'" }

// queryString runs a one-value query as the superuser.
func (e *keysEnv) queryString(sql string) string {
	e.t.Helper()
	conn, err := pgx.Connect(e.ctx, e.dsn)
	if err != nil {
		e.t.Fatal(err)
	}
	defer conn.Close(context.Background())
	var s string
	if err := conn.QueryRow(e.ctx, sql).Scan(&s); err != nil {
		e.t.Fatalf("%s: %v", sql, err)
	}
	return s
}

func testAuditTail(t *testing.T, c *pgtest.Cluster) {
	e := newKeysEnv(t, c, localConfig)
	e.ok("keys", "init", "--actor", "init@test")
	e.ok("keys", "rotate", "internal", "--reason", "quarterly", "--actor", "bob@test")
	type entry struct {
		Seq      int64             `json:"seq"`
		At       time.Time         `json:"at"`
		Actor    string            `json:"actor"`
		DBUser   string            `json:"db_user"`
		Event    string            `json:"event"`
		Keyring  string            `json:"keyring"`
		Version  uint32            `json:"version"`
		Details  map[string]string `json:"details"`
		PrevHash string            `json:"prev_hash"`
		Hash     string            `json:"hash"`
	}
	es := decodeJSON[[]entry](t, e.ok("audit", "tail", "-n", "3", "--json"))
	if len(es) != 3 {
		t.Fatalf("audit tail -n 3: %d entries", len(es))
	}
	last := es[2]
	if last.Event != "key.rotate" || last.Actor != "bob@test" || last.Keyring != "internal" || last.Version != 2 ||
		last.Details["reason"] != "quarterly" || last.DBUser != "postgres" || len(last.Hash) != 64 || es[1].Hash != last.PrevHash {
		t.Errorf("last audit entry: %+v (previous %+v)", last, es[1])
	}
	if es[0].Seq+2 != last.Seq {
		t.Errorf("tail is not the last 3 entries in order: %d…%d", es[0].Seq, last.Seq)
	}
	table := e.ok("audit", "tail")
	if !regexp.MustCompile(`(?m)^SEQ\s+AT\s+ACTOR\s+DB USER\s+EVENT\s+KEYRING\s+VERSION\s+DETAILS$`).MatchString(table) ||
		!regexp.MustCompile(fmt.Sprintf(`(?m)^%d\s+\S+ \S+\s+bob@test\s+postgres\s+key\.rotate\s+internal\s+2\s+previous=1 previous_state=decrypt_only reason=quarterly$`, last.Seq)).MatchString(table) {
		t.Errorf("audit tail table:\n%s", table)
	}
	if lines := strings.Count(table, "\n"); lines != int(last.Seq)+1 {
		t.Errorf("audit tail (default 20) printed %d lines for %d entries:\n%s", lines, last.Seq, table)
	}
	e.fails(exitUsage, `-n: 0 is outside`, "audit", "tail", "-n", "0")
}
