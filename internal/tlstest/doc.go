// Package tlstest issues throwaway X.509 certificates for tests: a
// self-signed CA and leaf certificates for loopback host names and
// addresses. Keys are generated at run time (ECDSA P-256) and never
// committed. Not for production use.
package tlstest
