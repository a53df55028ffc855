package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/pgcloak/pgcloak/config"
	"github.com/pgcloak/pgcloak/keyring"
)

// Exit codes of the key-management verbs (keys …, kek rotate, audit …), in
// addition to main.go's:
//
//	0  success
//	1  runtime error: key store or KEK unreachable, unwrap failed, the user
//	   answered no at a confirmation prompt, audit verify found tampering
//	2  usage or configuration error: bad arguments, no [keystore] dsn, an
//	   unknown key ring, version or KEK name, a destructive verb without
//	   --yes while stdin is not a terminal
//	3  refused by the key lifecycle: an illegal state transition (e.g.
//	   retiring the active version), a deletion window outside 7–30 days, a
//	   change the key store keeps immutable, or a key ring that exists with
//	   another purpose or KEK than the configuration says
const exitRefused = 3

// exitCodesHelp is appended to the detailed help of the key-management
// verbs.
const exitCodesHelp = `Exit codes: 0 ok; 1 runtime error (key store or KEK unreachable, confirmation declined, tampering found); 2 usage or configuration error (bad arguments, unknown key ring, version or KEK, destructive verb without --yes on a non-terminal stdin); 3 refused by the key lifecycle (illegal state transition, deletion window outside 7 to 30 days, key ring exists with another purpose or KEK).`

// ActorFlag is embedded in every verb that changes the key store.
type ActorFlag struct {
	Actor string `help:"Name recorded as the author of every change in the audit log (default: OS user@host)." env:"PGCLOAK_ACTOR" placeholder:"NAME"`
}

// JSONFlag is embedded in every verb with a table output.
type JSONFlag struct {
	JSON bool `name:"json" help:"Print JSON (for scripts) instead of a table."`
}

// YesFlag is embedded in every destructive verb.
type YesFlag struct {
	Yes bool `short:"y" help:"Do not ask for confirmation (required when stdin is not a terminal)."`
}

// storeOpts says how openStore connects.
type storeOpts struct {
	// Actor is recorded with every change; "" = keyring.DefaultActor()
	// (OS user@host).
	Actor string
	// NoKEKs skips opening the KEKs: for verbs that only read metadata
	// (keys list, keys show, keys export-wrapped, audit tail), which then
	// work without HSM access.
	NoKEKs bool
	// CheckpointEvery is keyring.StoreOpts.CheckpointEvery (0: its
	// default; negative: no automatic checkpoints).
	CheckpointEvery int64
	// OnError receives failures that do not fail the operation (audit
	// sink, automatic checkpoints). nil: a warning line on g.stderr.
	OnError func(error)
}

