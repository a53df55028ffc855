package keyring

import (
	"encoding/json"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pgcloak/pgcloak/hsm"
	"github.com/pgcloak/pgcloak/hsm/hsmfake"
)

func TestExportWrapped(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx, s := e.ctx, e.store
	kr := e.ring("confidential")
	e.must(s.Rotate(ctx, "confidential", "r"))
	e.must(s.SetState(ctx, "confidential", 1, StateRetired, "r"))
	e.must(s.ScheduleDeletion(ctx, "confidential", 1, MinDeletionWindow, "r"))
	e.timeTravel(kr.ID, 1, time.Hour)
	if _, err := s.DestroyDue(ctx); err != nil {
		t.Fatal(err)
	}
	dek2, err := s.LoadDEK(ctx, kr.ID, 2)
	if err != nil {
		t.Fatal(err)
	}

	ex, err := s.ExportWrapped(ctx, "confidential")
	if err != nil {
		t.Fatal(err)
	}
	if ex.Format != ExportFormat || len(ex.Keyrings) != 1 || len(ex.Keyrings[0].Versions) != 2 {
		t.Fatalf("export = %+v", ex)
	}
	v1, v2 := ex.Keyrings[0].Versions[0], ex.Keyrings[0].Versions[1]
	if v1.State != StateDeleted || v1.WrappedDEK != nil || v1.DeletedAt.IsZero() {
		t.Errorf("deleted version exported as %+v", v1)
	}
	// The export holds the wrapped DEK only, and it unwraps with the KEK
	// and the documented associated data.
	if len(v2.WrappedDEK) == 0 || strings.Contains(string(v2.WrappedDEK), string(dek2.Expose())) {
		t.Fatalf("exported version 2 = %+v", v2)
	}
	got, err := e.kek.Unwrap(ctx, v2.WrappedDEK, DEKAssociatedData(ex.Keyrings[0].ID, ex.Keyrings[0].Name, ex.Keyrings[0].Purpose, v2.Version))
	if err != nil || !got.Equal(dek2) {
		t.Fatalf("unwrapping the export: %v", err)
	}
	js, err := json.Marshal(ex)
	if err != nil || !strings.Contains(string(js), `"format":"pgcloak-wrapped-deks/v1"`) {
		t.Fatalf("JSON: %s, %v", js, err)
	}
	all, err := s.ExportWrapped(ctx, "")
	if err != nil || len(all.Keyrings) != 2 { // audit + confidential
		t.Fatalf("export of everything: %d rings, %v", len(all.Keyrings), err)
	}
	if _, err := s.ExportWrapped(ctx, "nope"); !errors.Is(err, ErrNotFound) {
		t.Errorf("export of an unknown ring: %v", err)
	}
	tail, _ := s.AuditTail(ctx, 1)
	if len(tail) != 1 || tail[0].Event != "key.export" || tail[0].Details["scope"] != "*" {
		t.Errorf("export not audited: %+v", tail)
	}
}

