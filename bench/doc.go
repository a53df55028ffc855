// Package bench is the reproducible benchmark harness behind `make bench`:
// it runs pgbench against PostgreSQL directly, through PgBouncer (session
// pooling) and through pgcloak, interleaved in one run, and writes a
// Markdown report, a JSON record and PNG charts under bench/results/.
//
// The package owns the orchestration (throwaway cluster, PgBouncer and
// pgcloak processes, pgbench runs), the measurements (pgbench summary
// output, per-transaction logs for latency percentiles, proxy CPU time from
// /proc) and the reporting. Pure parts — output parsing, percentiles,
// medians, rendering — are separate functions with unit tests; the command
// bench/cmd/pgbench-compare only parses flags.
//
// Workloads and targets are data (Workload, Target): a new workload is a
// name, pgbench arguments, an optional custom script and optional setup
// SQL, and may be restricted to some targets.
package bench
