package main

import (
	"fmt"
	"time"

	"github.com/pgcloak/pgcloak/keyring"
)

// reencryptStatusCmd: pgcloak reencrypt status [--json]
//
// Every re-encryption job in the key store, newest first. Reads the key
// store only (no KEK, no application database).
type reencryptStatusCmd struct {
	JSONFlag `embed:""`
}

// Help is the detailed help of `pgcloak reencrypt status --help`.
func (c *reencryptStatusCmd) Help() string {
	return `One line per job: the column, the key ring and versions (from → to), the state (running, paused, done, failed, cancelled), rows done of the estimated total, rows skipped (changed concurrently), the run that holds or last held it and its last heartbeat, and the error that stopped it. A running job whose heartbeat is more than a minute old belongs to a run that died: the next pgcloak reencrypt resumes it.

` + reencryptExitCodes
}

func (c *reencryptStatusCmd) Run(g *globals) error {
	cfg, err := g.loadConfig("", true)
	if err != nil {
		return err
	}
	store, closeStore, err := openCurrentStore(g, cfg, storeOpts{NoKEKs: true})
	if err != nil {
		return err
	}
	defer closeStore()
	jobs, err := store.Jobs(g.ctx)
	if err != nil {
		return storeErr(err)
	}
	if c.JSON {
		out := make([]jobJSON, 0, len(jobs))
		for _, j := range jobs {
			out = append(out, newJobJSON(j))
		}
		return writeJSON(g, out)
	}
	if len(jobs) == 0 {
		fmt.Fprintln(g.stdout, "no re-encryption job recorded")
		return nil
	}
	tw := newTable(g)
	fmt.Fprintln(tw, "JOB\tCOLUMN\tKEY RING\tFROM\tTO\tSTATE\tDONE\tSKIPPED\tOWNER\tHEARTBEAT\tUPDATED\tERROR")
	for _, j := range jobs {
		from := "older"
		if j.FromVersion != 0 {
			from = fmt.Sprint(j.FromVersion)
		}
		done := fmt.Sprint(j.RowsDone)
		if j.RowsTotal >= 0 {
			done += fmt.Sprintf("/%d", j.RowsTotal)
		}
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%d\t%s\t%s\t%d\t%s\t%s\t%s\t%s\n", j.ID, j.QualifiedColumn(), j.Keyring, from, j.ToVersion,
			j.State, done, j.RowsSkipped, orDash(j.Owner), fmtTime(j.HeartbeatAt), fmtTime(j.UpdatedAt), orDash(j.Error))
	}
	return tw.Flush()
}

// jobJSON is a job as `reencrypt status --json` prints it. last_pk holds
// primary-key values (never encrypted values).
type jobJSON struct {
	ID          int64     `json:"id"`
	Keyring     string    `json:"keyring"`
	KeyringID   uint32    `json:"keyring_id"`
	FromVersion uint32    `json:"from_version,omitempty"`
	ToVersion   uint32    `json:"to_version"`
	Table       string    `json:"table"`
	Column      string    `json:"column"`
	PKColumns   []string  `json:"pk_columns"`
	State       string    `json:"state"`
	Forced      bool      `json:"forced"`
	LastPK      []string  `json:"last_pk"`
	RowsTotal   *int64    `json:"rows_total"`
	RowsDone    int64     `json:"rows_done"`
	RowsSkipped int64     `json:"rows_skipped"`
	BatchSize   int       `json:"batch_size,omitempty"`
	Owner       string    `json:"owner,omitempty"`
	HeartbeatAt time.Time `json:"heartbeat_at,omitzero"`
	Error       string    `json:"error,omitempty"`
	CreatedAt   time.Time `json:"created_at"`
	CreatedBy   string    `json:"created_by"`
	StartedAt   time.Time `json:"started_at,omitzero"`
	UpdatedAt   time.Time `json:"updated_at"`
	FinishedAt  time.Time `json:"finished_at,omitzero"`
}

func newJobJSON(j keyring.Job) jobJSON {
	out := jobJSON{ID: j.ID, Keyring: j.Keyring, KeyringID: j.KeyringID, FromVersion: j.FromVersion, ToVersion: j.ToVersion,
		Table: j.Table, Column: j.Column, PKColumns: j.PKColumns, State: string(j.State), Forced: j.Forced, LastPK: j.LastPK,
		RowsDone: j.RowsDone, RowsSkipped: j.RowsSkipped, BatchSize: j.BatchSize, Owner: j.Owner, HeartbeatAt: j.HeartbeatAt,
		Error: j.Error, CreatedAt: j.CreatedAt, CreatedBy: j.CreatedBy, StartedAt: j.StartedAt, UpdatedAt: j.UpdatedAt, FinishedAt: j.FinishedAt}
	if j.RowsTotal >= 0 {
		t := j.RowsTotal
		out.RowsTotal = &t
	}
	return out
}
