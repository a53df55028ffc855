// Command pgbench-compare runs pgbench against PostgreSQL directly, through
// PgBouncer (session pooling) and through pgcloak (pass-through, and with
// encrypted columns), interleaved, then the key-rotation scenario, and
// writes a Markdown report, a JSON record and charts to bench/results/.
// `make bench` runs it; see `-h` for the flags.
package main
