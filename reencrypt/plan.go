package reencrypt

import (
	"cmp"
	"context"
	"encoding/binary"
	"fmt"
	"slices"

	"github.com/pgcloak/pgcloak/catalog"
	"github.com/pgcloak/pgcloak/keyring"
	"github.com/pgcloak/pgcloak/keys"
)

// Action says what a run does with the rows of a column under one key
// version. The zero value is invalid; the numbers are not stored.
type Action int

const (
	// ActionCurrent: the column's key ring, active version; nothing to do.
	ActionCurrent Action = 1
	// ActionReencrypt: re-encrypted to the active version.
	ActionReencrypt Action = 2
	// ActionExcluded: an older version of the column's ring whose state
	// forbids loading it (retired, pending_deletion, deleted; disabled
	// outside the compromise procedure): left unchanged, and the run
	// reports it.
	ActionExcluded Action = 3
	// ActionOtherRing: a key ring other than the column's (the column was
	// reclassified, or the id is unknown to this key store): left
	// unchanged.
	ActionOtherRing Action = 4
	// ActionNotSelected: the compromise procedure re-encrypts one version
	// first; other older versions wait for a routine run.
	ActionNotSelected Action = 5
)

// String names the action for tables and JSON.
func (a Action) String() string {
	switch a {
	case ActionCurrent:
		return "current"
	case ActionReencrypt:
		return "re-encrypt"
	case ActionExcluded:
		return "excluded"
	case ActionOtherRing:
		return "other key ring"
	case ActionNotSelected:
		return "not selected"
	}
	return "(invalid action)"
}

// MarshalText encodes the action as its String.
func (a Action) MarshalText() ([]byte, error) { return []byte(a.String()), nil }

// UnmarshalText decodes what MarshalText wrote.
func (a *Action) UnmarshalText(b []byte) error {
	for x := ActionCurrent; x <= ActionNotSelected; x++ {
		if x.String() == string(b) {
			*a = x
			return nil
		}
	}
	return fmt.Errorf("reencrypt: unknown action %q", b)
}

// Compromise restricts a run to one version of one key ring, which may
// be disabled (keyring.LoaderOpts.AllowDisabled): the compromise
// procedure re-encrypts every row of the compromised version first.
type Compromise struct {
	Keyring string
	Version uint32
}

// VersionRows is the number of a column's rows under one key version.
type VersionRows struct {
	KeyringID uint32        `json:"keyring_id"`
	Keyring   string        `json:"keyring"` // "" when the key store has no ring with that id
	Version   uint32        `json:"version"`
	State     keyring.State `json:"state"` // "" when unknown
	Rows      int64         `json:"rows"`
	Action    Action        `json:"action"`
}

// ColumnPlan is what a run finds for one configured column before it
// starts (and all a dry run does).
type ColumnPlan struct {
	Column catalog.Column
	// Skip says why the column is not processed although nothing is wrong
	// with that: it does not exist in this database, or it is not bytea
	// (then it holds no ciphertext).
	Skip string
	// Refusal says why the column cannot be processed: its table has no
	// primary key, the primary key contains the column, its key ring is
	// missing.
	Refusal string
	Keyring keyring.Keyring // the column's key ring (zero when skipped or refused before it was found)
	Active  uint32          // the ring's active version
	// FromVersion is the compromised version (0: every older version).
	FromVersion uint32
	PKColumns   []string
	Versions    []VersionRows // by key ring id, then version
	NonEnvelope int64         // non-NULL values that are not v1 envelopes
	Remaining   int64         // rows under versions with ActionReencrypt

	ref   tableRef
	entry catalog.Entry
}

// eligible returns the versions a run re-encrypts, ascending.
func (p *ColumnPlan) eligible() []uint32 {
	var vs []uint32
	for _, v := range p.Versions {
		if v.Action == ActionReencrypt {
			vs = append(vs, v.Version)
		}
	}
	return vs
}

// Excluded returns the rows a run leaves behind because of their
// version's state or key ring.
func (p *ColumnPlan) Excluded() []VersionRows {
	var out []VersionRows
	for _, v := range p.Versions {
		if v.Action == ActionExcluded {
			out = append(out, v)
		}
	}
	return out
}

// Plan resolves cols in db's database, reads the key store's rings and
// versions, and counts each column's rows per key version (one full scan
// per column). With comp, only that version of that ring is selected.
func Plan(ctx context.Context, store *keyring.Store, db catalog.Querier, cols []catalog.Column, comp *Compromise) ([]ColumnPlan, error) {
	plans, err := resolvePlans(ctx, db, cols)
	if err != nil {
		return nil, err
	}
	st, err := readKeyState(ctx, store)
	if err != nil {
		return nil, err
	}
	for i := range plans {
		if plans[i].Skip != "" {
			continue
		}
		if err := planColumn(ctx, db, st, &plans[i], comp); err != nil {
			return nil, err
		}
	}
	return plans, nil
}

