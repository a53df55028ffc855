package bench

import (
	"encoding/json"
	"math"
	"time"
)

// Events of the rotation scenario, in the order they run.
const (
	EventRotate    = "rotate"    // pgcloak keys rotate RING
	EventReencrypt = "reencrypt" // pgcloak reencrypt --dsn APP_DSN (default throttle)
	EventRetire    = "retire"    // pgcloak keys set-state RING OLD retired --dsn APP_DSN --yes
)

// RotationEvent is one step of the scenario: when its command started and
// ended, in seconds since pgbench started.
type RotationEvent struct {
	Name  string  `json:"name"` // EventRotate, EventReencrypt, EventRetire
	Start float64 `json:"start_s"`
	End   float64 `json:"end_s"`
	Error string  `json:"error,omitempty"`
}

// Took is the event's duration in seconds.
func (e RotationEvent) Took() float64 { return e.End - e.Start }

// TPSPoint is one --progress interval of the scenario's pgbench run.
type TPSPoint struct {
	Start    float64 `json:"start_s"` // seconds since pgbench started
	End      float64 `json:"end_s"`
	TPS      float64 `json:"tps"`
	LatAvgMs float64 `json:"lat_avg_ms"`
	Failed   int64   `json:"failed"`
}

// TimelineFromProgress turns pgbench progress lines into points on the
// scenario's clock: origin is subtracted from every line's time (with
// --progress-timestamp, the Unix time pgbench was started at; 0 for the
// relative form). An interval starts where the previous one ended, the
// first interval seconds before its end.
func TimelineFromProgress(lines []ProgressLine, origin, interval float64) []TPSPoint {
	out := make([]TPSPoint, 0, len(lines))
	for i, l := range lines {
		end := l.At - origin
		start := end - interval
		if i > 0 {
			start = out[i-1].End
		}
		out = append(out, TPSPoint{Start: start, End: end, TPS: l.TPS, LatAvgMs: l.LatAvgMs, Failed: l.Failed})
	}
	return out
}

// ReencryptColumn is what `pgcloak reencrypt` did to one column (its
// --json output).
type ReencryptColumn struct {
	Column      string `json:"column"`
	Outcome     string `json:"outcome"` // "done", "nothing to do", …
	Passes      int    `json:"passes"`
	Reencrypted int64  `json:"reencrypted"`
	Skipped     int64  `json:"skipped"`        // changed concurrently: not overwritten
	Unchanged   int64  `json:"left_unchanged"` // could not be re-encrypted
}

// RotationResult is everything the rotation scenario recorded.
type RotationResult struct {
	Workload string        `json:"workload"` // the pgbench workload behind the rotation
	Clients  int           `json:"clients"`
	Threads  int           `json:"threads"`
	Duration time.Duration `json:"duration_ns"`  // pgbench -T
	RotateAt time.Duration `json:"rotate_at_ns"` // when the rotation was due
	// Keyring is the key ring of the encrypted columns; FromVersion was
	// active before the rotation and is retired at the end, ToVersion is
	// the one the rotation made active.
	Keyring     string `json:"keyring"`
	FromVersion uint32 `json:"from_version"`
	ToVersion   uint32 `json:"to_version"`
	// TableRows is how many rows the encrypted table held; AddedRows of
	// them were added for the scenario and are never touched by the
	// workload, so only the re-encryption rewrites them.
	TableRows int64 `json:"table_rows"`
	AddedRows int   `json:"added_rows"`

	Series  []TPSPoint        `json:"series"` // one point per second
	Events  []RotationEvent   `json:"events"`
	Columns []ReencryptColumn `json:"reencrypt_columns"`

	// The pgbench summary of the whole run, and the clients it reported
	// as aborted (an error other than a serialization failure).
	TPS       float64 `json:"tps"`
	Processed int64   `json:"processed"`
	Failed    int64   `json:"failed"`
	Aborted   int     `json:"aborted_clients"`
	// ProxyStats are the counters the scenario's pgcloak-enc logged when
	// it stopped.
	ProxyStats *StoppedStats `json:"proxy_stats,omitempty"`
	// MaxDip is the goal for the TPS dip during re-encryption (a
	// fraction); 0 = not checked.
	MaxDip float64 `json:"max_dip,omitempty"`
}

// Event returns the named event, if it ran.
func (r *RotationResult) Event(name string) (RotationEvent, bool) {
	for _, e := range r.Events {
		if e.Name == name {
			return e, true
		}
	}
	return RotationEvent{}, false
}

// ReencryptedRows is the total over the columns.
func (r *RotationResult) ReencryptedRows() (reencrypted, skipped, unchanged int64) {
	for _, c := range r.Columns {
		reencrypted += c.Reencrypted
		skipped += c.Skipped
		unchanged += c.Unchanged
	}
	return reencrypted, skipped, unchanged
}

// rotationSkip is how many seconds of traffic at the start count in no
// window (connections, first plans).
const rotationSkip = 2.0

