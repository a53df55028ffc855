package main

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/pgcloak/pgcloak/crypto/envelope"
	"github.com/pgcloak/pgcloak/keyring"
)

// runEncryptionDemo is the point of the product, end to end: the
// application writes and reads plaintext through pgcloak (proxyDSN) while
// PostgreSQL (directDSN, bypassing pgcloak) holds only ciphertext naming its
// key version; a key rotation behind live traffic; a refused statement; the
// leak guard; the audit chain.
func runEncryptionDemo(ctx context.Context, w io.Writer, proxyDSN, directDSN string, store *keyring.Store) error {
	ctx, cancel := context.WithTimeout(ctx, demoTimeout)
	defer cancel()
	step := func(format string, args ...any) { fmt.Fprintf(w, "  ✓ "+format+"\n", args...) }
	fmt.Fprintln(w, "\nDemo: transparent column encryption (patients.ssn and patients.birth_date)")

	app, err := pgx.Connect(ctx, proxyDSN)
	if err != nil {
		return fmt.Errorf("demo: connect through the proxy: %w", err)
	}
	defer app.Close(context.WithoutCancel(ctx))
	direct, err := pgx.Connect(ctx, directDSN)
	if err != nil {
		return fmt.Errorf("demo: connect directly: %w", err)
	}
	defer direct.Close(context.WithoutCancel(ctx))

	ring, err := store.Keyring(ctx, "confidential")
	if err != nil {
		return fmt.Errorf("demo: %w", err)
	}
	v1, err := store.ActiveVersion(ctx, ring.Name)
	if err != nil {
		return fmt.Errorf("demo: %w", err)
	}
	step("key ring %q (id %d): version %d active, its DEK wrapped by the KEK on the SoftHSM2 token", ring.Name, ring.ID, v1.Version)

	birth := func(s string) time.Time { t, _ := time.Parse("2006-01-02", s); return t }
	if _, err := app.Exec(ctx, "INSERT INTO patients (id, name, ssn, birth_date) VALUES ($1, $2, $3, $4)",
		1, "Ada Lovelace", "078-05-1120", birth("1815-12-10")); err != nil {
		return fmt.Errorf("demo: insert: %w", err)
	}
	step("INSERT with parameters (extended protocol) as the application writes it: plaintext")
	if _, err := app.Exec(ctx, "INSERT INTO patients (id, name, ssn, birth_date) VALUES (2, 'Alan Turing', '219-09-9999', '1912-06-23')",
		pgx.QueryExecModeSimpleProtocol); err != nil {
		return fmt.Errorf("demo: insert: %w", err)
	}
	step("INSERT with literals (simple protocol): pgcloak encrypted the literals inside the SQL text")

	if err := printPatients(ctx, w, app, "through pgcloak, the application reads plaintext:"); err != nil {
		return err
	}
	if err := printStored(ctx, w, direct, "directly from PostgreSQL (what the server, its logs, backups and DBAs see):"); err != nil {
		return err
	}

	v2, err := store.Rotate(ctx, ring.Name, "demo: routine rotation")
	if err != nil {
		return fmt.Errorf("demo: rotate: %w", err)
	}
	step("keys rotate: version %d active, version %d decrypt_only (NOTIFY tells the proxy)", v2.Version, v1.Version)
	// The proxy follows within about a second (NOTIFY; a short cache TTL
	// otherwise): write until a new row names the new version.
	deadline := time.Now().Add(15 * time.Second)
	for id := 3; ; id++ {
		if _, err := app.Exec(ctx, "INSERT INTO patients (id, name, ssn, birth_date) VALUES ($1, $2, $3, $4)",
			id, "Grace Hopper", "123-45-6789", birth("1906-12-09")); err != nil {
			return fmt.Errorf("demo: insert: %w", err)
		}
		var raw []byte
		if err := direct.QueryRow(ctx, "SELECT ssn FROM patients WHERE id = $1", id).Scan(&raw); err != nil {
			return fmt.Errorf("demo: %w", err)
		}
		if h, err := envelope.ParseHeader(raw); err == nil && h.KeyVersion == v2.Version {
			if id > 3 {
				if _, err := app.Exec(ctx, "DELETE FROM patients WHERE id >= 3 AND id < $1", id); err != nil {
					return fmt.Errorf("demo: %w", err)
				}
			}
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("demo: the proxy did not pick up key version %d", v2.Version)
		}
		time.Sleep(200 * time.Millisecond)
	}
	step("a new row is sealed with version %d; the old rows still read with version %d:", v2.Version, v1.Version)
	if err := printStored(ctx, w, direct, ""); err != nil {
		return err
	}
	if err := printPatients(ctx, w, app, ""); err != nil {
		return err
	}

	_, err = app.Exec(ctx, "SELECT name FROM patients ORDER BY ssn")
	var pe *pgconn.PgError
	if !errors.As(err, &pe) {
		return fmt.Errorf("demo: ORDER BY an encrypted column was not refused: %v", err)
	}
	step("refused, before reaching the server: SQLSTATE %s %q", pe.Code, pe.Message)

	_, err = direct.Exec(ctx, "INSERT INTO patients (id, name, ssn) VALUES (99, 'Bypass', convert_to('000-00-0000', 'UTF8'))")
	if !errors.As(err, &pe) {
		return fmt.Errorf("demo: a plaintext write around the proxy was accepted")
	}
	step("a plaintext write that bypasses pgcloak is rejected by the leak guard: SQLSTATE %s (%s)", pe.Code, pe.ConstraintName)

	rep, err := store.VerifyAudit(ctx)
	if err != nil {
		return fmt.Errorf("demo: audit verify: %w", err)
	}
	if len(rep.Problems) > 0 {
		return fmt.Errorf("demo: audit chain has %d problems", len(rep.Problems))
	}
	tail, err := store.AuditTail(ctx, 20)
	if err != nil {
		return fmt.Errorf("demo: audit tail: %w", err)
	}
	var events []string
	for _, e := range tail {
		events = append(events, e.Event)
	}
	step("audit log: %d hash-chained entries verify intact (%s)", rep.Entries, strings.Join(events, ", "))
	return nil
}

