package keyring

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pgcloak/pgcloak/keyring/audit"
)

func readRecord(i int) audit.Record {
	return audit.Record{Event: audit.EventDataRead, Keyring: "restricted",
		Details: map[string]string{"conn": fmt.Sprint(i), "role": "app", "columns": "public.customers.ssn", "rows": "1"}}
}

// decryptEntries returns the data.read entries of the chain, oldest first.
func (e *env) decryptEntries() []audit.Entry {
	e.t.Helper()
	es, err := e.store.AuditTail(e.ctx, 100000)
	if err != nil {
		e.t.Fatal(err)
	}
	var out []audit.Entry
	for _, en := range es {
		if en.Event == audit.EventDataRead {
			out = append(out, en)
		}
	}
	return out
}

func TestAuditQueueBatches(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	before := e.chainLen()
	q := e.store.NewAuditQueue(AuditQueueOpts{BatchSize: 5, FlushInterval: time.Hour})
	// A full batch is written without waiting for the interval.
	for i := range 5 {
		if !q.Add(readRecord(i)) {
			t.Fatal("Add refused a record with room in the queue")
		}
	}
	waitFor(t, func() bool { return len(e.decryptEntries()) == 5 })
	// The rest is written by Close.
	for i := 5; i < 8; i++ {
		q.Add(readRecord(i))
	}
	if err := q.Close(e.ctx); err != nil {
		t.Fatal(err)
	}
	es := e.decryptEntries()
	if len(es) != 8 || q.Dropped() != 0 {
		t.Fatalf("%d entries, %d dropped; want 8, 0", len(es), q.Dropped())
	}
	for i, en := range es {
		if en.Details["conn"] != fmt.Sprint(i) || en.Keyring != "restricted" || en.Actor != "tester" {
			t.Errorf("entry %d: %+v (want the records in order, attributed to the store's actor)", i, en)
		}
	}
	if got := e.chainLen(); got != before+8 {
		t.Errorf("chain grew by %d, want 8", got-before)
	}
	if rep := e.verify(); !rep.OK() {
		t.Errorf("chain after batches: %+v", rep.Problems)
	}
	if q.Add(readRecord(99)) || q.Dropped() != 1 {
		t.Errorf("Add after Close accepted, or not counted (dropped %d)", q.Dropped())
	}
}

func TestAuditQueueInterval(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	q := e.store.NewAuditQueue(AuditQueueOpts{FlushInterval: 50 * time.Millisecond})
	defer q.Close(e.ctx)
	q.Add(readRecord(0))
	waitFor(t, func() bool { return len(e.decryptEntries()) == 1 })
}

// When the key store cannot be written, records are kept up to Size, the
// rest are dropped, and every drop is reported.
func TestAuditQueueDrops(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	dead := e.newStore(StoreOpts{DSN: e.dsn, OnError: func(error) {}})
	dead.Pool().Close() // every write fails
	var (
		mu               sync.Mutex
		reported, writes int
	)
	q := dead.NewAuditQueue(AuditQueueOpts{Size: 4, BatchSize: 2, FlushInterval: 20 * time.Millisecond, OnError: func(err error) {
		mu.Lock()
		defer mu.Unlock()
		var de *AuditDropError
		if errors.As(err, &de) {
			reported += int(de.Dropped)
		} else {
			writes++
		}
	}})
	refused := 0
	for i := range 40 {
		if !q.Add(readRecord(i)) {
			refused++
		}
		time.Sleep(time.Millisecond)
	}
	if refused == 0 {
		t.Error("40 records into a queue of 4 with a dead key store: none refused")
	}
	ctx, cancel := context.WithTimeout(e.ctx, 2*time.Second)
	defer cancel()
	if err := q.Close(ctx); err == nil {
		t.Error("Close with unwritable records returned nil")
	}
	mu.Lock()
	defer mu.Unlock()
	if q.Dropped() != 40 || reported != 40 || writes == 0 {
		t.Errorf("dropped %d, reported %d, failed writes reported %d; want 40, 40, >0", q.Dropped(), reported, writes)
	}
}

func TestAuditQueueConcurrent(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	q := e.store.NewAuditQueue(AuditQueueOpts{Size: 64, BatchSize: 16, FlushInterval: 10 * time.Millisecond,
		OnError: func(err error) {
			var de *AuditDropError
			if !errors.As(err, &de) {
				t.Errorf("write failed: %v", err)
			}
		}})
	var added atomic.Int64
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Go(func() {
			for i := range 50 {
				if q.Add(readRecord(w*1000 + i)) {
					added.Add(1)
				}
			}
		})
	}
	wg.Wait()
	if err := q.Close(e.ctx); err != nil {
		t.Fatal(err)
	}
	if got := int64(len(e.decryptEntries())); got != added.Load() || got+int64(q.Dropped()) != 400 {
		t.Errorf("%d entries written, %d accepted, %d dropped; want written = accepted and written + dropped = 400", got, added.Load(), q.Dropped())
	}
}

// chainLen returns the chain head's seq.
func (e *env) chainLen() int64 {
	e.t.Helper()
	h, err := audit.ReadHead(e.ctx, e.pool)
	if err != nil {
		e.t.Fatal(err)
	}
	return h.Seq
}