// RotationWindow is the traffic of one phase of the scenario: the
// intervals that lie wholly within [From, To].
type RotationWindow struct {
	From, To    float64 // seconds since pgbench started
	Seconds     int     // intervals inside
	MedianTPS   float64 // NaN when Seconds is 0
	MinTPS      float64
	MaxTPS      float64
	MedianLatMs float64 // median of the intervals' average latencies
	Failed      int64
	tps         []float64
}

// RotationAnalysis splits the scenario's traffic at its events: before
// the rotation (after the first rotationSkip seconds), during the
// re-encryption command, and after the retirement (or after the last
// event that ran). The seconds between (the rotation itself, the
// retirement's reference count) belong to no window.
type RotationAnalysis struct {
	Before, During, After RotationWindow
	// OutsideTPS is the median TPS of the seconds before and after,
	// together.
	OutsideTPS float64
	// Dip is 1 − During.MedianTPS ÷ OutsideTPS (negative when the traffic
	// was faster during the re-encryption); NaN when a window is empty.
	Dip float64
	// ReencryptSeconds is the wall time of the re-encryption command;
	// NaN when it did not run.
	ReencryptSeconds float64
}

// Analysis computes the windows and the dip.
func (r *RotationResult) Analysis() RotationAnalysis {
	end := r.Duration.Seconds()
	if n := len(r.Series); n > 0 {
		end = max(end, r.Series[n-1].End)
	}
	nan := math.NaN()
	beforeTo, afterFrom := end, end
	if len(r.Events) > 0 {
		beforeTo, afterFrom = r.Events[0].Start, r.Events[len(r.Events)-1].End
	}
	var a RotationAnalysis
	a.Before = window(r.Series, rotationSkip, beforeTo)
	a.After = window(r.Series, afterFrom, end)
	a.During = window(r.Series, nan, nan)
	a.ReencryptSeconds = nan
	if e, ok := r.Event(EventReencrypt); ok {
		a.During = window(r.Series, e.Start, e.End)
		a.ReencryptSeconds = e.Took()
	}
	a.OutsideTPS = Median(append(append([]float64(nil), a.Before.tps...), a.After.tps...))
	a.Dip = math.NaN()
	if !math.IsNaN(a.OutsideTPS) && a.OutsideTPS > 0 && !math.IsNaN(a.During.MedianTPS) {
		a.Dip = 1 - a.During.MedianTPS/a.OutsideTPS
	}
	return a
}

// windowSlack absorbs the millisecond rounding of progress timestamps.
const windowSlack = 0.001

// window collects the points wholly within [from, to]; NaN bounds select
// nothing.
func window(series []TPSPoint, from, to float64) RotationWindow {
	w := RotationWindow{From: from, To: to}
	var lat []float64
	for _, p := range series {
		if p.Start >= from-windowSlack && p.End <= to+windowSlack {
			w.tps = append(w.tps, p.TPS)
			lat = append(lat, p.LatAvgMs)
			w.Failed += p.Failed
		}
	}
	w.Seconds = len(w.tps)
	w.MedianTPS, w.MedianLatMs = Median(w.tps), Median(lat)
	w.MinTPS, w.MaxTPS = MinMax(w.tps)
	return w
}

// MarshalJSON adds the analysis (windows, dip) to the recorded data;
// figures that do not exist (an empty window) are null.
func (r RotationResult) MarshalJSON() ([]byte, error) {
	type plain RotationResult // without this method
	a := r.Analysis()
	return json.Marshal(struct {
		plain
		Analysis analysisJSON `json:"analysis"`
	}{plain(r), analysisJSON{
		Before: a.Before.json(), During: a.During.json(), After: a.After.json(),
		OutsideTPS: finite(a.OutsideTPS), Dip: finite(a.Dip), ReencryptSeconds: finite(a.ReencryptSeconds),
	}})
}

type analysisJSON struct {
	Before           windowJSON `json:"before_rotation"`
	During           windowJSON `json:"during_reencryption"`
	After            windowJSON `json:"after_retirement"`
	OutsideTPS       *float64   `json:"outside_median_tps"`
	Dip              *float64   `json:"dip"`
	ReencryptSeconds *float64   `json:"reencrypt_s"`
}

type windowJSON struct {
	From        *float64 `json:"from_s"`
	To          *float64 `json:"to_s"`
	Seconds     int      `json:"seconds"`
	MedianTPS   *float64 `json:"median_tps"`
	MinTPS      *float64 `json:"min_tps"`
	MaxTPS      *float64 `json:"max_tps"`
	MedianLatMs *float64 `json:"median_lat_avg_ms"`
	Failed      int64    `json:"failed"`
}

func (w RotationWindow) json() windowJSON {
	return windowJSON{From: finite(w.From), To: finite(w.To), Seconds: w.Seconds, MedianTPS: finite(w.MedianTPS),
		MinTPS: finite(w.MinTPS), MaxTPS: finite(w.MaxTPS), MedianLatMs: finite(w.MedianLatMs), Failed: w.Failed}
}

// finite is &v, or nil for NaN and ±Inf (which JSON cannot hold).
func finite(v float64) *float64 {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return nil
	}
	return &v
}
