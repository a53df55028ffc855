package main

func init() {
	register("audit", "Verify and read the hash-chained audit log of key events.", func() any { return &auditCmd{} })
}

// auditCmd groups the audit-log verbs (audit_*.go).
type auditCmd struct {
	Verify auditVerifyCmd `cmd:"" help:"Verify the audit log's hash chain and its HSM-keyed checkpoints; exit 1 on any sign of tampering."`
	Tail   auditTailCmd   `cmd:"" help:"Print the last audit entries."`
}

// Help is the detailed help of `pgcloak audit --help`.
func (c *auditCmd) Help() string {
	return `Every key event (key ring and version creation, rotation, state change, re-wrap, destruction, export, access denial) is appended to pgcloak.audit_log in the same transaction as the change. Each entry hashes the previous one; checkpoints MAC the chain's head with a key of the audit key ring, which only a holder of the KEK can produce.

` + exitCodesHelp
}
