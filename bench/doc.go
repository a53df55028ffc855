// Package bench is the reproducible benchmark harness behind `make bench`:
// it runs pgbench against PostgreSQL directly, through PgBouncer (session
// pooling) and through pgcloak, interleaved in one run, and writes a
// Markdown report, a JSON record and PNG charts under bench/results/.
// Encrypted workloads run on a second pgcloak process, pgcloak-enc, that
// has a key store, a KEK and encrypted columns, each against a plaintext
// baseline through the same process. The rotation scenario runs pgbench
// on a fresh pgcloak-enc while the key ring is rotated, every row
// re-encrypted and the old version retired through the pgcloak CLI, and
// charts TPS per second around those steps.
//
// The package owns the orchestration (throwaway cluster, PgBouncer and
// pgcloak processes, the key store and KEK of pgcloak-enc, pgbench runs),
// the measurements (pgbench summary output, per-transaction logs for
// latency percentiles, proxy and server CPU time from /proc, pgcloak's
// shutdown counters, pgbench's per-second progress lines) and the
// reporting. Pure parts — output parsing, scheduling, percentiles,
// medians, the rotation windows, rendering — are separate functions
// with unit tests; the command bench/cmd/pgbench-compare only parses
// flags.
//
// Workloads and targets are data (Workload, Target): a new workload is a
// name, pgbench arguments, an optional custom script and optional setup
// SQL, may be restricted to some targets and may name a baseline to be
// measured against.
package bench
