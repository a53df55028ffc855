package integration

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"
)

var execModes = []pgx.QueryExecMode{
	pgx.QueryExecModeCacheStatement,
	pgx.QueryExecModeCacheDescribe,
	pgx.QueryExecModeDescribeExec,
	pgx.QueryExecModeExec,
	pgx.QueryExecModeSimpleProtocol,
}

// TestPgx drives pgx through pgcloak in every QueryExecMode.
func TestPgx(t *testing.T) {
	c := shared.get(t)
	p := startProxy(t, proxyConfig{Upstream: c.Addr()})
	dsn := p.DSN(roles.scram.name, roles.scram.password, "app")
	cases := []struct {
		name string
		fn   func(t *testing.T, conn *pgx.Conn, dsn string)
	}{
		{"Queries", testQueries},
		{"Prepared", testPrepared},
		{"Batch", testBatch},
		{"CopyFrom", testCopyFrom},
		{"CopyTo", testCopyTo},
		{"ListenNotify", testListenNotify},
		{"LargeBytea", testLargeBytea},
		{"TxErrorRollback", testTxErrorRollback},
		{"Cursor", testCursor},
		{"Cancel", testCancel},
	}
	for _, mode := range execModes {
		t.Run(mode.String(), func(t *testing.T) {
			conn := connect(t, dsn, mode)
			for _, tc := range cases {
				t.Run(tc.name, func(t *testing.T) { tc.fn(t, conn, dsn) })
			}
		})
	}
}

func ctxT(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), d)
	t.Cleanup(cancel)
	return ctx
}

func testQueries(t *testing.T, conn *pgx.Conn, _ string) {
	ctx := ctxT(t, 30*time.Second)
	var sum int64
	if err := conn.QueryRow(ctx, "SELECT sum(g) FROM generate_series(1, $1::int) g", 10000).Scan(&sum); err != nil {
		t.Fatal(err)
	}
	if sum != 50005000 {
		t.Fatalf("sum = %d", sum)
	}

	ts := time.Date(2024, 2, 29, 12, 34, 56, 789000000, time.UTC)
	var (
		gotText  string
		gotBytes []byte
		gotTS    time.Time
		gotNum   pgtype.Numeric
		gotNull  *string
		gotArr   []int32
		gotJSON  map[string]any
		gotBool  bool
	)
	err := conn.QueryRow(ctx,
		"SELECT $1::text, $2::bytea, $3::timestamptz, $4::numeric, $5::text, $6::int4[], $7::jsonb, $8::bool",
		"héllo, wörld ☃ 'quoted'", []byte{0, 1, 2, 0xff}, ts, "12345.678", nil, []int32{1, 2, 3}, `{"k": "v"}`, true,
	).Scan(&gotText, &gotBytes, &gotTS, &gotNum, &gotNull, &gotArr, &gotJSON, &gotBool)
	if err != nil {
		t.Fatal(err)
	}
	if gotText != "héllo, wörld ☃ 'quoted'" || !bytes.Equal(gotBytes, []byte{0, 1, 2, 0xff}) || !gotTS.Equal(ts) ||
		gotNull != nil || fmt.Sprint(gotArr) != "[1 2 3]" || gotJSON["k"] != "v" || !gotBool {
		t.Fatalf("round trip mismatch: %q %x %v %v %v %v %v", gotText, gotBytes, gotTS, gotNull, gotArr, gotJSON, gotBool)
	}
	if f, _ := gotNum.Float64Value(); f.Float64 != 12345.678 {
		t.Fatalf("numeric = %v", f)
	}

	rows, err := conn.Query(ctx, "SELECT g, repeat('x', g) FROM generate_series(1, 500) g")
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for rows.Next() {
		var i int
		var s string
		if err := rows.Scan(&i, &s); err != nil {
			t.Fatal(err)
		}
		n++
		if i != n || len(s) != n {
			t.Fatalf("row %d: %d %d", n, i, len(s))
		}
	}
	if rows.Err() != nil || n != 500 {
		t.Fatalf("rows: %d, %v", n, rows.Err())
	}

	// A server error arrives intact and the connection stays usable.
	_, err = conn.Exec(ctx, "SELECT * FROM no_such_table_pgcloak")
	if got := sqlState(err); got != "42P01" {
		t.Fatalf("missing table: got %v (SQLSTATE %q), want 42P01", err, got)
	}
	if err := conn.QueryRow(ctx, "SELECT 1").Scan(&n); err != nil || n != 1 {
		t.Fatalf("after error: %d, %v", n, err)
	}
}

