package main

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgcloak/pgcloak/crypto/envelope"
	"github.com/pgcloak/pgcloak/crypto/secret"
	"github.com/pgcloak/pgcloak/hsm"
	"github.com/pgcloak/pgcloak/hsm/pkcs11"
	"github.com/pgcloak/pgcloak/internal/hsmtest"
	"github.com/pgcloak/pgcloak/keycache"
	"github.com/pgcloak/pgcloak/keyring"
)

// runKeyDemo shows the key hierarchy with real components: a SoftHSM2 token
// with a non-extractable KEK, the key store in the throwaway cluster
// (keyStoreDSN, superuser), DEKs wrapped by the token, the DEK cache, and
// ciphertext in format v1 written and read back through the proxy
// (proxyDSN). Until column encryption lands in the proxy, the demo seals
// and opens values itself, with the same libraries the proxy will use.
func runKeyDemo(ctx context.Context, w io.Writer, keyStoreDSN, proxyDSN string) error {
	ctx, cancel := context.WithTimeout(ctx, demoTimeout)
	defer cancel()
	step := func(format string, args ...any) { fmt.Fprintf(w, "  ✓ "+format+"\n", args...) }
	fmt.Fprintln(w, "\nDemo: the key hierarchy on a SoftHSM2 token")

	tok, err := hsmtest.NewToken(ctx, "pgcloak-demo")
	if err != nil {
		if errors.Is(err, hsmtest.ErrNoModule) {
			return fmt.Errorf("demo: %w (install softhsm2: make deps)", err)
		}
		return fmt.Errorf("demo: SoftHSM2 token: %w", err)
	}
	defer tok.Close()
	// The module reads its configuration from the environment when it is
	// loaded, which happens below, in this process.
	if err := os.Setenv(hsmtest.ConfEnv, tok.ConfPath); err != nil {
		return fmt.Errorf("demo: %w", err)
	}
	step("SoftHSM2 token %q initialised in a temp dir (user PIN generated, never printed)", tok.Label)

	popts := pkcs11.Opts{Module: tok.Module, TokenLabel: tok.Label, PIN: secret.New([]byte(tok.PIN)), KeyLabel: "pgcloak-kek"}
	defer popts.PIN.Zero()
	t, err := pkcs11.OpenToken(ctx, popts)
	if err != nil {
		return fmt.Errorf("demo: open token: %w", err)
	}
	ki, err := t.CreateKey(ctx, popts.KeyLabel)
	t.Close()
	if err != nil {
		return fmt.Errorf("demo: create KEK: %w", err)
	}
	step("KEK %q created on the token: AES-%d, sensitive=%v, extractable=%v (it never leaves the HSM)", ki.Label, ki.Bits, ki.Sensitive, ki.Extractable)

	kek, err := pkcs11.New(ctx, popts)
	if err != nil {
		return fmt.Errorf("demo: KEK provider: %w", err)
	}
	defer kek.Close()

	store, err := keyring.New(ctx, keyring.StoreOpts{DSN: keyStoreDSN, KEKs: map[string]hsm.KEK{"hsm": kek}, Actor: "pgcloak-demo"})
	if err != nil {
		return fmt.Errorf("demo: key store: %w", err)
	}
	defer store.Close()
	if _, err := store.Migrate(ctx); err != nil {
		return fmt.Errorf("demo: key store schema: %w", err)
	}
	for _, spec := range []keyring.KeyringSpec{
		{Name: "confidential", Purpose: keyring.PurposeEncryption, Classification: "confidential", KEK: "hsm"},
		{Name: "audit", Purpose: keyring.PurposeAudit, KEK: "hsm"},
	} {
		if _, _, err := store.EnsureKeyring(ctx, spec); err != nil {
			return fmt.Errorf("demo: key ring %s: %w", spec.Name, err)
		}
	}
	ring, err := store.Keyring(ctx, "confidential")
	if err != nil {
		return fmt.Errorf("demo: %w", err)
	}
	v1, err := store.ActiveVersion(ctx, ring.Name)
	if err != nil {
		return fmt.Errorf("demo: %w", err)
	}
	step("key store schema pgcloak migrated; key ring %q (id %d) has version %d %s, its 256-bit DEK wrapped by the KEK", ring.Name, ring.ID, v1.Version, v1.State)

	cache, err := keycache.New(keycache.Opts[*envelope.Key]{
		Loader:     store.Loader(keyring.LoaderOpts{Purpose: keyring.PurposeEncryption}),
		Prepare:    envelope.NewKey,
		MaxEntries: 64,
		TTL:        5 * time.Minute,
	})
	if err != nil {
		return fmt.Errorf("demo: key cache: %w", err)
	}
	defer cache.Close()

	conn, err := pgx.Connect(ctx, proxyDSN)
	if err != nil {
		return fmt.Errorf("demo: connect through the proxy: %w", err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	if _, err := conn.Exec(ctx, "CREATE TABLE patients (id int PRIMARY KEY, ssn bytea)"); err != nil {
		return fmt.Errorf("demo: %w", err)
	}
	const column = "public.patients.ssn"
	seal := func(id int, version uint32, value string) error {
		key, err := cache.Get(ctx, ring.ID, version)
		if err != nil {
			return err
		}
		ct, err := key.Seal(nil, nil, column, []byte(value))
		if err != nil {
			return err
		}
		_, err = conn.Exec(ctx, "INSERT INTO patients VALUES ($1, $2)", id, ct)
		return err
	}
	if err := seal(1, v1.Version, "078-05-1120"); err != nil {
		return fmt.Errorf("demo: seal: %w", err)
	}
	step("sealed an SSN with the DEK (AES-256-GCM, associated data = header || %q) and INSERTed it through the proxy", column)

	v2, err := store.Rotate(ctx, ring.Name, "demo: routine rotation")
	if err != nil {
		return fmt.Errorf("demo: rotate: %w", err)
	}
	if err := seal(2, v2.Version, "219-09-9999"); err != nil {
		return fmt.Errorf("demo: seal: %w", err)
	}
	step("rotated: version %d is active, version %d is decrypt_only; the second row is sealed with version %d", v2.Version, v1.Version, v2.Version)

	rows, err := conn.Query(ctx, "SELECT id, ssn FROM patients ORDER BY id")
	if err != nil {
		return fmt.Errorf("demo: select: %w", err)
	}
	type row struct {
		id int
		ct []byte
	}
	var got []row
	for rows.Next() {
		var r row
		if err := rows.Scan(&r.id, &r.ct); err != nil {
			return fmt.Errorf("demo: select: %w", err)
		}
		got = append(got, r)
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("demo: select: %w", err)
	}
	step("read back through the proxy; what PostgreSQL stores (hex, header fields split):")
	for _, r := range got {
		h, err := envelope.ParseHeader(r.ct)
		if err != nil {
			return fmt.Errorf("demo: row %d: %w", r.id, err)
		}
		key, err := cache.Get(ctx, h.KeyringID, h.KeyVersion)
		if err != nil {
			return fmt.Errorf("demo: row %d: %w", r.id, err)
		}
		pt, err := key.Open(nil, r.ct, column)
		if err != nil {
			return fmt.Errorf("demo: row %d: %w", r.id, err)
		}
		x := hex.EncodeToString(r.ct)
		fmt.Fprintf(w, "      row %d: %s %s %s %s %s %s %s…  (%d bytes)\n", r.id, x[0:4], x[4:6], x[6:8], x[8:10], x[10:18], x[18:26], x[26:50], len(r.ct))
		fmt.Fprintf(w, "             magic, format 1, AES-256-GCM, flags, key ring %d, key version %d, nonce…  → opens to %q\n", h.KeyringID, h.KeyVersion, pt)
		if _, err := key.Open(nil, r.ct, "public.patients.other_column"); err == nil {
			return fmt.Errorf("demo: row %d opened under another column's context", r.id)
		}
	}
	step("the same ciphertext refuses to open as another column (associated data mismatch)")

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

	if _, err := conn.Exec(ctx, "DROP TABLE patients"); err != nil {
		return fmt.Errorf("demo: drop: %w", err)
	}
	fmt.Fprintln(w, "Next (column encryption): the proxy does the sealing and opening above itself, so the application reads and writes plaintext.")
	return nil
}
