// Command pgcloak is the one pgcloak binary: the proxy (serve), its
// configuration checker (config check), a throwaway local stack (dev), the
// key-management verbs (kek create|info|rotate, keys …, audit verify|tail),
// the application-database verbs (schema check|apply) and re-encryption
// (reencrypt, reencrypt status, keys compromise).
//
// main.go only wires kong. Each top-level verb lives in its own file and
// registers itself there (see register in main.go), so adding `keys …`,
// `kek …` or `audit …` is one new file. Shared plumbing — global flags,
// logging, loading the configuration, exit codes — is in globals.go.
package main