// resolvePlans resolves cols in db's database: one plan per column, with
// Skip set for the columns that do not exist there or are not bytea.
func resolvePlans(ctx context.Context, db catalog.Querier, cols []catalog.Column) ([]ColumnPlan, error) {
	cat, problems, err := catalog.Resolve(ctx, db, cols)
	if err != nil {
		return nil, fmt.Errorf("reencrypt: resolve columns: %w", err)
	}
	entries := cat.Entries()
	plans := make([]ColumnPlan, len(entries))
	for i := range entries {
		plans[i] = ColumnPlan{Column: entries[i].Column, entry: entries[i]}
	}
	for _, p := range problems {
		if plans[p.Index].Skip == "" {
			plans[p.Index].Skip = p.String()
		}
	}
	return plans, nil
}

// keyState is the key store as a run sees it at one moment.
type keyState struct {
	rings    map[string]keyring.Keyring
	names    map[uint32]string
	versions map[uint32][]keyring.Version // by ring id, ascending
}

func readKeyState(ctx context.Context, store *keyring.Store) (*keyState, error) {
	rings, err := store.Keyrings(ctx)
	if err != nil {
		return nil, fmt.Errorf("reencrypt: %w", err)
	}
	all, err := store.List(ctx)
	if err != nil {
		return nil, fmt.Errorf("reencrypt: %w", err)
	}
	st := &keyState{rings: map[string]keyring.Keyring{}, names: map[uint32]string{}, versions: map[uint32][]keyring.Version{}}
	for _, r := range rings {
		st.rings[r.Name], st.names[r.ID] = r, r.Name
	}
	for _, v := range all {
		st.versions[v.KeyringID] = append(st.versions[v.KeyringID], v)
	}
	return st, nil
}

func (st *keyState) state(ringID, version uint32) keyring.State {
	for _, v := range st.versions[ringID] {
		if v.Version == version {
			return v.State
		}
	}
	return ""
}

func (st *keyState) active(ringID uint32) uint32 {
	for _, v := range st.versions[ringID] {
		if v.State == keyring.StateActive {
			return v.Version
		}
	}
	return 0
}

// planColumn fills p for a resolved bytea column.
func planColumn(ctx context.Context, db catalog.Querier, st *keyState, p *ColumnPlan, comp *Compromise) error {
	name := keys.RingName(p.Column.Classification)
	ring, ok := st.rings[name]
	switch {
	case !ok:
		p.Refusal = fmt.Sprintf("%s: key ring %q does not exist in the key store (run pgcloak keys init)", p.Column.QualifiedName(), name)
		return nil
	case ring.Purpose != keyring.PurposeEncryption:
		p.Refusal = fmt.Sprintf("%s: key ring %q is a %s key ring", p.Column.QualifiedName(), name, ring.Purpose)
		return nil
	}
	p.Keyring, p.Active = ring, st.active(ring.ID)
	if p.Active == 0 {
		p.Refusal = fmt.Sprintf("%s: key ring %q has no active version", p.Column.QualifiedName(), name)
		return nil
	}
	if comp != nil && comp.Keyring == name {
		p.FromVersion = comp.Version
	}
	pk, err := primaryKey(ctx, db, p.entry.TableOID)
	if err != nil {
		return fmt.Errorf("reencrypt: %s: primary key: %w", p.Column.QualifiedName(), err)
	}
	table := p.Column.Schema + "." + p.Column.Table
	switch {
	case len(pk) == 0:
		p.Refusal = fmt.Sprintf("%s: table %s has no primary key; re-encryption walks a table in primary-key order (add one, e.g. ALTER TABLE %s ADD PRIMARY KEY (…))",
			p.Column.QualifiedName(), table, table)
		return nil
	case slices.ContainsFunc(pk, func(k pkColumn) bool { return k.Name == p.Column.Column }):
		p.Refusal = fmt.Sprintf("%s: the column is part of the primary key of %s; an encrypted primary key cannot be re-encrypted in place", p.Column.QualifiedName(), table)
		return nil
	}
	p.ref = tableRef{Schema: p.Column.Schema, Table: p.Column.Table, Column: p.Column.Column, PK: pk}
	for _, k := range pk {
		p.PKColumns = append(p.PKColumns, k.Name)
	}
	if err := countVersions(ctx, db, p, st, comp); err != nil {
		return fmt.Errorf("reencrypt: %s: count rows per key version: %w", p.Column.QualifiedName(), err)
	}
	return nil
}

