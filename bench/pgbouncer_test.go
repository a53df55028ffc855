package bench

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgcloak/pgcloak/internal/pgtest"
)

func TestPgBouncerIni(t *testing.T) {
	ini := pgbouncerIni(PgBouncerOpts{Dir: "/d", Port: 6400, UpstreamHost: "127.0.0.1", UpstreamPort: 5499,
		DB: "bench", User: "bench", PoolSize: 37, MaxClients: 84})
	for _, want := range []string{
		"[databases]\nbench = host=127.0.0.1 port=5499 dbname=bench\n",
		"\nlisten_addr = 127.0.0.1\n", "\nlisten_port = 6400\n", "\npool_mode = session\n",
		"\nauth_type = md5\n", "\nauth_file = /d/userlist.txt\n", "\ndefault_pool_size = 37\n",
		"\nmax_client_conn = 84\n", "\nunix_socket_dir = \n",
	} {
		if !strings.Contains(ini, want) {
			t.Errorf("ini lacks %q:\n%s", want, ini)
		}
	}
	if got := pgbouncerUserlist("bench", `p"w`); got != `"bench" "p""w"`+"\n" {
		t.Errorf("userlist %q", got)
	}
}

// A real PgBouncer in front of a real cluster: md5 through the auth file,
// session pooling, a single process whose CPU we can read.
func TestStartPgBouncer(t *testing.T) {
	bin, err := FindPgBouncer()
	if err != nil {
		pgtest.Missing(t, "%v", err)
		return
	}
	c := pgtest.New(t, pgtest.Opts{})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := c.AddUser(ctx, "bench", "s3cret-pw", "md5"); err != nil {
		t.Fatal(err)
	}
	if err := c.CreateDatabase(ctx, "bench", "bench"); err != nil {
		t.Fatal(err)
	}
	// PgBouncer runs as postgres when we are root: it must traverse the
	// test's directories to its own.
	tmp := t.TempDir()
	for _, d := range []string{filepath.Dir(tmp), tmp} {
		if err := os.Chmod(d, 0o711); err != nil {
			t.Fatal(err)
		}
	}
	dir := filepath.Join(tmp, "pgb")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	port, err := freePort()
	if err != nil {
		t.Fatal(err)
	}
	b, err := StartPgBouncer(ctx, PgBouncerOpts{Binary: bin, Dir: dir, Port: port, UpstreamHost: "127.0.0.1",
		UpstreamPort: c.Port(), DB: "bench", User: "bench", Password: "s3cret-pw", PoolSize: 4, MaxClients: 8})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Stop()
	if !strings.HasPrefix(b.Version, "PgBouncer ") {
		t.Errorf("version %q", b.Version)
	}

	dsn := func(pw string) string {
		return fmt.Sprintf("postgres://bench:%s@127.0.0.1:%d/bench?sslmode=disable", pw, port)
	}
	conn, err := pgx.Connect(ctx, dsn("s3cret-pw"))
	if err != nil {
		t.Fatal(err)
	}
	var user string
	var serverPort int
	if err := conn.QueryRow(ctx, "SELECT current_user, current_setting('port')::int").Scan(&user, &serverPort); err != nil {
		t.Fatal(err)
	}
	conn.Close(ctx)
	if user != "bench" || serverPort != c.Port() {
		t.Errorf("through pgbouncer: user %q, server port %d (want %d)", user, serverPort, c.Port())
	}
	if _, err := pgx.Connect(ctx, dsn("wrong")); err == nil {
		t.Error("wrong password accepted")
	}
	if kids, err := ChildPIDs(b.PID); err != nil || len(kids) != 0 {
		t.Errorf("pgbouncer children %v (err %v)", kids, err)
	}
	if _, err := ReadProcStat(b.PID); err != nil {
		t.Error(err)
	}
	b.Stop()
	if _, err := pgx.Connect(ctx, dsn("s3cret-pw")); err == nil {
		t.Error("pgbouncer still serving after Stop")
	}
}
