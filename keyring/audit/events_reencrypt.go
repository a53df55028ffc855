package audit

// Events of re-encryption, retirement checks and the compromise response
// (issue 6). Like the constants in entry.go they are stored in the chain
// and never change meaning. Their details carry names, versions and
// counts, never a value and never a primary-key value.
const (
	// EventReencryptStart: a run started or resumed a re-encryption job;
	// details: job, table, column, from_version ("" = every older
	// version), to_version, resumed, owner.
	EventReencryptStart = "reencrypt.start"
	// EventReencryptFinish: a run ended its job; details: job, table,
	// column, state (done, paused, failed, cancelled), rows_done,
	// rows_skipped, error.
	EventReencryptFinish = "reencrypt.finish"
	// EventReencryptForce: a job held by another run whose heartbeat was
	// still fresh was taken over (reencrypt --force, or keys compromise);
	// details: job, table, column, previous_owner, reason.
	EventReencryptForce = "reencrypt.force"
	// EventKeyForced: a lifecycle change (retired, pending_deletion) went
	// ahead although rows still referenced the version, or without
	// counting them; details: the change, rows per column ("rows:
	// schema.table.column"), total ("" when not counted), reason.
	EventKeyForced = "key.forced"
	// EventKeyCompromise: a step of `pgcloak keys compromise`; details:
	// step (started, reencrypted, completed), new_active, counts.
	EventKeyCompromise = "key.compromise"
)
