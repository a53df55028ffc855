// Package pgtest runs throwaway PostgreSQL clusters for tests, benchmarks
// and `pgcloak dev`.
//
// Start runs initdb into a fresh temporary directory, starts `postgres` as
// a child process on a free loopback port (as the OS user "postgres" when
// the caller is root) and returns a Cluster; Stop shuts it down and removes
// the directory. Clusters are tuned for speed (fsync off) and must never
// hold data anyone cares about.
//
// The package does not import "testing": New and Require take the small TB
// interface so that non-test code (cmd/pgcloak) can import the package.
package pgtest
