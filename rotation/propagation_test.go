package rotation

import (
	"bytes"
	"fmt"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/pgcloak/pgcloak/keys"
)

// A rotation made on schedule by one proxy reaches another proxy's key
// source through NOTIFY within seconds, although that source would trust
// its remembered active version for an hour; and a third proxy that never
// heard of the new version opens values sealed with it, fetching the
// version on demand. Values sealed before the rotation keep opening.
func TestScheduledRotationPropagates(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	const limit = 20
	leader := e.newProc("leader", tick, []Policy{{Ring: "confidential", RotateAfter: 24 * time.Hour, RotateAfterEncryptions: limit}})
	source := func(p *proc, opts keys.Opts) *keys.Source {
		opts.Store = p.store
		opts.Logger = zerolog.New(p.logs)
		s, err := keys.New(opts)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = s.Close() })
		return s
	}
	runSource := func(s *keys.Source) {
		done := make(chan error, 1)
		go func() { done <- s.Run(e.ctx) }()
		t.Cleanup(func() {
			_ = s.Close()
			if err := <-done; err != nil {
				t.Errorf("Run: %v", err)
			}
		})
	}
	// The leader's own source flushes rarely: the scheduler must count its
	// unflushed encryptions.
	srcA := source(leader, keys.Opts{FlushInterval: time.Hour})
	runSource(srcA)
	other := &proc{name: "other", store: e.store(), logs: &logSink{t: t, name: "other"}}
	srcB := source(other, keys.Opts{ActiveTTL: time.Hour, PollInterval: time.Hour})
	runSource(srcB)
	third := &proc{name: "third", store: e.store(), logs: &logSink{t: t, name: "third"}}
	srcC := source(third, keys.Opts{ActiveTTL: time.Hour}) // no Run

	kb := must(srcB.EncryptionKey(e.ctx, "confidential"))(t)
	if kb.Version() != 1 {
		t.Fatalf("other proxy starts on version %d", kb.Version())
	}
	before, err := kb.Seal(nil, nil, "public.t.c", []byte("before"))
	if err != nil {
		t.Fatal(err)
	}
	e.run(leader)
	waitFor(t, 10*time.Second, "leadership", leader.s.Leading)

	// The leader's proxy seals limit values.
	for i := range limit {
		k := must(srcA.EncryptionKey(e.ctx, "confidential"))(t)
		if k.Version() != 1 {
			t.Fatalf("value %d sealed with version %d before the limit", i, k.Version())
		}
		if _, err := k.Seal(nil, nil, "public.t.c", fmt.Appendf(nil, "v%d", i)); err != nil {
			t.Fatal(err)
		}
		srcA.Encrypted(k, 1)
	}
	waitFor(t, 10*time.Second, "scheduled rotation", func() bool { return len(e.versions()) == 2 })
	rotatedAt := time.Now()
	waitFor(t, 10*time.Second, "the other proxy seals with version 2", func() bool {
		return must(srcB.EncryptionKey(e.ctx, "confidential"))(t).Version() == 2
	})
	if el := time.Since(rotatedAt); el > 5*time.Second {
		t.Errorf("the other proxy switched %v after the rotation", el)
	}
	waitFor(t, 10*time.Second, "the leader's proxy seals with version 2", func() bool {
		return must(srcA.EncryptionKey(e.ctx, "confidential"))(t).Version() == 2
	})

	k2 := must(srcB.EncryptionKey(e.ctx, "confidential"))(t)
	after, err := k2.Seal(nil, nil, "public.t.c", []byte("after"))
	if err != nil {
		t.Fatal(err)
	}
	for _, src := range []*keys.Source{srcA, srcB, srcC} {
		for _, tc := range []struct {
			env     []byte
			version uint32
			want    string
		}{{before, 1, "before"}, {after, 2, "after"}} {
			k := must(src.Key(e.ctx, e.ring.ID, tc.version))(t)
			if pt, err := k.Open(nil, tc.env, "public.t.c"); err != nil || !bytes.Equal(pt, []byte(tc.want)) {
				t.Errorf("open version %d: %q, %v", tc.version, pt, err)
			}
		}
	}
	if r := e.rotations(); len(r) != 1 {
		t.Errorf("rotations %q, want one", r)
	}
}

// must returns a function that fails the test on err and returns v.
func must[T any](v T, err error) func(t *testing.T) T {
	return func(t *testing.T) T {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
}