func testPrepared(t *testing.T, conn *pgx.Conn, _ string) {
	ctx := ctxT(t, 30*time.Second)
	sd, err := conn.Prepare(ctx, "add", "SELECT $1::int + $2::int, $3::text")
	if err != nil {
		t.Fatal(err)
	}
	if len(sd.ParamOIDs) != 3 || len(sd.Fields) != 2 {
		t.Fatalf("description: %d params, %d fields", len(sd.ParamOIDs), len(sd.Fields))
	}
	for i := 0; i < 20; i++ {
		var sum int
		var s string
		if err := conn.QueryRow(ctx, "add", i, 100, fmt.Sprint("v", i)).Scan(&sum, &s); err != nil {
			t.Fatal(err)
		}
		if sum != i+100 || s != fmt.Sprint("v", i) {
			t.Fatalf("got %d %q", sum, s)
		}
	}
	if err := conn.Deallocate(ctx, "add"); err != nil {
		t.Fatal(err)
	}
	// SQL-level PREPARE/EXECUTE works in every mode too.
	if _, err := conn.Exec(ctx, "PREPARE sqlprep(int) AS SELECT $1 * 2"); err != nil {
		t.Fatal(err)
	}
	var v int
	if err := conn.QueryRow(ctx, "EXECUTE sqlprep(21)").Scan(&v); err != nil || v != 42 {
		t.Fatalf("EXECUTE: %d, %v", v, err)
	}
	if _, err := conn.Exec(ctx, "DEALLOCATE sqlprep"); err != nil {
		t.Fatal(err)
	}
}

func testBatch(t *testing.T, conn *pgx.Conn, _ string) {
	ctx := ctxT(t, 30*time.Second)
	if _, err := conn.Exec(ctx, "CREATE TEMP TABLE batch_t (id int PRIMARY KEY, v text)"); err != nil {
		t.Fatal(err)
	}
	defer conn.Exec(context.Background(), "DROP TABLE IF EXISTS batch_t")
	b := &pgx.Batch{}
	const n = 200
	for i := 0; i < n; i++ {
		b.Queue("INSERT INTO batch_t VALUES ($1, $2)", i, fmt.Sprint("row", i))
	}
	b.Queue("SELECT count(*), max(id) FROM batch_t")
	b.Queue("SELECT v FROM batch_t WHERE id = $1", 7)
	br := conn.SendBatch(ctx, b)
	for i := 0; i < n; i++ {
		tag, err := br.Exec()
		if err != nil {
			t.Fatalf("insert %d: %v", i, err)
		}
		if tag.RowsAffected() != 1 {
			t.Fatalf("insert %d: %s", i, tag)
		}
	}
	var cnt, mx int
	if err := br.QueryRow().Scan(&cnt, &mx); err != nil || cnt != n || mx != n-1 {
		t.Fatalf("count: %d %d %v", cnt, mx, err)
	}
	var s string
	if err := br.QueryRow().Scan(&s); err != nil || s != "row7" {
		t.Fatalf("select: %q %v", s, err)
	}
	if err := br.Close(); err != nil {
		t.Fatal(err)
	}

	// A failing statement in the middle of a pipeline: the error reaches
	// the right result and the connection recovers.
	b = &pgx.Batch{}
	b.Queue("SELECT 1")
	b.Queue("INSERT INTO batch_t VALUES (1, 'dup')")
	b.Queue("SELECT 3")
	br = conn.SendBatch(ctx, b)
	if _, err := br.Exec(); err != nil {
		t.Fatal(err)
	}
	if _, err := br.Exec(); sqlState(err) != "23505" {
		t.Fatalf("duplicate key in batch: got %v, want 23505", err)
	}
	_ = br.Close()
	var one int
	if err := conn.QueryRow(ctx, "SELECT 1").Scan(&one); err != nil {
		t.Fatalf("after failed batch: %v", err)
	}
}