func primaryKey(ctx context.Context, db catalog.Querier, tableOID uint32) ([]pkColumn, error) {
	rows, err := db.Query(ctx, pkSQL, tableOID)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var pk []pkColumn
	for rows.Next() {
		var k pkColumn
		if err := rows.Scan(&k.Name, &k.Type); err != nil {
			return nil, err
		}
		pk = append(pk, k)
	}
	return pk, rows.Err()
}

// countVersions fills p.Versions, p.NonEnvelope and p.Remaining.
func countVersions(ctx context.Context, db catalog.Querier, p *ColumnPlan, st *keyState, comp *Compromise) error {
	rows, err := db.Query(ctx, buildStatements(p.ref).versions, envelopePrefix)
	if err != nil {
		return err
	}
	defer rows.Close()
	p.Versions, p.NonEnvelope, p.Remaining = nil, 0, 0
	for rows.Next() {
		var (
			ringB, verB []byte
			n           int64
		)
		if err := rows.Scan(&ringB, &verB, &n); err != nil {
			return err
		}
		if len(ringB) != 4 || len(verB) != 4 {
			p.NonEnvelope += n // not an envelope, or shorter than a header
			continue
		}
		vr := VersionRows{KeyringID: binary.BigEndian.Uint32(ringB), Version: binary.BigEndian.Uint32(verB), Rows: n}
		vr.Keyring, vr.State = st.names[vr.KeyringID], st.state(vr.KeyringID, vr.Version)
		vr.Action = classify(vr, p, comp)
		if vr.Action == ActionReencrypt {
			p.Remaining += n
		}
		p.Versions = append(p.Versions, vr)
	}
	if err := rows.Err(); err != nil {
		return err
	}
	slices.SortFunc(p.Versions, func(a, b VersionRows) int {
		if c := cmp.Compare(a.KeyringID, b.KeyringID); c != 0 {
			return c
		}
		return cmp.Compare(a.Version, b.Version)
	})
	return nil
}

// classify decides what a run does with the rows under vr.
func classify(vr VersionRows, p *ColumnPlan, comp *Compromise) Action {
	switch {
	case vr.KeyringID != p.Keyring.ID:
		return ActionOtherRing
	case vr.Version == p.Active:
		return ActionCurrent
	case vr.Version > p.Active:
		return ActionExcluded // cannot happen: the active version is the newest
	case comp != nil && (comp.Keyring != p.Keyring.Name || vr.Version != comp.Version):
		return ActionNotSelected
	case vr.State == keyring.StateDecryptOnly:
		return ActionReencrypt
	case vr.State == keyring.StateDisabled && comp != nil:
		return ActionReencrypt
	}
	return ActionExcluded
}

// ColumnCount is the number of rows of one configured column that
// reference a key version.
type ColumnCount struct {
	Column catalog.Column
	Rows   int64
	// Note says why the column was not counted (it does not exist in this
	// database, or it is not bytea); Rows is then 0.
	Note string
}

// CountReferences counts, in every column of cols that exists in db's
// database as bytea, the rows whose envelope names key ring ringID,
// version `version` (one full scan per column). It is what a version's
// retirement or deletion checks: whatever the column's classification,
// since a column may have been reclassified after rows were written.
func CountReferences(ctx context.Context, db catalog.Querier, cols []catalog.Column, ringID, version uint32) ([]ColumnCount, error) {
	cat, problems, err := catalog.Resolve(ctx, db, cols)
	if err != nil {
		return nil, fmt.Errorf("reencrypt: resolve columns: %w", err)
	}
	entries := cat.Entries()
	out := make([]ColumnCount, len(entries))
	for i := range entries {
		out[i].Column = entries[i].Column
	}
	for _, p := range problems {
		if out[p.Index].Note == "" {
			out[p.Index].Note = p.String()
		}
	}
	for i := range entries {
		e := &entries[i]
		if out[i].Note != "" || !e.Bytea() {
			continue
		}
		err := db.QueryRow(ctx, countStatement(e.Schema, e.Table, e.Column.Column), envelopePrefix, be4(ringID), versionArgs([]uint32{version})).
			Scan(&out[i].Rows)
		if err != nil {
			return nil, fmt.Errorf("reencrypt: %s: count rows of key ring %d version %d: %w", e.QualifiedName(), ringID, version, err)
		}
	}
	return out, nil
}
