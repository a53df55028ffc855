package keyring

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pgcloak/pgcloak/keyring/audit"
)

// Defaults for the zero fields of AuditQueueOpts.
const (
	DefaultAuditQueueSize     = 4096
	DefaultAuditBatchSize     = 256
	DefaultAuditFlushInterval = time.Second
	DefaultAuditWriteTimeout  = 10 * time.Second
)

// AuditQueueOpts configures an AuditQueue.
type AuditQueueOpts struct {
	// Size bounds the records waiting to be written (queued, and kept for
	// a retry after a failed write). Default DefaultAuditQueueSize.
	Size int
	// BatchSize is the most records written in one transaction; a full
	// batch is written at once. Default DefaultAuditBatchSize.
	BatchSize int
	// FlushInterval is how often waiting records are written, and failed
	// writes retried. Default DefaultAuditFlushInterval.
	FlushInterval time.Duration
	// WriteTimeout bounds one AuditBatch. Default DefaultAuditWriteTimeout.
	WriteTimeout time.Duration
	// OnError is told about failed writes and, once per FlushInterval at
	// most, how many records were dropped (an *AuditDropError). Default:
	// the Store's OnError.
	OnError func(error)
}

// AuditQueue appends records to the audit log in the background, in
// batches (Store.AuditBatch: one transaction, one lock per batch), for
// events too frequent to append one by one on a hot path: the proxy's
// restricted-data reads. Add never blocks; records that do not fit are
// dropped, counted and reported through OnError, never silently. A
// failed write is retried at the next flush with the records kept (within
// Size). Records are written in the order they were added.
type AuditQueue struct {
	s         *Store
	ch        chan audit.Record
	size      int
	batchSize int
	interval  time.Duration
	timeout   time.Duration
	onError   func(error)

	dropped     atomic.Uint64 // since NewAuditQueue
	unreported  atomic.Uint64 // dropped since the last report
	quit        chan struct{}
	done        chan struct{}
	closeOnce   sync.Once
	closeCtx    context.Context // set before quit is closed
	closeResult error
}

// AuditDropError reports records the queue had to drop.
type AuditDropError struct {
	Dropped uint64 // since the previous report
}

func (e *AuditDropError) Error() string {
	return fmt.Sprintf("keyring: audit queue full or key store unavailable: %d audit record(s) dropped", e.Dropped)
}

// NewAuditQueue starts a queue writing to s. Close it to write what is
// left.
func (s *Store) NewAuditQueue(opts AuditQueueOpts) *AuditQueue {
	if opts.Size <= 0 {
		opts.Size = DefaultAuditQueueSize
	}
	if opts.BatchSize <= 0 {
		opts.BatchSize = DefaultAuditBatchSize
	}
	opts.BatchSize = min(opts.BatchSize, opts.Size)
	if opts.FlushInterval <= 0 {
		opts.FlushInterval = DefaultAuditFlushInterval
	}
	if opts.WriteTimeout <= 0 {
		opts.WriteTimeout = DefaultAuditWriteTimeout
	}
	if opts.OnError == nil {
		opts.OnError = s.onError
	}
	q := &AuditQueue{
		s:         s,
		ch:        make(chan audit.Record, opts.Size),
		size:      opts.Size,
		batchSize: opts.BatchSize,
		interval:  opts.FlushInterval,
		timeout:   opts.WriteTimeout,
		onError:   opts.OnError,
		quit:      make(chan struct{}),
		done:      make(chan struct{}),
	}
	go q.run()
	return q
}

// Add queues rec without blocking. It returns false, and counts the
// record as dropped, when the queue is full or closed.
func (q *AuditQueue) Add(rec audit.Record) bool {
	select {
	case <-q.quit:
		q.drop(1)
		return false
	default:
	}
	select {
	case q.ch <- rec:
		return true
	default:
		q.drop(1)
		return false
	}
}

// Dropped returns the number of records dropped since NewAuditQueue.
func (q *AuditQueue) Dropped() uint64 { return q.dropped.Load() }

func (q *AuditQueue) drop(n int) {
	q.dropped.Add(uint64(n))
	q.unreported.Add(uint64(n))
}

// Close stops accepting records, writes every waiting record (bounded by
// ctx), reports drops, and returns an error if records could not be
// written. Idempotent; later calls return the first result.
func (q *AuditQueue) Close(ctx context.Context) error {
	q.closeOnce.Do(func() {
		q.closeCtx = ctx
		close(q.quit)
		<-q.done
	})
	return q.closeResult
}

func (q *AuditQueue) run() {
	defer close(q.done)
	t := time.NewTicker(q.interval)
	defer t.Stop()
	var (
		pending []audit.Record
		failing bool // the last write failed: wait for the next tick
	)
	for {
		in := q.ch
		if failing && len(pending) >= q.size {
			in = nil // full while the key store fails: Add drops from now on
		}
		select {
		case rec := <-in:
			pending = append(pending, rec)
			if len(pending) >= q.batchSize && !failing {
				pending, failing = q.write(context.Background(), pending)
			}
		case <-t.C:
			if len(pending) > 0 {
				pending, failing = q.write(context.Background(), pending)
			}
			q.report()
		case <-q.quit:
			q.closeResult = q.drain(pending)
			return
		}
	}
}

// drain writes pending and everything still queued, under the Close ctx.
func (q *AuditQueue) drain(pending []audit.Record) error {
	for {
		select {
		case rec := <-q.ch:
			pending = append(pending, rec)
			continue
		default:
		}
		break
	}
	var failing bool
	for len(pending) > 0 && q.closeCtx.Err() == nil {
		n := len(pending)
		pending, failing = q.write(q.closeCtx, pending)
		if failing || len(pending) >= n {
			break
		}
	}
	var err error
	if len(pending) > 0 {
		q.drop(len(pending))
		err = fmt.Errorf("keyring: audit queue closed with %d record(s) unwritten", len(pending))
	}
	q.report()
	return err
}

// write appends up to BatchSize records from the front of pending and
// returns the rest. On failure it keeps them (dropping the oldest beyond
// Size) and reports failing.
func (q *AuditQueue) write(ctx context.Context, pending []audit.Record) ([]audit.Record, bool) {
	n := min(len(pending), q.batchSize)
	wctx, cancel := context.WithTimeout(ctx, q.timeout)
	defer cancel()
	if _, err := q.s.AuditBatch(wctx, pending[:n]); err != nil {
		q.onError(fmt.Errorf("keyring: audit queue: write %d record(s): %w", n, err))
		if over := len(pending) - q.size; over > 0 {
			q.drop(over)
			pending = pending[over:]
		}
		return pending, true
	}
	rest := pending[n:]
	if len(rest) == 0 {
		return pending[:0], false
	}
	// Write the next batches now if they are full.
	if len(rest) >= q.batchSize {
		return q.write(ctx, rest)
	}
	return rest, false
}

// report tells OnError how many records were dropped since the last report.
func (q *AuditQueue) report() {
	if n := q.unreported.Swap(0); n > 0 {
		q.onError(&AuditDropError{Dropped: n})
	}
}