// openStore connects to the key store named by [keystore] dsn (the
// password comes from PGPASSWORD or PGPASSFILE, which pgx reads) with every
// configured KEK opened (unless o.NoKEKs). closeFn closes the store and
// the KEKs. It does not migrate: see ensureRings. Configuration problems
// are usage errors (exit 2).
func openStore(g *globals, cfg *config.Config, o storeOpts) (store *keyring.Store, closeFn func(), err error) {
	if cfg.Keystore.DSN == "" {
		return nil, nil, usageErr(fmt.Errorf("%s: [keystore] dsn is not set: the key store needs a PostgreSQL database", cfg.File))
	}
	closeKEKs := func() {}
	opts := keyring.StoreOpts{DSN: cfg.Keystore.DSN, Actor: o.Actor, OnError: o.OnError, CheckpointEvery: o.CheckpointEvery}
	if !o.NoKEKs {
		// A PIN variable that is not set is a configuration error (exit
		// 2); failing to open a token or a KMS key is a runtime error.
		for _, k := range cfg.KEKs {
			if k.Type != config.KEKPKCS11 {
				continue
			}
			pin, err := pinFromEnv(k)
			if err != nil {
				return nil, nil, usageErr(err)
			}
			pin.Zero()
		}
		opened, closeAll, err := openKEKs(g.ctx, cfg)
		if err != nil {
			return nil, nil, err
		}
		opts.KEKs, closeKEKs = opened, closeAll
	} else {
		// Without KEKs no checkpoint can be MACed: do not try after
		// every commit.
		opts.CheckpointEvery = -1
	}
	if opts.OnError == nil {
		opts.OnError = func(err error) { fmt.Fprintf(g.stderr, "pgcloak: warning: %v\n", err) }
	}
	closeSink := func() {}
	if cfg.Keystore.AuditSink != "" {
		// Appended to, never truncated: the SIEM copy is the second line
		// of defence for entries after the last checkpoint.
		f, err := os.OpenFile(cfg.Keystore.AuditSink, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
		if err != nil {
			closeKEKs()
			return nil, nil, fmt.Errorf("%s: [keystore] audit_sink: %w", cfg.File, err)
		}
		opts.AuditSink, closeSink = f, func() { _ = f.Close() }
	}
	s, err := keyring.New(g.ctx, opts)
	if err != nil {
		closeKEKs()
		closeSink()
		// New only fails on a DSN that does not parse.
		return nil, nil, usageErr(fmt.Errorf("%s: [keystore] dsn: %w", cfg.File, err))
	}
	return s, func() { s.Close(); closeKEKs(); closeSink() }, nil
}

// openCurrentStore is openStore for the verbs other than keys init: it
// also checks that the key store's schema exists and is the one this
// binary knows (a usage error pointing at `pgcloak keys init` otherwise).
func openCurrentStore(g *globals, cfg *config.Config, o storeOpts) (*keyring.Store, func(), error) {
	store, closeFn, err := openStore(g, cfg, o)
	if err != nil {
		return nil, nil, err
	}
	if err := checkSchema(g.ctx, store); err != nil {
		closeFn()
		return nil, nil, err
	}
	return store, closeFn, nil
}

// openRing is the preamble of every verb that acts on one key ring: load
// the configuration (without file checks when no KEK is needed), open the
// current key store, and read the ring, which must exist.
func openRing(g *globals, o storeOpts, ringName string) (*keyring.Store, keyring.Keyring, func(), error) {
	cfg, err := g.loadConfig("", o.NoKEKs)
	if err != nil {
		return nil, keyring.Keyring{}, nil, err
	}
	store, closeStore, err := openCurrentStore(g, cfg, o)
	if err != nil {
		return nil, keyring.Keyring{}, nil, err
	}
	ring, err := store.Keyring(g.ctx, ringName)
	if err != nil {
		closeStore()
		return nil, keyring.Keyring{}, nil, storeErr(err)
	}
	return store, ring, closeStore, nil
}

func checkSchema(ctx context.Context, store *keyring.Store) error {
	ms, err := keyring.Migrations()
	if err != nil {
		return err
	}
	v, err := store.SchemaVersion(ctx)
	switch {
	case err != nil:
		return err
	case v == 0:
		return usageErr(errors.New("the [keystore] database has no key store yet (schema pgcloak): run pgcloak keys init"))
	case v < len(ms):
		return usageErr(fmt.Errorf("the key store schema is at migration %d, this pgcloak needs %d: run pgcloak keys init to upgrade it", v, len(ms)))
	case v > len(ms):
		return fmt.Errorf("%w: key store at migration %d, this pgcloak knows %d", keyring.ErrSchemaTooNew, v, len(ms))
	}
	return nil
}

// ensuredRing is one key ring ensureRings looked at.
type ensuredRing struct {
	Ring   keyring.Keyring
	Status string // "created", "updated" (classification changed) or "exists"
}

// ensured is what ensureRings did.
type ensured struct {
	Migrations []int         // migrations applied now (none when the schema was current)
	Rings      []ensuredRing // every key ring the configuration needs, in ringSpecs order
}

// ensureRings brings the key store in line with cfg: it applies the
// migrations if the schema is not current, then makes sure that every
// classification that encrypts has its encryption key ring (named after
// the classification, wrapped by the classification's KEK), a search key
// ring "NAME:search" when a column of that classification has search =
// "equality", and that the audit key ring (purpose audit) exists, wrapped
// by the strongest configured KEK (see auditKEK). New rings get their
// first active version; the key store audits every creation and change.
//
// It is idempotent and cheap when nothing is missing (two reads: the
// schema version and the key ring list), and safe to run from several
// processes at once (pgcloak serve calls it on start-up). The store needs
// the KEKs of the rings it creates. A ring that exists with another
// purpose or KEK fails with keyring.ErrKeyringMismatch: moving a ring to
// another KEK is `pgcloak kek rotate`. On error, res holds what was done
// before it.
func ensureRings(ctx context.Context, store *keyring.Store, cfg *config.Config) (res ensured, err error) {
	if res.Migrations, err = migrateIfNeeded(ctx, store); err != nil {
		return res, err
	}
	rings, err := store.Keyrings(ctx)
	if err != nil {
		return res, err
	}
	existing := make(map[string]keyring.Keyring, len(rings))
	for _, r := range rings {
		existing[r.Name] = r
	}
	for _, spec := range ringSpecs(cfg, existing) {
		if r, ok := existing[spec.Name]; ok && r.Purpose == spec.Purpose && r.KEK == spec.KEK &&
			r.Classification == spec.Classification && r.Environment == spec.Environment {
			res.Rings = append(res.Rings, ensuredRing{Ring: r, Status: "exists"})
			continue
		}
		r, created, err := store.EnsureKeyring(ctx, spec)
		if err != nil {
			return res, err
		}
		status := "updated"
		if created {
			status = "created"
		}
		res.Rings = append(res.Rings, ensuredRing{Ring: r, Status: status})
	}
	return res, nil
}

// migrateIfNeeded runs Migrate only when the schema is older than this
// binary: a current key store then needs no CREATE privilege and no
// migration lock.
func migrateIfNeeded(ctx context.Context, store *keyring.Store) ([]int, error) {
	ms, err := keyring.Migrations()
	if err != nil {
		return nil, err
	}
	v, err := store.SchemaVersion(ctx)
	if err != nil {
		return nil, err
	}
	if v == len(ms) {
		return nil, nil
	}
	return store.Migrate(ctx)
}

// ringSpecs lists the key rings cfg needs: per encrypting classification
// (least to most protected) its encryption ring and, if a column searches
// by equality, its search ring; then the audit ring.
func ringSpecs(cfg *config.Config, existing map[string]keyring.Keyring) []keyring.KeyringSpec {
	var specs []keyring.KeyringSpec
	for _, name := range classificationOrder(cfg) {
		c := cfg.Classifications[name]
		if !c.Encrypted() || c.KEK == "" {
			continue
		}
		specs = append(specs, keyring.KeyringSpec{Name: c.Name, Purpose: keyring.PurposeEncryption, Classification: c.Name, KEK: c.KEK})
		if slices.ContainsFunc(cfg.Columns, func(col config.Column) bool {
			return col.Classification == c.Name && col.Search == config.SearchEquality
		}) {
			specs = append(specs, keyring.KeyringSpec{Name: c.Name + ":search", Purpose: keyring.PurposeSearch, Classification: c.Name, KEK: c.KEK})
		}
	}
	if kek := auditKEK(cfg, existing); kek != "" {
		specs = append(specs, keyring.KeyringSpec{Name: keyring.DefaultAuditKeyring, Purpose: keyring.PurposeAudit, KEK: kek})
	}
	return specs
}

// classificationOrder returns the classification names from least to most
// protected (config.Levels order), unknown names last, alphabetically.
func classificationOrder(cfg *config.Config) []string {
	rank := func(name string) int {
		if i := slices.Index(config.Levels(), name); i >= 0 {
			return i
		}
		return len(config.Levels())
	}
	names := make([]string, 0, len(cfg.Classifications))
	for name := range cfg.Classifications {
		names = append(names, name)
	}
	slices.SortFunc(names, func(a, b string) int {
		if ra, rb := rank(a), rank(b); ra != rb {
			return ra - rb
		}
		return strings.Compare(a, b)
	})
	return names
}

// auditKEK picks the KEK of the audit key ring: the one it already uses if
// that KEK is still configured (so `kek rotate` is not undone), otherwise
// the strongest configured KEK: HSM/KMS-held before software keys, then the
// one protecting the most sensitive classification, then pkcs11 before
// awskms, then by name. "" when no KEK is configured.
func auditKEK(cfg *config.Config, existing map[string]keyring.Keyring) string {
	if r, ok := existing[keyring.DefaultAuditKeyring]; ok {
		if _, configured := cfg.KEKs[r.KEK]; configured {
			return r.KEK
		}
	}
	level := map[string]int{} // KEK name → highest level (index in Levels) it protects
	for _, name := range classificationOrder(cfg) {
		c := cfg.Classifications[name]
		if c.Encrypted() && c.KEK != "" {
			level[c.KEK] = max(level[c.KEK], slices.Index(config.Levels(), name)+1)
		}
	}
	score := func(k config.KEK) [3]int {
		s := [3]int{0, level[k.Name], 0}
		if k.HSMBacked() {
			s[0] = 1
		}
		if k.Type == config.KEKPKCS11 {
			s[2] = 1
		}
		return s
	}
	best := ""
	for name, k := range cfg.KEKs {
		if best == "" {
			best = name
			continue
		}
		sb, sk := score(cfg.KEKs[best]), score(k)
		if c := slices.Compare(sk[:], sb[:]); c > 0 || (c == 0 && name < best) {
			best = name
		}
	}
	return best
}

// storeErr maps key-store errors to exit codes: lifecycle refusals to 3,
// unknown names to 2, the rest to 1.
func storeErr(err error) error {
	var ee *exitError
	switch {
	case err == nil:
		return nil
	case errors.As(err, &ee):
		return err
	case errors.Is(err, keyring.ErrIllegalTransition), errors.Is(err, keyring.ErrDeletionWindow),
		errors.Is(err, keyring.ErrImmutable), errors.Is(err, keyring.ErrKeyringMismatch),
		errors.Is(err, keyring.ErrWrongPurpose):
		return &exitError{code: exitRefused, err: err}
	case errors.Is(err, keyring.ErrNotFound), errors.Is(err, keyring.ErrKEKNotConfigured):
		return usageErr(err)
	}
	return err
}

// checkpoint MACs the audit chain's head after a change made by the CLI,
// so that `audit verify` vouches for it through the HSM-held audit key.
// A failure is a warning: the change itself is committed.
func checkpoint(g *globals, store *keyring.Store) {
	if _, err := store.Checkpoint(g.ctx); err != nil {
		hint := ""
		if errors.Is(err, keyring.ErrNoAuditKeyring) {
			hint = " (run pgcloak keys init)"
		}
		fmt.Fprintf(g.stderr, "pgcloak: warning: audit checkpoint not written: %v%s\n", err, hint)
	}
}

// stdin is where confirmations are read from: os.Stdin, looked up at each
// call (tests replace os.Stdin with a pipe or a pseudo-terminal).
func stdin() *os.File { return os.Stdin }

// confirm asks before a destructive change. With yes it returns nil at
// once. When stdin is not a terminal it refuses with a usage error
// (scripts must say --yes); an answer other than "y" or "yes" aborts
// (exit 1). The prompt goes to stderr so that stdout stays parseable.
func confirm(g *globals, yes bool, what string) error {
	if yes {
		return nil
	}
	in := stdin()
	if !isTerminal(in) {
		return usageErr(fmt.Errorf("refusing to %s without confirmation: stdin is not a terminal; pass --yes", what))
	}
	fmt.Fprintf(g.stderr, "About to %s.\nContinue? [y/N] ", what)
	line, err := bufio.NewReader(in).ReadString('\n')
	if err != nil && !errors.Is(err, io.EOF) {
		return fmt.Errorf("read confirmation: %w", err)
	}
	switch strings.ToLower(strings.TrimSpace(line)) {
	case "y", "yes":
		return nil
	}
	return errors.New("aborted: not confirmed")
}

// writeJSON prints v as indented JSON on stdout.
func writeJSON(g *globals, v any) error {
	enc := json.NewEncoder(g.stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// newTable returns a tabwriter on stdout; call Flush.
func newTable(g *globals) *tabwriter.Writer {
	return tabwriter.NewWriter(g.stdout, 0, 0, 2, ' ', 0)
}

// fmtTime formats a key-store time for tables: UTC to the second, "-" for
// none.
func fmtTime(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.UTC().Format("2006-01-02 15:04:05Z")
}

// orDash returns s, or "-" when empty (tabwriter needs a cell).
func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
