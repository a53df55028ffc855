// Package integration holds black-box tests of the real pgcloak binary:
// TestMain builds cmd/pgcloak once, each test starts `pgcloak serve` in
// front of a throwaway PostgreSQL cluster (internal/pgtest) and drives it
// with real clients: pgx in every QueryExecMode, psql and pgbench.
//
// The tests skip when PostgreSQL or a client tool is missing, and fail
// instead when PGCLOAK_REQUIRE_INTEGRATION=1 (CI). When the tests are
// built with -race, the binary under test is built with -race as well.
package integration
