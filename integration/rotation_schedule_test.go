package integration

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgcloak/pgcloak/internal/hsmtest"
	"github.com/pgcloak/pgcloak/internal/pgtest"
)

// Scheduled rotation through the real binary: two `pgcloak serve` on one
// key store (SoftHSM2 KEK), the confidential ring limited to
// schedLimit encryptions, checks every schedInterval. Rows are written
// through both proxies; exactly one proxy leads, each version is rotated
// exactly once when it reaches the limit, both proxies seal with the new
// version within seconds, every row still reads through both, and when
// the leader stops the other takes over.

const (
	schedLimit    = 50
	schedInterval = "200ms"
)

// schedStack is the setup of this test: one cluster, one token, two
// proxies sharing the key store.
type schedStack struct {
	c      *pgtest.Cluster
	cfg    proxyConfig
	conf   string // configuration file for CLI verbs
	env    []string
	marker string
	ks     *pgx.Conn // key store (database postgres), superuser
	app    *pgx.Conn // application database, superuser, around the proxies
	ringID uint32
	px     [2]*proxy
	conns  [2]*pgx.Conn // role app_scram through each proxy
	rows   map[int]string
	nextID int
}

func newSchedStack(t *testing.T) *schedStack {
	t.Helper()
	c := newCluster(t, pgtest.Opts{Conf: map[string]string{"timezone": "UTC"}})
	tok := hsmtest.New(t, "pgcloak-sched")
	mk := make([]byte, 6)
	_, _ = rand.Read(mk)
	s := &schedStack{c: c, marker: "pgsk" + hex.EncodeToString(mk), rows: map[int]string{}, nextID: 1}
	s.env = append(tok.Env(), "PGCLOAK_HSM_PIN="+tok.PIN)
	extra := fmt.Sprintf(`[keystore]
dsn = %q

[kek.hsm]
type = "pkcs11"
module = %q
token_label = %q
pin_env = "PGCLOAK_HSM_PIN"
key_label = "pgcloak-kek"

[classification.confidential]
kek = "hsm"
plaintext_roles = [%q]
rotate_after_encryptions = %d

[rotation]
check_interval = %q

[[column]]
table = "sched_notes"
column = "secret"
type = "text"
classification = "confidential"
`, c.DSN("postgres", "", "postgres"), tok.Module, tok.Label, roles.scram.name, schedLimit, schedInterval)
	s.cfg = proxyConfig{Upstream: c.Addr(), Extra: extra, Env: s.env}
	s.conf = filepath.Join(t.TempDir(), "pgcloak.toml")
	if err := os.WriteFile(s.conf, []byte(s.cfg.toml()), 0o600); err != nil {
		t.Fatal(err)
	}
	s.cli(t, "kek", "create")
	s.app = connect(t, c.DSN("postgres", "", "app"), pgx.QueryExecModeExec)
	for _, q := range []string{
		`CREATE TABLE sched_notes (id int PRIMARY KEY, via int NOT NULL, secret bytea)`,
		`GRANT ALL ON sched_notes TO ` + roles.scram.name,
	} {
		if _, err := s.app.Exec(t.Context(), q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	s.cli(t, "schema", "apply", "--yes", "--dsn", c.DSN("postgres", "", "app"))
	for i := range s.px {
		s.px[i] = startProxy(t, s.cfg)
		s.conns[i] = connect(t, s.px[i].DSN(roles.scram.name, roles.scram.password, "app"), pgx.QueryExecModeCacheStatement)
	}
	s.ks = connect(t, c.DSN("postgres", "", "postgres"), pgx.QueryExecModeExec)
	if err := s.ks.QueryRow(t.Context(), `SELECT id FROM pgcloak.keyrings WHERE name = 'confidential'`).Scan(&s.ringID); err != nil {
		t.Fatalf("confidential key ring: %v", err)
	}
	return s
}

// cli runs a pgcloak verb with the stack's configuration; it must exit 0.
func (s *schedStack) cli(t *testing.T, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, needBinary(t), append([]string{"--config", s.conf}, args...)...)
	cmd.Env = append(os.Environ(), s.env...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("pgcloak %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// write inserts one row through proxy i and returns the key version its
// stored envelope names (header bytes 9..12, read around the proxies).
func (s *schedStack) write(t *testing.T, i int) uint32 {
	t.Helper()
	id := s.nextID
	s.nextID++
	val := fmt.Sprintf("note %d via %d %s", id, i, s.marker)
	if _, err := s.conns[i].Exec(t.Context(), `INSERT INTO sched_notes (id, via, secret) VALUES ($1, $2, $3)`, id, i, val); err != nil {
		t.Fatalf("insert through proxy %d: %v", i, err)
	}
	s.rows[id] = val
	var ring, version int64
	if err := s.app.QueryRow(t.Context(), `SELECT
		(get_byte(secret, 5)::bigint << 24) | (get_byte(secret, 6) << 16) | (get_byte(secret, 7) << 8) | get_byte(secret, 8),
		(get_byte(secret, 9)::bigint << 24) | (get_byte(secret, 10) << 16) | (get_byte(secret, 11) << 8) | get_byte(secret, 12)
		FROM sched_notes WHERE id = $1`, id).Scan(&ring, &version); err != nil {
		t.Fatal(err)
	}
	if uint32(ring) != s.ringID {
		t.Fatalf("row %d sealed under key ring %d, want %d", id, ring, s.ringID)
	}
	return uint32(version)
}

// active returns the confidential ring's active version.
func (s *schedStack) active(t *testing.T) uint32 {
	t.Helper()
	var v int32
	if err := s.ks.QueryRow(t.Context(), `SELECT kv.version FROM pgcloak.key_versions kv
		WHERE kv.keyring_id = $1 AND kv.state = 'active'`, int32(s.ringID)).Scan(&v); err != nil {
		t.Fatal(err)
	}
	return uint32(v)
}

// schedRotation is one key.rotate audit entry of the confidential ring.
type schedRotation struct {
	version, previous uint32
	reason, actor     string
}

func (s *schedStack) rotations(t *testing.T) []schedRotation {
	t.Helper()
	rows, err := s.ks.Query(t.Context(), `SELECT version, (details->>'previous')::int, details->>'reason', actor
		FROM pgcloak.audit_log WHERE event = 'key.rotate' AND keyring = 'confidential' AND details ? 'previous' ORDER BY seq`)
	if err != nil {
		t.Fatal(err)
	}
	var out []schedRotation
	for rows.Next() {
		var r schedRotation
		var v, p int32
		if err := rows.Scan(&v, &p, &r.reason, &r.actor); err != nil {
			t.Fatal(err)
		}
		r.version, r.previous = uint32(v), uint32(p)
		out = append(out, r)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// leaders returns the indexes of the proxies that logged taking the
// rotation leadership.
func (s *schedStack) leaders() []int {
	var out []int
	for i, p := range s.px {
		if p.logs.count("rotation leadership acquired") > 0 {
			out = append(out, i)
		}
	}
	return out
}

// crossLimit writes through both proxies in turn until the key store has
// rotated the active version from, and returns how many rows it took.
func (s *schedStack) crossLimit(t *testing.T, from uint32, proxies ...int) int {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for n := 0; ; n++ {
		if v := s.active(t); v != from {
			if v != from+1 {
				t.Fatalf("active version went from %d to %d", from, v)
			}
			return n
		}
		if time.Now().After(deadline) || n > 20*schedLimit {
			t.Fatalf("version %d not rotated after %d rows", from, n)
		}
		s.write(t, proxies[n%len(proxies)])
		time.Sleep(5 * time.Millisecond)
	}
}

// sealsWith writes through proxy i until a row is sealed with want, and
// returns how long that took (at most limit).
func (s *schedStack) sealsWith(t *testing.T, i int, want uint32, limit time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	for {
		got := s.write(t, i)
		if got == want {
			return time.Since(start)
		}
		if got > want || time.Since(start) > limit {
			t.Fatalf("proxy %d sealed with version %d %v after the rotation to %d", i, got, time.Since(start), want)
		}
		time.Sleep(250 * time.Millisecond)
	}
}

func TestScheduledRotationTwoProxies(t *testing.T) {
	s := newSchedStack(t)
	ctx := t.Context()

	// Exactly one proxy leads.
	deadline := time.Now().Add(15 * time.Second)
	for len(s.leaders()) == 0 && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	time.Sleep(time.Second) // several election rounds
	ls := s.leaders()
	if len(ls) != 1 {
		t.Fatalf("proxies that took the rotation leadership: %v, want exactly one", ls)
	}
	leader, follower := ls[0], 1-ls[0]

	// Three threshold crossings, writing through both proxies.
	const rounds = 3
	for from := uint32(1); from <= rounds; from++ {
		n := s.crossLimit(t, from, 0, 1)
		t.Logf("version %d rotated after %d more rows", from, n)
		// Several checks later, still one new version: no double rotation.
		time.Sleep(time.Second)
		if v := s.active(t); v != from+1 {
			t.Fatalf("active version %d a second after rotating %d, want %d", v, from, from+1)
		}
		// Both proxies seal with the new version within seconds.
		for _, i := range []int{leader, follower} {
			el := s.sealsWith(t, i, from+1, 5*time.Second)
			t.Logf("proxy %d (leader %v) sealed with version %d after %v", i, i == leader, from+1, el)
		}
	}

	// The leader stops: it hands the leadership over at the signal, while
	// its sessions still drain; the other takes over and rotates.
	old := s.px[leader]
	old.stopped = true
	start := time.Now()
	old.Signal(t, syscall.SIGTERM)
	s.px[follower].waitCount(t, "rotation leadership acquired", 1, 10*time.Second)
	t.Logf("proxy %d took over %v after SIGTERM to the leader", follower, time.Since(start))
	old.Wait(t, 40*time.Second)
	if old.exitErr != nil {
		t.Errorf("the old leader exited with %v", old.exitErr)
	}
	if n := old.logs.count("rotation leadership released"); n != 1 {
		t.Errorf("the stopped leader logged %d releases", n)
	}
	from := s.active(t)
	s.crossLimit(t, from, follower)
	s.px[follower].waitCount(t, "key rotated on schedule", 1, 5*time.Second) // logged just after the commit
	final := from + 1
	time.Sleep(time.Second)
	if v := s.active(t); v != final {
		t.Fatalf("active version %d, want %d", v, final)
	}
	s.sealsWith(t, follower, final, 5*time.Second)

	// Every row reads through the remaining proxy, and through a new
	// instance (the stopped one coming back).
	restarted := startProxy(t, s.cfg)
	for _, p := range []*proxy{s.px[follower], restarted} {
		conn := connect(t, p.DSN(roles.scram.name, roles.scram.password, "app"), pgx.QueryExecModeCacheStatement)
		rows, err := conn.Query(ctx, `SELECT id, secret FROM sched_notes`)
		if err != nil {
			t.Fatal(err)
		}
		got := map[int]string{}
		for rows.Next() {
			var id int32
			var v string
			if err := rows.Scan(&id, &v); err != nil {
				t.Fatal(err)
			}
			got[int(id)] = v
		}
		if err := rows.Err(); err != nil {
			t.Fatal(err)
		}
		if len(got) != len(s.rows) {
			t.Errorf("%d rows read back, %d written", len(got), len(s.rows))
		}
		for id, want := range s.rows {
			if got[id] != want {
				t.Errorf("row %d reads %q, want %q", id, got[id], want)
			}
		}
	}
	var versionsUsed int
	if err := s.app.QueryRow(ctx, `SELECT count(DISTINCT substring(secret from 10 for 4)) FROM sched_notes`).Scan(&versionsUsed); err != nil {
		t.Fatal(err)
	}
	if versionsUsed != int(final) {
		t.Errorf("rows use %d key versions, want %d", versionsUsed, final)
	}

	// Once every proxy has stopped and flushed its counters: one
	// key.rotate per version, in order, each audited with the count
	// trigger, and no version rotated before it reached the limit.
	s.px[follower].Stop(t)
	restarted.Stop(t)
	rots := s.rotations(t)
	if len(rots) != int(final)-1 {
		t.Fatalf("%d key.rotate entries for %d versions: %+v", len(rots), final, rots)
	}
	for i, r := range rots {
		if r.previous != uint32(i+1) || r.version != uint32(i+2) ||
			!strings.HasPrefix(r.reason, "scheduled rotation: encryptions: ") ||
			!strings.HasSuffix(r.reason, fmt.Sprintf("rotate_after_encryptions = %d", schedLimit)) ||
			!strings.HasPrefix(r.actor, "pgcloak serve@") {
			t.Errorf("rotation %d: %+v", i+1, r)
		}
	}
	rows, err := s.ks.Query(ctx, `SELECT version, state, encryptions FROM pgcloak.key_versions WHERE keyring_id = $1 ORDER BY version`, int32(s.ringID))
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var v int32
		var state string
		var n int64
		if err := rows.Scan(&v, &state, &n); err != nil {
			t.Fatal(err)
		}
		switch {
		case uint32(v) < final && (state != "decrypt_only" || n < schedLimit):
			t.Errorf("version %d: %s after %d encryptions, want decrypt_only after at least %d", v, state, n, schedLimit)
		case uint32(v) == final && state != "active":
			t.Errorf("version %d: %s, want active", v, state)
		}
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	logged := 0
	for _, p := range append(s.px[:], restarted) {
		logged += p.logs.count("key rotated on schedule")
		if i := strings.Index(p.logs.String(), s.marker); i >= 0 {
			t.Errorf("a pgcloak log holds a plaintext value: …%s…", p.logs.String()[max(0, i-100):i+40])
		}
	}
	if logged != len(rots) {
		t.Errorf("%d rotations logged by the proxies, %d audited", logged, len(rots))
	}
	s.cli(t, "audit", "verify")
}
