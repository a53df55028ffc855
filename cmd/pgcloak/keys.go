package main

import (
	"errors"
	"fmt"
	"time"

	"github.com/pgcloak/pgcloak/keyring"
)

func init() {
	register("keys", "Manage key rings and key versions (DEKs) in the key store: create, list, rotate, retire, delete.", func() any { return &keysCmd{} })
}

// keysCmd groups the key-lifecycle verbs. Each verb lives in its own file
// (keys_*.go). Exit codes: see exitRefused in keystore.go.
type keysCmd struct {
	Init             keysInitCmd             `cmd:"" help:"Create the key store schema and every key ring the configuration needs (idempotent)."`
	List             keysListCmd             `cmd:"" help:"List every key ring and its versions."`
	Show             keysShowCmd             `cmd:"" help:"Show one key ring and its versions, or one version in detail."`
	Rotate           keysRotateCmd           `cmd:"" help:"Create a new active version of a key ring; the previous one becomes decrypt_only."`
	SetState         keysSetStateCmd         `cmd:"" name:"set-state" help:"Move a version to decrypt_only, retired or disabled."`
	ScheduleDeletion keysScheduleDeletionCmd `cmd:"" name:"schedule-deletion" help:"Schedule a retired or disabled version for destruction after 7 to 30 days."`
	CancelDeletion   keysCancelDeletionCmd   `cmd:"" name:"cancel-deletion" help:"Cancel a scheduled deletion; the version returns to retired (or disabled)."`
	DestroyDue       keysDestroyDueCmd       `cmd:"" name:"destroy-due" help:"Destroy (crypto-shred) every version whose deletion window has ended."`
	ExportWrapped    keysExportWrappedCmd    `cmd:"" name:"export-wrapped" help:"Export the wrapped DEKs and their metadata as JSON, for backup (never a plaintext key)."`
	Compromise       keysCompromiseCmd       `cmd:"" help:"Compromise response: disable a version at once, re-encrypt its rows, schedule its destruction (resumable)."`
}

// Help is the detailed help of `pgcloak keys --help`.
func (c *keysCmd) Help() string {
	return `Key rings are named after their classification ("confidential"); a search key ring adds ":search"; the audit key ring is "audit". Versions move active → decrypt_only → retired → pending_deletion → deleted; disabled blocks a version at once (compromise). Every change is recorded in the hash-chained audit log (pgcloak audit verify).

` + exitCodesHelp
}

// versionJSON is a key version as `keys list/show --json` print it.
type versionJSON struct {
	Keyring          string    `json:"keyring"`
	KeyringID        uint32    `json:"keyring_id"`
	Purpose          string    `json:"purpose"`
	Classification   string    `json:"classification"`
	Version          uint32    `json:"version"`
	State            string    `json:"state"`
	KEK              string    `json:"kek"`
	KEKKeyID         string    `json:"kek_key_id,omitempty"`
	CreatedAt        time.Time `json:"created_at"`
	CreatedBy        string    `json:"created_by"`
	ActivatedAt      time.Time `json:"activated_at,omitzero"`
	StateChangedAt   time.Time `json:"state_changed_at"`
	StateChangedBy   string    `json:"state_changed_by"`
	StateChangedRole string    `json:"state_changed_role"`
	StateReason      string    `json:"state_reason,omitempty"`
	PriorState       string    `json:"prior_state,omitempty"`
	DeletionAfter    time.Time `json:"deletion_after,omitzero"`
	DeletedAt        time.Time `json:"deleted_at,omitzero"`
	RewrappedAt      time.Time `json:"rewrapped_at,omitzero"`
	Encryptions      int64     `json:"encryptions"`
	Destroyed        bool      `json:"destroyed"`
}

func newVersionJSON(v keyring.Version, classification string) versionJSON {
	return versionJSON{
		Keyring: v.Keyring, KeyringID: v.KeyringID, Purpose: string(v.Purpose), Classification: classification,
		Version: v.Version, State: string(v.State), KEK: v.KEK, KEKKeyID: v.KEKKeyID,
		CreatedAt: v.CreatedAt, CreatedBy: v.CreatedBy, ActivatedAt: v.ActivatedAt,
		StateChangedAt: v.StateChangedAt, StateChangedBy: v.StateChangedBy, StateChangedRole: v.StateChangedRole,
		StateReason: v.StateReason, PriorState: string(v.PriorState), DeletionAfter: v.DeletionAfter,
		DeletedAt: v.DeletedAt, RewrappedAt: v.RewrappedAt, Encryptions: v.Encryptions, Destroyed: v.Destroyed,
	}
}

// keyringJSON is a key ring as `keys show --json` and `keys init --json`
// print it.
type keyringJSON struct {
	ID             uint32    `json:"id"`
	Name           string    `json:"name"`
	Purpose        string    `json:"purpose"`
	Classification string    `json:"classification"`
	Environment    string    `json:"environment,omitempty"`
	KEK            string    `json:"kek"`
	CreatedAt      time.Time `json:"created_at"`
	CreatedBy      string    `json:"created_by"`
	UpdatedAt      time.Time `json:"updated_at"`
	UpdatedBy      string    `json:"updated_by"`
}

func newKeyringJSON(r keyring.Keyring) keyringJSON {
	return keyringJSON{ID: r.ID, Name: r.Name, Purpose: string(r.Purpose), Classification: r.Classification,
		Environment: r.Environment, KEK: r.KEK, CreatedAt: r.CreatedAt, CreatedBy: r.CreatedBy,
		UpdatedAt: r.UpdatedAt, UpdatedBy: r.UpdatedBy}
}

// versionArg checks a VERSION argument (versions start at 1).
func versionArg(v uint32) error {
	if v == 0 {
		return usageErr(errors.New("VERSION: key versions start at 1"))
	}
	return nil
}

// describeVersion is one line about a version for the verbs' output.
func describeVersion(v keyring.Version) string {
	s := fmt.Sprintf("%s version %d: %s", v.Keyring, v.Version, v.State)
	switch v.State {
	case keyring.StatePendingDeletion:
		s += fmt.Sprintf(" (destroyed after %s unless cancelled)", fmtTime(v.DeletionAfter))
	case keyring.StateDeleted:
		s += fmt.Sprintf(" (destroyed at %s)", fmtTime(v.DeletedAt))
	}
	return s
}
