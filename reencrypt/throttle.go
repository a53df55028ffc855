package reencrypt

import (
	"context"
	"time"

	"golang.org/x/time/rate"
)

// throttle paces a run: a token bucket in rows per second, and a back-off
// when a batch takes much longer than the moving baseline of batch
// durations (the database is busier than when the run started).
type throttle struct {
	lim      *rate.Limiter
	factor   float64       // a batch slower than factor × baseline backs off
	maxPause time.Duration // longest single back-off
	warmup   int           // batches before the baseline is trusted

	baseline time.Duration // exponentially weighted moving average of batch durations
	samples  int
	slow     int // consecutive slow batches
}

// Moving-average weights: normal batches move the baseline quickly, slow
// ones slowly, so that a sustained change (the run reached a part of the
// table where matching rows are sparser) is eventually accepted as the new
// normal while a burst of load is not.
const (
	alphaNormal = 0.2
	alphaSlow   = 0.02
)

// newThrottle: rowsPerSec < 0 is unlimited; burst is the batch size (a
// batch's rows are taken from the bucket at once).
func newThrottle(rowsPerSec float64, burst int, factor float64, maxPause time.Duration) *throttle {
	limit := rate.Limit(rowsPerSec)
	if rowsPerSec < 0 {
		limit = rate.Inf
	}
	return &throttle{lim: rate.NewLimiter(limit, burst), factor: factor, maxPause: maxPause, warmup: 3}
}

// wait blocks until n rows may be processed (n ≤ burst).
func (t *throttle) wait(ctx context.Context, n int) error {
	if n <= 0 {
		return nil
	}
	return t.lim.WaitN(ctx, n)
}

// observe records a batch's duration and returns how long to pause
// before the next batch (0: none).
func (t *throttle) observe(d time.Duration) time.Duration {
	if d <= 0 {
		return 0
	}
	t.samples++
	if t.samples <= t.warmup {
		// The first batches set the baseline (their average).
		t.baseline += (d - t.baseline) / time.Duration(t.samples)
		return 0
	}
	limit := time.Duration(t.factor * float64(t.baseline))
	if d <= limit {
		t.slow = 0
		t.baseline = ewma(t.baseline, d, alphaNormal)
		return 0
	}
	t.slow++
	t.baseline = ewma(t.baseline, d, alphaSlow)
	return min(t.maxPause, time.Duration(t.slow)*d)
}

func ewma(avg, sample time.Duration, alpha float64) time.Duration {
	return avg + time.Duration(alpha*float64(sample-avg))
}
