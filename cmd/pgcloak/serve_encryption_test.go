package main

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/rs/zerolog"

	"github.com/pgcloak/pgcloak/config"
	"github.com/pgcloak/pgcloak/hsm/local"
	"github.com/pgcloak/pgcloak/internal/hsmtest"
	"github.com/pgcloak/pgcloak/internal/pgtest"
	"github.com/pgcloak/pgcloak/keyring"
	"github.com/pgcloak/pgcloak/keyring/audit"
	"github.com/pgcloak/pgcloak/proxy"
)

// TestStartEncryption builds what serve hands the proxy from a real
// configuration (restricted under a SoftHSM2 key, internal under a local
// key) and a real key store, and checks each part as the proxy will use
// it: policies, keys (a destroyed version wraps proxy.ErrKeyDestroyed),
// the catalog of the session's database, read audits and counters
// written at shutdown.
func TestStartEncryption(t *testing.T) {
	c := pgtest.New(t, pgtest.Opts{})
	if c == nil {
		return
	}
	tok := hsmtest.New(t, "pgcloak-serve-test")
	if tok == nil {
		return
	}
	t.Setenv("TEST_SERVE_HSM_PIN", tok.PIN)
	dir := t.TempDir()
	if err := local.Generate(filepath.Join(dir, "dev.key")); err != nil {
		t.Fatal(err)
	}
	cfgPath := writeFile(t, dir, "pgcloak.toml", fmt.Sprintf(`[upstream]
addr = %q
[keystore]
dsn = %q
[kek.hsm]
type = "pkcs11"
module = %q
token_label = %q
pin_env = "TEST_SERVE_HSM_PIN"
key_label = "pgcloak-kek"
[kek.dev]
type = "local"
key_file = "dev.key"
[classification.internal]
kek = "dev"
[classification.restricted]
kek = "hsm"
plaintext_roles = ["app", "auditor"]
on_denied = "mask"
[[column]]
table = "customers"
column = "ssn"
type = "text"
classification = "restricted"
[[column]]
table = "customers"
column = "email"
type = "varchar(80)"
classification = "internal"
`, c.Addr(), c.SuperDSN(), tok.Module, tok.Label))
	if code, out, errOut := runCLI(t, "--config", cfgPath, "kek", "create", "hsm"); code != 0 {
		t.Fatalf("kek create: exit %d\n%s%s", code, out, errOut)
	}
	cfg, err := config.Load(cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var logs syncBuffer
	log := zerolog.New(&logs)
	g := &globals{ctx: ctx, stdout: &logs, stderr: &logs}
	store, closeStore, err := prepareKeyStore(ctx, g, cfg, log)
	if err != nil {
		t.Fatal(err)
	}
	defer closeStore()
	e, err := startEncryption(ctx, cfg, store, log)
	if err != nil {
		t.Fatal(err)
	}
	closed := false
	defer func() {
		if !closed {
			e.close()
		}
	}()

	// Policies.
	r, in := e.enc.Policies["restricted"], e.enc.Policies["internal"]
	if !slices.Equal(r.PlaintextRoles, []string{"app", "auditor"}) || r.OnDenied != proxy.DeniedMask || !r.AuditReads {
		t.Errorf("restricted policy %+v", r)
	}
	if len(in.PlaintextRoles) != 0 || in.OnDenied != proxy.DeniedError || in.AuditReads || len(e.enc.Policies) != 2 {
		t.Errorf("internal policy %+v (policies %v)", in, e.enc.Policies)
	}
	if e.enc.Auditor == nil || e.enc.Catalogs == nil || e.enc.Keys == nil {
		t.Fatalf("incomplete Encryption %+v", e.enc)
	}

	// Keys: the active version of the classification's ring.
	ring, err := store.Keyring(ctx, "restricted")
	if err != nil {
		t.Fatal(err)
	}
	k, err := e.enc.Keys.EncryptionKey(ctx, "restricted")
	if err != nil || k.KeyringID() != ring.ID || k.Version() != 1 {
		t.Fatalf("EncryptionKey(restricted) = %v, %v; want ring %d version 1", k, err, ring.ID)
	}

	// Catalog: the session's database, not the key store's DSN database
	// (both are "postgres" here, so use another one).
	if err := c.CreateDatabase(ctx, "app", ""); err != nil {
		t.Fatal(err)
	}
	app, err := pgx.Connect(ctx, c.DSN("postgres", "", "app"))
	if err != nil {
		t.Fatal(err)
	}
	defer app.Close(context.Background())
	if _, err := app.Exec(ctx, "CREATE TABLE customers (id int, ssn bytea)"); err != nil {
		t.Fatal(err)
	}
	cat, err := e.enc.Catalogs.Catalog(ctx, "app")
	if err != nil {
		t.Fatal(err)
	}
	if es := cat.Table("public", "customers"); len(es) != 2 || !es[0].Resolved || es[0].Column.Column != "ssn" || es[0].Classification != "restricted" || es[1].Type != "varchar(80)" {
		t.Errorf("catalog of app: %+v", cat.Entries())
	}
	if !strings.Contains(logs.String(), `"database":"app","column":"public.customers.email","problem":"column missing"`) {
		t.Errorf("the missing column was not logged:\n%s", logs.String())
	}

	// A destroyed version: proxy.ErrKeyDestroyed, even though version 1
	// was cached a moment ago (the NOTIFY invalidates it).
	if _, err := store.Rotate(ctx, "restricted", "test"); err != nil {
		t.Fatal(err)
	}
	if _, err := store.SetState(ctx, "restricted", 1, keyring.StateRetired, "test"); err != nil {
		t.Fatal(err)
	}
	if _, err := store.ScheduleDeletion(ctx, "restricted", 1, keyring.MinDeletionWindow, "test"); err != nil {
		t.Fatal(err)
	}
	// The deletion window has ended (triggers off for this transaction).
	ks, err := pgx.Connect(ctx, c.SuperDSN())
	if err != nil {
		t.Fatal(err)
	}
	defer ks.Close(context.Background())
	for _, q := range []string{"BEGIN", "SET LOCAL session_replication_role = replica",
		fmt.Sprintf("UPDATE pgcloak.key_versions SET deletion_after = now() - interval '1 hour' WHERE keyring_id = %d AND version = 1", ring.ID),
		"COMMIT"} {
		if _, err := ks.Exec(ctx, q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	if d, err := store.DestroyDue(ctx); err != nil || len(d) != 1 {
		t.Fatalf("DestroyDue = %v, %v", d, err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		_, err = e.enc.Keys.Key(ctx, ring.ID, 1)
		if errors.Is(err, proxy.ErrKeyDestroyed) || time.Now().After(deadline) {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if !errors.Is(err, proxy.ErrKeyDestroyed) {
		t.Errorf("Key(destroyed) = %v; want proxy.ErrKeyDestroyed", err)
	}
	// Writes moved to version 2 (the notifications arrive in order).
	k2, err := e.enc.Keys.EncryptionKey(ctx, "restricted")
	if err != nil || k2.Version() != 2 {
		t.Fatalf("EncryptionKey after the rotation = %v, %v; want version 2", k2, err)
	}
	e.enc.Keys.Encrypted(k2, 7)

	// A read audit, written at shutdown with the counters.
	e.enc.Auditor.AuditRead(proxy.ReadAudit{Conn: 42, Role: "app", Database: "app", Application: "psql",
		Fingerprint: "a1b2", Command: "SELECT", Columns: []string{"public.customers.ssn", "public.orders.ssn"}, Rows: 3})
	e.close()
	closed = true
	tail, err := store.AuditTail(ctx, 5)
	if err != nil {
		t.Fatal(err)
	}
	last := tail[len(tail)-1]
	want := map[string]string{"conn": "42", "role": "app", "database": "app", "application": "psql", "fingerprint": "a1b2",
		"command": "SELECT", "columns": "public.customers.ssn,public.orders.ssn", "rows": "3"}
	if last.Event != audit.EventDataRead || last.Keyring != "restricted" || !mapsEqualStr(last.Details, want) || !strings.HasPrefix(last.Actor, "pgcloak serve@") {
		t.Errorf("last audit entry %+v", last)
	}
	if v2, err := store.Get(ctx, "restricted", 2); err != nil || v2.Encryptions != 7 {
		t.Errorf("version 2 counts %d encryptions (%v); want the 7 counted, flushed at shutdown", v2.Encryptions, err)
	}
}

func mapsEqualStr(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}
