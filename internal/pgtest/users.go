package pgtest

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
)

// Auth methods accepted by AddUser; the spelling is pg_hba.conf's.
const (
	MethodTrust    = "trust"
	MethodPassword = "password"
	MethodMD5      = "md5"
	MethodSCRAM    = "scram-sha-256"
)

// writeHBA writes pg_hba.conf: local trust, the superuser trusted over
// loopback, one line per AddUser, then SCRAM for everybody else.
// The caller holds hbaMu (or is Start, before anyone else sees c).
func (c *Cluster) writeHBA() error {
	var b strings.Builder
	b.WriteString("# written by pgtest\n")
	b.WriteString("local all all trust\n")
	b.WriteString("host all postgres 127.0.0.1/32 trust\n")
	b.WriteString("host all postgres ::1/128 trust\n")
	for _, l := range c.hbaUsers {
		b.WriteString(l)
	}
	b.WriteString("host all all 127.0.0.1/32 scram-sha-256\n")
	b.WriteString("host all all ::1/128 scram-sha-256\n")
	p := filepath.Join(c.dataDir, "pg_hba.conf")
	if err := os.WriteFile(p, []byte(b.String()), 0o600); err != nil {
		return fmt.Errorf("pgtest: write pg_hba.conf: %w", err)
	}
	return c.chown(p)
}

// AddUser creates a login role whose password is stored for method
// ("trust", "password", "md5" or "scram-sha-256"; "password" and "trust"
// store a SCRAM verifier), adds a pg_hba.conf line for it before the
// catch-all, and reloads the configuration; it returns once new
// connections use the new rules. An empty password creates a role
// without one.
func (c *Cluster) AddUser(ctx context.Context, name, password, method string) error {
	switch method {
	case MethodTrust, MethodPassword, MethodMD5, MethodSCRAM:
	default:
		return fmt.Errorf("pgtest: add user %q: unknown auth method %q", name, method)
	}
	if name == "" || strings.ContainsAny(name, "\"\n\r\x00") {
		return fmt.Errorf("pgtest: add user: invalid role name %q", name)
	}
	c.hbaMu.Lock()
	defer c.hbaMu.Unlock()

	conn, err := pgx.Connect(ctx, c.SuperDSN())
	if err != nil {
		return fmt.Errorf("pgtest: add user %q: %w", name, err)
	}
	defer conn.Close(context.Background())

	enc := "scram-sha-256"
	if method == MethodMD5 {
		enc = "md5"
	}
	// log_statement would write the CREATE ROLE, password included, to
	// the server log.
	if _, err := conn.Exec(ctx, "SET log_statement = 'none'; SET password_encryption = '"+enc+"'"); err != nil {
		return fmt.Errorf("pgtest: add user %q: %w", name, err)
	}
	stmt := "CREATE ROLE " + pgx.Identifier{name}.Sanitize() + " LOGIN"
	if password != "" {
		stmt += " PASSWORD " + quoteLiteral(password)
	}
	// The statement holds the password: never put it in an error.
	if _, err := conn.Exec(ctx, stmt, pgx.QueryExecModeSimpleProtocol); err != nil {
		return fmt.Errorf("pgtest: add user %q: create role failed: %w", name, err)
	}

	var before time.Time
	if err := conn.QueryRow(ctx, "SELECT pg_conf_load_time()").Scan(&before); err != nil {
		return fmt.Errorf("pgtest: add user %q: %w", name, err)
	}
	c.hbaUsers = append(c.hbaUsers,
		fmt.Sprintf("host all \"%s\" 127.0.0.1/32 %s\n", name, method),
		fmt.Sprintf("host all \"%s\" ::1/128 %s\n", name, method))
	if err := c.writeHBA(); err != nil {
		return err
	}
	return c.reload(ctx, conn, before)
}

// reload asks the postmaster to re-read its files and waits until a new
// backend reports a later load time: the postmaster reloads pg_hba.conf
// in the same signal handler, so new connections then use it.
func (c *Cluster) reload(ctx context.Context, conn *pgx.Conn, before time.Time) error {
	var ok bool
	if err := conn.QueryRow(ctx, "SELECT pg_reload_conf()").Scan(&ok); err != nil || !ok {
		return fmt.Errorf("pgtest: pg_reload_conf: %v", err)
	}
	var rules int
	if err := conn.QueryRow(ctx, "SELECT count(*) FROM pg_hba_file_rules WHERE error IS NOT NULL").Scan(&rules); err != nil {
		return fmt.Errorf("pgtest: check pg_hba.conf: %w", err)
	}
	if rules != 0 {
		return fmt.Errorf("pgtest: pg_hba.conf has %d invalid lines", rules)
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	for {
		probe, err := pgx.Connect(ctx, c.SuperDSN())
		if err != nil {
			return fmt.Errorf("pgtest: wait for reload: %w", err)
		}
		var after time.Time
		err = probe.QueryRow(ctx, "SELECT pg_conf_load_time()").Scan(&after)
		probe.Close(context.Background())
		if err != nil {
			return fmt.Errorf("pgtest: wait for reload: %w", err)
		}
		if after.After(before) {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("pgtest: configuration not reloaded: %w", ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// CreateDatabase creates database name, owned by owner ("" for the
// superuser).
func (c *Cluster) CreateDatabase(ctx context.Context, name, owner string) error {
	conn, err := pgx.Connect(ctx, c.SuperDSN())
	if err != nil {
		return fmt.Errorf("pgtest: create database %q: %w", name, err)
	}
	defer conn.Close(context.Background())
	stmt := "CREATE DATABASE " + pgx.Identifier{name}.Sanitize()
	if owner != "" {
		stmt += " OWNER " + pgx.Identifier{owner}.Sanitize()
	}
	if _, err := conn.Exec(ctx, stmt); err != nil {
		return fmt.Errorf("pgtest: create database %q: %w", name, err)
	}
	return nil
}

func quoteLiteral(s string) string {
	return "'" + strings.ReplaceAll(s, "'", "''") + "'"
}