func TestRewrapAll(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := e.ctx
	newKEK := hsmfake.New()
	s := e.newStore(StoreOpts{KEKs: map[string]hsm.KEK{"hsm": e.kek, "hsm2": newKEK}})
	kr := e.ring("confidential")
	e.must(s.Rotate(ctx, "confidential", "r"))
	e.must(s.SetState(ctx, "confidential", 1, StateRetired, "r"))
	e.must(s.ScheduleDeletion(ctx, "confidential", 1, MinDeletionWindow, "r"))
	e.timeTravel(kr.ID, 1, time.Hour)
	if _, err := s.DestroyDue(ctx); err != nil {
		t.Fatal(err)
	}
	e.must(s.Rotate(ctx, "confidential", "r")) // versions: 1 deleted, 2 decrypt_only, 3 active
	before := map[uint32][]byte{}
	for _, v := range []uint32{2, 3} {
		k, err := s.LoadDEK(ctx, kr.ID, v)
		if err != nil {
			t.Fatal(err)
		}
		before[v] = append([]byte(nil), k.Expose()...)
	}

	// The new KEK fails half-way: nothing changes.
	newKEK.SetUnavailable(true)
	if _, err := s.RewrapAll(ctx, "hsm", "hsm2"); !errors.Is(err, hsm.ErrUnavailable) {
		t.Fatalf("RewrapAll with the new KEK down: %v", err)
	}
	newKEK.SetUnavailable(false)
	if v := e.must(s.Get(ctx, "confidential", 2)); v.KEK != "hsm" {
		t.Fatalf("failed RewrapAll changed version 2 to KEK %q", v.KEK)
	}

	// audit v1, confidential v2 and v3; the deleted v1 has nothing to wrap.
	if n, err := s.RewrapAll(ctx, "hsm", "hsm2"); err != nil || n != 3 {
		t.Fatalf("RewrapAll = %d, %v; want 3 versions", n, err)
	}
	all, err := s.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range all {
		switch {
		case v.State == StateDeleted:
			if v.KEK != "hsm" || !v.RewrappedAt.IsZero() {
				t.Errorf("deleted version %s/%d was re-wrapped", v.Keyring, v.Version)
			}
		case v.KEK != "hsm2" || v.RewrappedAt.IsZero():
			t.Errorf("version %s/%d: KEK %q after RewrapAll", v.Keyring, v.Version, v.KEK)
		}
	}
	if kr2, err := s.Keyring(ctx, "confidential"); err != nil || kr2.KEK != "hsm2" {
		t.Errorf("key ring KEK = %q, %v; want hsm2", kr2.KEK, err)
	}
	// Only the new KEK unwraps now, and the DEKs are the same keys.
	onlyNew := e.newStore(StoreOpts{KEKs: map[string]hsm.KEK{"hsm2": newKEK}})
	for v, want := range before {
		k, err := onlyNew.LoadDEK(ctx, kr.ID, v)
		if err != nil || string(k.Expose()) != string(want) {
			t.Fatalf("LoadDEK(%d) with only the new KEK: %v (same key: %v)", v, err, err == nil && string(k.Expose()) == string(want))
		}
	}
	oldUnderNewName := e.newStore(StoreOpts{KEKs: map[string]hsm.KEK{"hsm2": e.kek}})
	if _, err := oldUnderNewName.LoadDEK(ctx, kr.ID, 3); !errors.Is(err, hsm.ErrUnwrap) {
		t.Fatalf("old KEK after RewrapAll: %v, want hsm.ErrUnwrap", err)
	}
	// New versions are wrapped by the new KEK.
	if v := e.must(s.Rotate(ctx, "confidential", "r")); v.KEK != "hsm2" {
		t.Errorf("new version wrapped by %q", v.KEK)
	}
	if rep, err := s.VerifyAudit(ctx); err != nil || !rep.OK() {
		t.Fatalf("audit after RewrapAll: %+v, %v", rep, err)
	}
}

func TestEncryptionCounters(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	s := e.store
	kr := e.ring("confidential")
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 1000 {
				s.CountEncryptions(kr.ID, 1, 1)
			}
		}()
	}
	wg.Wait()
	if got := s.UnflushedEncryptions(kr.ID, 1); got != 8000 {
		t.Fatalf("unflushed = %d", got)
	}
	s.CountEncryptions(kr.ID, 77, 5) // unknown version: dropped at flush
	if err := s.Flush(e.ctx); err != nil {
		t.Fatal(err)
	}
	s.CountEncryptions(kr.ID, 1, 2)
	if err := s.Flush(e.ctx); err != nil {
		t.Fatal(err)
	}
	if err := s.Flush(e.ctx); err != nil { // nothing to do
		t.Fatal(err)
	}
	if v := e.must(s.Get(e.ctx, "confidential", 1)); v.Encryptions != 8002 {
		t.Fatalf("encryptions = %d, want 8002", v.Encryptions)
	}
	// A failed flush keeps the counts.
	s.CountEncryptions(kr.ID, 1, 10)
	e.exec("ALTER TABLE pgcloak.key_versions RENAME COLUMN encryptions TO enc")
	if err := s.Flush(e.ctx); err == nil {
		t.Fatal("flush against a broken table succeeded")
	}
	e.exec("ALTER TABLE pgcloak.key_versions RENAME COLUMN enc TO encryptions")
	if got := s.UnflushedEncryptions(kr.ID, 1); got != 10 {
		t.Fatalf("after a failed flush, unflushed = %d, want 10", got)
	}
	if err := s.Flush(e.ctx); err != nil {
		t.Fatal(err)
	}
	if v := e.must(s.Get(e.ctx, "confidential", 1)); v.Encryptions != 8012 {
		t.Fatalf("encryptions = %d, want 8012", v.Encryptions)
	}
}
