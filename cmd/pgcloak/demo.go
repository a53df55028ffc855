package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

const demoTimeout = time.Minute

// runDemo is the scripted round trip of `pgcloak dev --demo` (and `make
// demo`): it talks to PostgreSQL only through the proxy at dsn, in both the
// extended and the simple protocol, and prints every step.
func runDemo(ctx context.Context, w io.Writer, dsn string) error {
	ctx, cancel := context.WithTimeout(ctx, demoTimeout)
	defer cancel()
	step := func(format string, args ...any) { fmt.Fprintf(w, "  ✓ "+format+"\n", args...) }
	fmt.Fprintln(w, "Demo: a round trip through pgcloak")

	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return fmt.Errorf("demo: connect through the proxy: %w", err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	var version, user string
	if err := conn.QueryRow(ctx, "SELECT current_setting('server_version'), current_user").Scan(&version, &user); err != nil {
		return fmt.Errorf("demo: %w", err)
	}
	step("connected as %q (SCRAM-SHA-256, relayed by the proxy) to PostgreSQL %s", user, version)

	if _, err := conn.Exec(ctx, `CREATE TABLE customers (
		id    int GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
		name  text NOT NULL,
		email text,
		since date NOT NULL DEFAULT current_date)`); err != nil {
		return fmt.Errorf("demo: create table: %w", err)
	}
	step("CREATE TABLE customers")

	people := [][2]string{{"Ada Lovelace", "ada@example.org"}, {"Alan Turing", "alan@example.org"}, {"Grace Hopper", "grace@example.org"}}
	var ids []string
	for _, p := range people {
		var id int
		if err := conn.QueryRow(ctx, "INSERT INTO customers (name, email) VALUES ($1, $2) RETURNING id", p[0], p[1]).Scan(&id); err != nil {
			return fmt.Errorf("demo: insert: %w", err)
		}
		ids = append(ids, fmt.Sprint(id))
	}
	step("INSERT … RETURNING id with parameters (extended protocol, prepared): ids %s", strings.Join(ids, ", "))

	batch := &pgx.Batch{}
	batch.Queue("UPDATE customers SET email = upper(email) WHERE id = $1", 1)
	batch.Queue("UPDATE customers SET email = NULL WHERE id = $1", 3)
	if err := conn.SendBatch(ctx, batch).Close(); err != nil {
		return fmt.Errorf("demo: batch: %w", err)
	}
	step("two UPDATEs pipelined in one batch")

	rows, err := conn.Query(ctx, "SELECT id, name, coalesce(email, '(null)') FROM customers ORDER BY id", pgx.QueryExecModeSimpleProtocol)
	if err != nil {
		return fmt.Errorf("demo: select: %w", err)
	}
	var lines []string
	for rows.Next() {
		var id int
		var name, email string
		if err := rows.Scan(&id, &name, &email); err != nil {
			return fmt.Errorf("demo: select: %w", err)
		}
		lines = append(lines, fmt.Sprintf("      %d | %-12s | %s", id, name, email))
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("demo: select: %w", err)
	}
	step("SELECT (simple protocol) returned %d rows:", len(lines))
	for _, l := range lines {
		fmt.Fprintln(w, l)
	}

	tx, err := conn.Begin(ctx)
	if err != nil {
		return fmt.Errorf("demo: begin: %w", err)
	}
	if _, err := tx.Exec(ctx, "INSERT INTO customers (name) VALUES ('Nobody')"); err != nil {
		return fmt.Errorf("demo: insert in transaction: %w", err)
	}
	_, failed := tx.Exec(ctx, "SELECT 1 / 0")
	if err := tx.Rollback(ctx); err != nil {
		return fmt.Errorf("demo: rollback: %w", err)
	}
	var pgErr *pgconn.PgError
	if !errors.As(failed, &pgErr) {
		return fmt.Errorf("demo: expected a server error from 1/0, got %v", failed)
	}
	var count int
	if err := conn.QueryRow(ctx, "SELECT count(*) FROM customers").Scan(&count); err != nil {
		return fmt.Errorf("demo: count: %w", err)
	}
	step("a transaction hit %q (SQLSTATE %s) and was rolled back; still %d rows", pgErr.Message, pgErr.Code, count)

	if _, err := conn.Exec(ctx, "DROP TABLE customers"); err != nil {
		return fmt.Errorf("demo: drop table: %w", err)
	}
	step("DROP TABLE customers")
	return nil
}