func testCopyFrom(t *testing.T, conn *pgx.Conn, _ string) {
	ctx := ctxT(t, 60*time.Second)
	if _, err := conn.Exec(ctx, "CREATE TEMP TABLE copy_t (id int, name text, data bytea)"); err != nil {
		t.Fatal(err)
	}
	defer conn.Exec(context.Background(), "DROP TABLE IF EXISTS copy_t")
	const n = 20000
	rows := make([][]any, n)
	var wantSum int64
	for i := range rows {
		rows[i] = []any{i, fmt.Sprintf("name-%d\ttab\nnewline", i), []byte{byte(i), byte(i >> 8)}}
		wantSum += int64(i)
	}
	got, err := conn.CopyFrom(ctx, pgx.Identifier{"copy_t"}, []string{"id", "name", "data"}, pgx.CopyFromRows(rows))
	if err != nil {
		t.Fatal(err)
	}
	if got != n {
		t.Fatalf("copied %d rows, want %d", got, n)
	}
	var cnt, sum int64
	var name string
	if err := conn.QueryRow(ctx, "SELECT count(*), sum(id), (SELECT name FROM copy_t WHERE id = 4242) FROM copy_t").Scan(&cnt, &sum, &name); err != nil {
		t.Fatal(err)
	}
	if cnt != n || sum != wantSum || name != "name-4242\ttab\nnewline" {
		t.Fatalf("after copy: count %d sum %d name %q", cnt, sum, name)
	}

	// A COPY that fails on the server reports the error and recovers.
	_, err = conn.CopyFrom(ctx, pgx.Identifier{"no_such_copy_table"}, []string{"id"}, pgx.CopyFromRows([][]any{{1}}))
	if got := sqlState(err); got != "42P01" {
		t.Fatalf("copy into missing table: %v", err)
	}
	if err := conn.QueryRow(ctx, "SELECT count(*) FROM copy_t").Scan(&cnt); err != nil || cnt != n {
		t.Fatalf("after failed copy: %d %v", cnt, err)
	}
}

func testCopyTo(t *testing.T, conn *pgx.Conn, _ string) {
	ctx := ctxT(t, 30*time.Second)
	var buf bytes.Buffer
	tag, err := conn.PgConn().CopyTo(ctx, &buf, "COPY (SELECT g, 'v' || g FROM generate_series(1, 3000) g) TO STDOUT")
	if err != nil {
		t.Fatal(err)
	}
	if tag.RowsAffected() != 3000 {
		t.Fatalf("tag %q", tag)
	}
	var want strings.Builder
	for i := 1; i <= 3000; i++ {
		fmt.Fprintf(&want, "%d\tv%d\n", i, i)
	}
	if buf.String() != want.String() {
		t.Fatalf("COPY TO output differs: got %d bytes, want %d", buf.Len(), want.Len())
	}
	buf.Reset()
	if _, err := conn.PgConn().CopyTo(ctx, &buf, "COPY (SELECT 1, 'a,b') TO STDOUT WITH (FORMAT csv)"); err != nil {
		t.Fatal(err)
	}
	if buf.String() != "1,\"a,b\"\n" {
		t.Fatalf("csv: %q", buf.String())
	}
}

func testListenNotify(t *testing.T, conn *pgx.Conn, dsn string) {
	ctx := ctxT(t, 30*time.Second)
	if _, err := conn.Exec(ctx, "LISTEN pgcloak_chan"); err != nil {
		t.Fatal(err)
	}
	defer conn.Exec(context.Background(), "UNLISTEN pgcloak_chan")
	other := connect(t, dsn, pgx.QueryExecModeCacheStatement)
	payload := "hello ☃ " + t.Name()
	if _, err := other.Exec(ctx, "SELECT pg_notify('pgcloak_chan', $1)", payload); err != nil {
		t.Fatal(err)
	}
	wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	n, err := conn.WaitForNotification(wctx)
	if err != nil {
		t.Fatalf("no notification: %v", err)
	}
	if n.Channel != "pgcloak_chan" || n.Payload != payload {
		t.Fatalf("notification %q %q", n.Channel, n.Payload)
	}
	var pid uint32
	if err := other.QueryRow(ctx, "SELECT pg_backend_pid()").Scan(&pid); err != nil {
		t.Fatal(err)
	}
	if n.PID != pid {
		t.Errorf("notification PID %d, sender backend %d", n.PID, pid)
	}
}

