package keyring

import (
	"errors"
	"slices"
	"sync"
	"testing"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/pgcloak/pgcloak/hsm"
)

// separateStores returns n Stores, each on its own single-connection pool,
// like n proxies or CLI runs.
func (e *env) separateStores(n int) []*Store {
	e.t.Helper()
	var out []*Store
	for range n {
		cfg, err := pgxpool.ParseConfig(e.dsn)
		if err != nil {
			e.t.Fatal(err)
		}
		cfg.MaxConns = 1
		p, err := pgxpool.NewWithConfig(e.ctx, cfg)
		if err != nil {
			e.t.Fatal(err)
		}
		e.t.Cleanup(p.Close)
		out = append(out, e.newStore(StoreOpts{Pool: p}))
	}
	return out
}

func TestConcurrentRotate(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	kr := e.ring("confidential")
	const n = 4
	stores := e.separateStores(n)
	// Hold every Wrap until all rotations have started, so they really
	// overlap: the first holds the ring lock inside Wrap, the others queue.
	release := e.kek.Block()
	var wg sync.WaitGroup
	got := make([]Version, n)
	errs := make([]error, n)
	for i, s := range stores {
		wg.Add(1)
		go func() {
			defer wg.Done()
			got[i], errs[i] = s.Rotate(e.ctx, "confidential", "concurrent")
		}()
	}
	waitFor(t, func() bool { return e.kek.Waiting() >= 1 })
	// …and the other three wait for the ring's row lock.
	waitFor(t, func() bool {
		var waiting int
		err := e.pool.QueryRow(e.ctx, `SELECT count(*) FROM pg_stat_activity
			WHERE datname = current_database() AND wait_event_type = 'Lock'`).Scan(&waiting)
		return err == nil && waiting == n-1
	})
	release()
	wg.Wait()
	var nums []int
	for i := range n {
		if errs[i] != nil {
			t.Fatalf("rotation %d: %v", i, errs[i])
		}
		nums = append(nums, int(got[i].Version))
	}
	slices.Sort(nums)
	if !slices.Equal(nums, []int{2, 3, 4, 5}) {
		t.Fatalf("concurrent rotations produced versions %v, want 2..5", nums)
	}
	vs, err := e.store.Versions(e.ctx, kr.Name)
	if err != nil {
		t.Fatal(err)
	}
	active := 0
	for _, v := range vs {
		switch {
		case v.State == StateActive:
			active++
			if v.Version != 5 {
				t.Errorf("active version %d, want 5", v.Version)
			}
		case v.State != StateDecryptOnly:
			t.Errorf("version %d is %s", v.Version, v.State)
		}
	}
	if active != 1 || len(vs) != 5 {
		t.Fatalf("%d versions, %d active", len(vs), active)
	}
	if rep, err := e.store.VerifyAudit(e.ctx); err != nil || !rep.OK() {
		t.Fatalf("audit after concurrent rotations: %+v, %v", rep, err)
	}
}

func TestRotateIfActiveAndEnsureRace(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	stores := e.separateStores(3)
	// Three proxies start at once and ensure the same ring: one creates it.
	var wg sync.WaitGroup
	created := make([]bool, len(stores))
	errs := make([]error, len(stores))
	for i, s := range stores {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, created[i], errs[i] = s.EnsureKeyring(e.ctx, KeyringSpec{Name: "internal", Purpose: PurposeEncryption, KEK: "hsm"})
		}()
	}
	wg.Wait()
	n := 0
	for i := range stores {
		if errs[i] != nil {
			t.Fatal(errs[i])
		}
		if created[i] {
			n++
		}
	}
	if n != 1 {
		t.Fatalf("%d of 3 concurrent EnsureKeyring calls created the ring, want 1", n)
	}
	// Scheduled rotation decided by two proxies: only the first acts.
	v, rotated, err := stores[0].RotateIfActive(e.ctx, "internal", 1, "age")
	if err != nil || !rotated || v.Version != 2 {
		t.Fatalf("first RotateIfActive = %+v, %v, %v", v, rotated, err)
	}
	v, rotated, err = stores[1].RotateIfActive(e.ctx, "internal", 1, "age")
	if err != nil || rotated || v.Version != 2 {
		t.Fatalf("second RotateIfActive = %+v, %v, %v; want no rotation, active 2", v, rotated, err)
	}
}

func TestEnsureKeyringSettings(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	s, ctx := e.store, e.ctx
	e.ring("confidential")
	if _, _, err := s.EnsureKeyring(ctx, KeyringSpec{Name: "confidential", Purpose: PurposeSearch, KEK: "hsm"}); !errors.Is(err, ErrKeyringMismatch) {
		t.Errorf("purpose change: %v", err)
	}
	if _, _, err := s.EnsureKeyring(ctx, KeyringSpec{Name: "confidential", Purpose: PurposeEncryption, Classification: "confidential", KEK: "other"}); !errors.Is(err, ErrKeyringMismatch) {
		t.Errorf("KEK change: %v", err)
	}
	kr, created, err := s.EnsureKeyring(ctx, KeyringSpec{Name: "confidential", Purpose: PurposeEncryption, Classification: "restricted", KEK: "hsm"})
	if err != nil || created || kr.Classification != "restricted" {
		t.Fatalf("classification change: %+v, %v, %v", kr, created, err)
	}
	tail, _ := s.AuditTail(ctx, 1)
	if len(tail) != 1 || tail[0].Event != "keyring.update" || tail[0].Details["classification_from"] != "confidential" || tail[0].Details["classification"] != "restricted" {
		t.Fatalf("classification change audit = %+v", tail)
	}
	for _, bad := range []KeyringSpec{
		{Name: "Upper", Purpose: PurposeEncryption, KEK: "hsm"},
		{Name: "", Purpose: PurposeEncryption, KEK: "hsm"},
		{Name: "x", Purpose: "signing", KEK: "hsm"},
		{Name: "x", Purpose: PurposeEncryption},
		{Name: "audit", Purpose: PurposeEncryption, KEK: "hsm"},
	} {
		if _, _, err := s.EnsureKeyring(ctx, bad); err == nil {
			t.Errorf("EnsureKeyring(%+v) accepted", bad)
		}
	}
	// A ring whose KEK is not configured cannot get a version.
	if _, _, err := s.EnsureKeyring(ctx, KeyringSpec{Name: "x", Purpose: PurposeEncryption, KEK: "missing"}); !errors.Is(err, ErrKEKNotConfigured) {
		t.Errorf("unconfigured KEK: %v", err)
	}
	if _, err := s.Keyring(ctx, "x"); !errors.Is(err, ErrNotFound) {
		t.Errorf("failed EnsureKeyring left a ring behind: %v", err)
	}
	// The KEK being down fails creation with hsm.ErrUnavailable and
	// leaves nothing behind.
	e.kek.SetUnavailable(true)
	_, err = s.Rotate(ctx, "confidential", "x")
	e.kek.SetUnavailable(false)
	if !errors.Is(err, hsm.ErrUnavailable) {
		t.Errorf("Rotate with the KEK down: %v", err)
	}
	if v := e.must(s.ActiveVersion(ctx, "confidential")); v.Version != 1 {
		t.Errorf("failed rotation changed the active version to %d", v.Version)
	}
}
