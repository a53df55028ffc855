// Package hsmtest creates throwaway SoftHSM2 tokens for tests: a
// softhsm2.conf and token directory in a temporary directory, a token
// initialised with random PINs, removed by Close.
package hsmtest