func testLargeBytea(t *testing.T, conn *pgx.Conn, _ string) {
	ctx := ctxT(t, 120*time.Second)
	val := make([]byte, 16<<20+12345)
	if _, err := rand.Read(val); err != nil {
		t.Fatal(err)
	}
	want := sha256.Sum256(val)
	if _, err := conn.Exec(ctx, "CREATE TEMP TABLE big_t (id int, v bytea)"); err != nil {
		t.Fatal(err)
	}
	defer conn.Exec(context.Background(), "DROP TABLE IF EXISTS big_t")
	if _, err := conn.Exec(ctx, "INSERT INTO big_t VALUES (1, $1)", val); err != nil {
		t.Fatal(err)
	}
	var serverSum []byte
	var n int
	if err := conn.QueryRow(ctx, "SELECT sha256(v), length(v) FROM big_t WHERE id = 1").Scan(&serverSum, &n); err != nil {
		t.Fatal(err)
	}
	if n != len(val) || !bytes.Equal(serverSum, want[:]) {
		t.Fatalf("server got %d bytes with a different hash", n)
	}
	var back []byte
	if err := conn.QueryRow(ctx, "SELECT v FROM big_t WHERE id = 1").Scan(&back); err != nil {
		t.Fatal(err)
	}
	if got := sha256.Sum256(back); got != want {
		t.Fatalf("read back %d bytes with a different hash", len(back))
	}
}

func testTxErrorRollback(t *testing.T, conn *pgx.Conn, _ string) {
	ctx := ctxT(t, 30*time.Second)
	if _, err := conn.Exec(ctx, "CREATE TEMP TABLE tx_t (v int)"); err != nil {
		t.Fatal(err)
	}
	defer conn.Exec(context.Background(), "DROP TABLE IF EXISTS tx_t")
	tx, err := conn.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, "INSERT INTO tx_t VALUES (1)"); err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, "SELECT 1/0"); sqlState(err) != "22012" {
		t.Fatalf("division by zero: got %v, want 22012", err)
	}
	if _, err := tx.Exec(ctx, "SELECT 1"); sqlState(err) != "25P02" {
		t.Fatalf("in failed tx: got %v, want 25P02", err)
	}
	if err := tx.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	var cnt int
	if err := conn.QueryRow(ctx, "SELECT count(*) FROM tx_t").Scan(&cnt); err != nil {
		t.Fatalf("after rollback: %v", err)
	}
	if cnt != 0 {
		t.Fatalf("rolled-back insert visible: %d rows", cnt)
	}
	// And a committed transaction sticks.
	if err := pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
		_, err := tx.Exec(ctx, "INSERT INTO tx_t VALUES (2)")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if err := conn.QueryRow(ctx, "SELECT count(*) FROM tx_t").Scan(&cnt); err != nil || cnt != 1 {
		t.Fatalf("after commit: %d %v", cnt, err)
	}
}

func testCursor(t *testing.T, conn *pgx.Conn, _ string) {
	ctx := ctxT(t, 30*time.Second)
	tx, err := conn.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(context.Background())
	if _, err := tx.Exec(ctx, "DECLARE cur CURSOR FOR SELECT g FROM generate_series(1, 1000) g"); err != nil {
		t.Fatal(err)
	}
	total, fetches := 0, 0
	for {
		rows, err := tx.Query(ctx, "FETCH 128 FROM cur")
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for rows.Next() {
			var v int
			if err := rows.Scan(&v); err != nil {
				t.Fatal(err)
			}
			total += v
			n++
		}
		if rows.Err() != nil {
			t.Fatal(rows.Err())
		}
		fetches++
		if n == 0 {
			break
		}
		if fetches > 20 {
			t.Fatal("cursor never ends")
		}
	}
	if total != 500500 || fetches != 9 {
		t.Fatalf("cursor: sum %d in %d fetches", total, fetches)
	}
	if _, err := tx.Exec(ctx, "CLOSE cur"); err != nil {
		t.Fatal(err)
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
}

func testCancel(t *testing.T, conn *pgx.Conn, _ string) {
	ctx, cancel := context.WithTimeout(t.Context(), 500*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := conn.Exec(ctx, "SELECT pg_sleep(30)")
	took := time.Since(start)
	if got := sqlState(err); got != "57014" {
		t.Fatalf("cancelled pg_sleep: got %v (SQLSTATE %q), want 57014", err, got)
	}
	if took > 5*time.Second {
		t.Fatalf("cancel took %v", took)
	}
	var n int
	if err := conn.QueryRow(ctxT(t, 10*time.Second), "SELECT 7").Scan(&n); err != nil || n != 7 {
		t.Fatalf("after cancel: %d %v", n, err)
	}
}