// printPatients prints the table as the application sees it.
func printPatients(ctx context.Context, w io.Writer, conn *pgx.Conn, title string) error {
	rows, err := conn.Query(ctx, "SELECT id, name, ssn, birth_date FROM patients ORDER BY id")
	if err != nil {
		return fmt.Errorf("demo: select through the proxy: %w", err)
	}
	if title != "" {
		fmt.Fprintf(w, "  ✓ %s\n", title)
	}
	for rows.Next() {
		var id int
		var name, ssn string
		var born time.Time
		if err := rows.Scan(&id, &name, &ssn, &born); err != nil {
			return fmt.Errorf("demo: select through the proxy: %w", err)
		}
		fmt.Fprintf(w, "      %d | %-12s | ssn %s | born %s\n", id, name, ssn, born.Format("2006-01-02"))
	}
	return rows.Err()
}

// printStored prints what PostgreSQL holds, the envelope header split.
func printStored(ctx context.Context, w io.Writer, conn *pgx.Conn, title string) error {
	rows, err := conn.Query(ctx, "SELECT id, name, ssn FROM patients ORDER BY id")
	if err != nil {
		return fmt.Errorf("demo: select directly: %w", err)
	}
	if title != "" {
		fmt.Fprintf(w, "  ✓ %s\n", title)
	}
	for rows.Next() {
		var id int
		var name string
		var raw []byte
		if err := rows.Scan(&id, &name, &raw); err != nil {
			return fmt.Errorf("demo: select directly: %w", err)
		}
		h, err := envelope.ParseHeader(raw)
		if err != nil {
			return fmt.Errorf("demo: row %d holds no envelope: %w", id, err)
		}
		x := hex.EncodeToString(raw)
		fmt.Fprintf(w, "      %d | %-12s | ssn \\x%s %s %s %s %s %s %s… (%d bytes: magic, format 1, AES-256-GCM, flags, key ring %d, key version %d, nonce…)\n",
			id, name, x[0:4], x[4:6], x[6:8], x[8:10], x[10:18], x[18:26], x[26:42], len(raw), h.KeyringID, h.KeyVersion)
	}
	return rows.Err()
}
