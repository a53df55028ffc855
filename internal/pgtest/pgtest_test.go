package pgtest

import (
	"context"
	"errors"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"
)

func TestClusterAuthMethods(t *testing.T) {
	c := New(t, Opts{LogStatementAll: true})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	users := []struct {
		name, pw, method string
		want             pgproto3.BackendMessage // first auth message
	}{
		{"u_scram", "s3cret'scram", MethodSCRAM, &pgproto3.AuthenticationSASL{}},
		{"u_md5", "s3cret-md5", MethodMD5, &pgproto3.AuthenticationMD5Password{}},
		{"u_clear", "s3cret-clear", MethodPassword, &pgproto3.AuthenticationCleartextPassword{}},
		{"u_trust", "", MethodTrust, &pgproto3.AuthenticationOk{}},
	}
	for _, u := range users {
		if err := c.AddUser(ctx, u.name, u.pw, u.method); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.AddUser(ctx, "bad", "x", "ident"); err == nil {
		t.Fatal("AddUser accepted an unknown method")
	}
	for _, u := range users {
		t.Run(u.method, func(t *testing.T) {
			got := firstAuthMessage(t, c.Addr(), u.name)
			if gt, wt := typeName(got), typeName(u.want); gt != wt {
				t.Fatalf("server asked %s, want %s", gt, wt)
			}
			conn, err := pgx.Connect(ctx, c.DSN(u.name, u.pw, ""))
			if err != nil {
				t.Fatalf("connect: %v", err)
			}
			defer conn.Close(ctx)
			var who string
			if err := conn.QueryRow(ctx, "SELECT current_user").Scan(&who); err != nil {
				t.Fatal(err)
			}
			if who != u.name {
				t.Fatalf("current_user = %q", who)
			}
			if u.method == MethodTrust {
				return
			}
			_, err = pgx.Connect(ctx, c.DSN(u.name, "wrong", ""))
			var pgErr *pgconn.PgError
			if !errors.As(err, &pgErr) || pgErr.Code != "28P01" {
				t.Fatalf("wrong password: got %v, want SQLSTATE 28P01", err)
			}
		})
	}

	conn, err := pgx.Connect(ctx, c.SuperDSN())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	var md5Stored bool
	if err := conn.QueryRow(ctx, "SELECT rolpassword LIKE 'md5%' FROM pg_authid WHERE rolname = 'u_md5'").Scan(&md5Stored); err != nil {
		t.Fatal(err)
	}
	if !md5Stored {
		t.Error("md5 user's password is not stored as md5")
	}
	if err := c.CreateDatabase(ctx, "app", "u_scram"); err != nil {
		t.Fatal(err)
	}
	app, err := pgx.Connect(ctx, c.DSN("u_scram", "s3cret'scram", "app"))
	if err != nil {
		t.Fatal(err)
	}
	defer app.Close(ctx)
	if _, err := app.Exec(ctx, "CREATE TABLE t (v text); INSERT INTO t VALUES ('pgtest-log-marker')"); err != nil {
		t.Fatal(err)
	}
	log, err := os.ReadFile(c.LogFile())
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(log), "pgtest-log-marker") {
		t.Error("statement not in the server log with LogStatementAll")
	}
	if strings.Contains(string(log), "s3cret") {
		t.Error("a password reached the server log")
	}
}

func TestClusterSSLAndStop(t *testing.T) {
	c := New(t, Opts{SSL: true, Conf: map[string]string{"application_name": "from-conf"}})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if c.CACertFile() == "" {
		t.Fatal("no CA file with SSL")
	}
	dsn := strings.Replace(c.SuperDSN(), "sslmode=disable", "sslmode=verify-full&sslrootcert="+c.CACertFile(), 1)
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	var ssl bool
	if err := conn.QueryRow(ctx, "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()").Scan(&ssl); err != nil {
		t.Fatal(err)
	}
	if !ssl {
		t.Error("connection is not encrypted")
	}
	var fsync, maxConn string
	if err := conn.QueryRow(ctx, "SELECT current_setting('fsync'), current_setting('max_connections')").Scan(&fsync, &maxConn); err != nil {
		t.Fatal(err)
	}
	if fsync != "off" || maxConn != "300" {
		t.Errorf("fsync=%s max_connections=%s", fsync, maxConn)
	}
	conn.Close(ctx)

	dir := c.DataDir()
	if err := c.Stop(); err != nil {
		t.Fatal(err)
	}
	if err := c.Stop(); err != nil {
		t.Fatalf("second Stop: %v", err)
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("data dir still there: %v", err)
	}
	if nc, err := net.DialTimeout("tcp", c.Addr(), time.Second); err == nil {
		nc.Close()
		t.Error("server still accepting after Stop")
	}
}

func TestFindBinary(t *testing.T) {
	if _, err := FindBinary("no-such-binary-pgtest"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("got %v, want ErrNotFound", err)
	}
	if _, err := FindBinary("../postgres"); err == nil {
		t.Fatal("accepted a path")
	}
}

// firstAuthMessage starts a session for user and returns the server's
// first authentication request.
func firstAuthMessage(t *testing.T, addr, user string) pgproto3.BackendMessage {
	t.Helper()
	nc, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	_ = nc.SetDeadline(time.Now().Add(10 * time.Second))
	fe := pgproto3.NewFrontend(nc, nc)
	fe.Send(&pgproto3.StartupMessage{ProtocolVersion: pgproto3.ProtocolVersionNumber, Parameters: map[string]string{"user": user, "database": "postgres"}})
	if err := fe.Flush(); err != nil {
		t.Fatal(err)
	}
	msg, err := fe.Receive()
	if err != nil {
		t.Fatal(err)
	}
	return msg
}

func typeName(m pgproto3.BackendMessage) string {
	switch m.(type) {
	case *pgproto3.AuthenticationOk:
		return "AuthenticationOk"
	case *pgproto3.AuthenticationCleartextPassword:
		return "CleartextPassword"
	case *pgproto3.AuthenticationMD5Password:
		return "MD5Password"
	case *pgproto3.AuthenticationSASL:
		return "SASL"
	case *pgproto3.ErrorResponse:
		return "ErrorResponse"
	}
	return "other"
}
