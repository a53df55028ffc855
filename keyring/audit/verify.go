package audit

import (
	"context"
	"crypto/hmac"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/pgcloak/pgcloak/crypto/secret"
)

// ProblemKind classifies what Verify found. The zero value is invalid.
type ProblemKind string

const (
	// ProblemEdited: an entry's content does not match its hash.
	ProblemEdited ProblemKind = "edited"
	// ProblemReordered: an intact entry sits at another seq than the one
	// it was written at (rows swapped or renumbered).
	ProblemReordered ProblemKind = "reordered"
	// ProblemMissing: a gap in seq: entries were deleted.
	ProblemMissing ProblemKind = "missing"
	// ProblemInserted: an entry that is not part of the chain (its
	// successor links past it, or it lies beyond the chain head).
	ProblemInserted ProblemKind = "inserted"
	// ProblemBrokenLink: an intact entry does not link to its predecessor:
	// the predecessor was replaced (with a recomputed hash) or entries
	// were moved.
	ProblemBrokenLink ProblemKind = "broken_link"
	// ProblemTruncated: the chain head or a checkpoint names entries
	// beyond the end of the log: the tail was deleted.
	ProblemTruncated ProblemKind = "truncated"
	// ProblemHead: the chain head row disagrees with the log.
	ProblemHead ProblemKind = "head_mismatch"
	// ProblemCheckpointMismatch: a checkpoint names another hash than the
	// entry at its seq: the log up to there was rewritten.
	ProblemCheckpointMismatch ProblemKind = "checkpoint_mismatch"
	// ProblemCheckpointForged: a checkpoint's MAC does not verify.
	ProblemCheckpointForged ProblemKind = "checkpoint_forged"
	// ProblemCheckpointDeleted: the chain head records a later checkpoint
	// than the table holds.
	ProblemCheckpointDeleted ProblemKind = "checkpoint_deleted"
	// ProblemUnverifiable: checkpoints could not be checked because their
	// key is unavailable (HSM down, key version retired). Not evidence of
	// tampering, but nothing is vouched for either.
	ProblemUnverifiable ProblemKind = "checkpoint_unverifiable"
)

// Problem is one finding. Seq (through LastSeq, for a run of entries)
// names the entries concerned.
type Problem struct {
	Kind    ProblemKind `json:"kind"`
	Seq     int64       `json:"seq"`
	LastSeq int64       `json:"last_seq"`
	Detail  string      `json:"detail"`
}

func (p Problem) String() string {
	if p.LastSeq > p.Seq {
		return fmt.Sprintf("seq %d–%d: %s: %s", p.Seq, p.LastSeq, p.Kind, p.Detail)
	}
	return fmt.Sprintf("seq %d: %s: %s", p.Seq, p.Kind, p.Detail)
}

// Report is the outcome of Verify.
type Report struct {
	Entries        int64 `json:"entries"`  // rows read
	LastSeq        int64 `json:"last_seq"` // highest seq in the log
	Head           Head  `json:"-"`
	HeadSeq        int64 `json:"head_seq"`
	Checkpoints    int   `json:"checkpoints"`
	VerifiedMACs   int   `json:"verified_checkpoints"`
	LastCheckpoint int64 `json:"last_verified_checkpoint"` // highest seq vouched for by a verified checkpoint
	// Uncovered counts the entries after LastCheckpoint. They are
	// protected by the hash chain alone: an attacker who can write the
	// key store can rewrite or drop them consistently, and no check here
	// can tell. Checkpoint often (and keep the SIEM copy) to keep this small.
	Uncovered int64     `json:"uncovered"`
	Problems  []Problem `json:"problems"`
	// ProblemsTruncated: more problems were found than maxProblems.
	ProblemsTruncated bool `json:"problems_truncated,omitempty"`
}

// OK reports that the log verified with no problem at all.
func (r *Report) OK() bool { return len(r.Problems) == 0 }

// Tampered reports evidence of tampering (any problem other than an
// unverifiable checkpoint).
func (r *Report) Tampered() bool {
	for _, p := range r.Problems {
		if p.Kind != ProblemUnverifiable {
			return true
		}
	}
	return false
}

// KeyFunc returns the audit DEK (keyring id, version) for checking
// checkpoint MACs. Verify zeroes what it returns.
type KeyFunc func(ctx context.Context, keyringID, version uint32) (secret.Bytes, error)

const (
	maxProblems  = 200
	moveWindow   = 64   // seqs searched either side for a reordered entry
	maxSearches  = 1000 // entries searched at all
	maxLinkFinds = 20   // broken links diagnosed with a lookup
)

type rowStatus int

const (
	rowIntact rowStatus = iota + 1
	rowMoved
	rowEdited
)

type verifier struct {
	r         *Report
	cps       map[int64]Checkpoint
	cpHashOK  map[int64]bool
	searches  int
	lastShift int64     // seq shift of the last reordered entry
	lastMove  int       // index in Problems of the last reordered finding, or -1
	last      Hash      // stored hash of the last row read
	links     []Problem // broken links awaiting a lookup
}

// Verify walks the whole chain and the checkpoints and reports every
// problem it can attribute to an entry. q should be a REPEATABLE READ
// transaction so that head, checkpoints and log are one snapshot. keys may
// be nil (checkpoint MACs are then reported unverifiable). The error is
// for failures to read; findings are in the Report.
func Verify(ctx context.Context, q Querier, keys KeyFunc) (*Report, error) {
	head, err := ReadHead(ctx, q)
	if err != nil {
		return nil, err
	}
	cps, err := Checkpoints(ctx, q)
	if err != nil {
		return nil, err
	}
	v := &verifier{
		r:        &Report{Head: head, HeadSeq: head.Seq, Checkpoints: len(cps)},
		cps:      make(map[int64]Checkpoint, len(cps)),
		cpHashOK: make(map[int64]bool, len(cps)),
		lastMove: -1,
	}
	for _, cp := range cps {
		v.cps[cp.Seq] = cp
	}
	if err := v.walk(ctx, q); err != nil {
		return nil, err
	}
	if err := v.diagnoseLinks(ctx, q); err != nil {
		return nil, err
	}
	v.checkHead()
	v.checkMACs(ctx, cps, keys)
	v.r.Uncovered = v.r.LastSeq - v.r.LastCheckpoint
	return v.r, nil
}

func (v *verifier) add(p Problem) {
	if p.LastSeq < p.Seq {
		p.LastSeq = p.Seq
	}
	if len(v.r.Problems) >= maxProblems {
		v.r.ProblemsTruncated = true
		return
	}
	v.r.Problems = append(v.r.Problems, p)
}

func (v *verifier) walk(ctx context.Context, q Querier) error {
	rows, err := q.Query(ctx, "SELECT "+entryColumns+" FROM pgcloak.audit_log ORDER BY seq")
	if err != nil {
		return fmt.Errorf("audit: verify: %w", err)
	}
	defer rows.Close()
	var (
		prev, prevprev Hash        // stored hashes of the two previous rows
		prevStatus     = rowIntact // the genesis: entry 1 must link to 32 zero bytes
		expected       = int64(1)
	)
	for rows.Next() {
		r, err := scanRaw(rows)
		if err != nil {
			return fmt.Errorf("audit: verify: %w", err)
		}
		v.r.Entries++
		v.r.LastSeq = r.Seq
		gap := r.Seq != expected
		if gap {
			v.add(Problem{Kind: ProblemMissing, Seq: expected, LastSeq: r.Seq - 1,
				Detail: fmt.Sprintf("entries %d to %d are missing (deleted)", expected, r.Seq-1)})
		}
		status, found := v.checkEntry(&r)
		// Links are judged only after an intact predecessor: after a gap or
		// a bad entry the problem is already named.
		switch {
		case gap || r.PrevHash == prev || prevStatus != rowIntact:
		case r.Seq >= 3 && r.PrevHash == prevprev:
			v.add(Problem{Kind: ProblemInserted, Seq: r.Seq - 1,
				Detail: fmt.Sprintf("entry %d is not part of the chain: the entry stored at seq %d links past it to entry %d", r.Seq-1, r.Seq, r.Seq-2)})
		case status == rowIntact:
			v.links = append(v.links, Problem{Kind: ProblemBrokenLink, Seq: r.Seq, Detail: r.PrevHash.String()})
		}
		if found != nil {
			v.addEntryProblem(*found)
		}
		if cp, ok := v.cps[r.Seq]; ok {
			if cp.Hash == r.Hash {
				v.cpHashOK[r.Seq] = true
			} else {
				v.add(Problem{Kind: ProblemCheckpointMismatch, Seq: r.Seq,
					Detail: fmt.Sprintf("the checkpoint at seq %d does not match entry %d: the log up to %d was rewritten, or the checkpoint replaced", r.Seq, r.Seq, r.Seq)})
			}
		}
		prevprev, prev, prevStatus, expected = prev, r.Hash, status, r.Seq+1
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("audit: verify: %w", err)
	}
	v.last = prev
	return nil
}

// checkEntry recomputes r's hash. An entry whose hash matches at another
// seq nearby was moved there; otherwise it was edited. The finding is
// returned, not added, so that a link problem of the same row (about the
// entry before it) is listed first.
func (v *verifier) checkEntry(r *rawEntry) (rowStatus, *Problem) {
	if err := r.decode(); err != nil {
		return rowEdited, &Problem{Kind: ProblemEdited, Seq: r.Seq, Detail: fmt.Sprintf("entry %d was edited: %v", r.Seq, err)}
	}
	if r.ComputeHash() == r.Hash {
		return rowIntact, nil
	}
	if s, ok := v.findSeq(r); ok {
		return rowMoved, &Problem{Kind: ProblemReordered, Seq: r.Seq, LastSeq: s, // LastSeq: where it was written (fixed up in addEntryProblem)
			Detail: fmt.Sprintf("the entry stored at seq %d was written as seq %d (reordered or renumbered)", r.Seq, s)}
	}
	return rowEdited, &Problem{Kind: ProblemEdited, Seq: r.Seq,
		Detail: fmt.Sprintf("entry %d was edited: its content does not match its hash", r.Seq)}
}

// addEntryProblem adds a finding of checkEntry, merging a run of entries
// renumbered by the same shift into one problem.
func (v *verifier) addEntryProblem(p Problem) {
	if p.Kind != ProblemReordered {
		v.add(p)
		return
	}
	written := p.LastSeq
	p.LastSeq = p.Seq
	shift := p.Seq - written
	if i := v.lastMove; i >= 0 && shift == v.lastShift {
		if last := &v.r.Problems[i]; last.LastSeq == p.Seq-1 {
			last.LastSeq = p.Seq
			last.Detail = fmt.Sprintf("entries stored at seq %d to %d were written as seq %d to %d (renumbered)",
				last.Seq, p.Seq, last.Seq-shift, written)
			return
		}
	}
	v.lastShift = shift
	if len(v.r.Problems) < maxProblems {
		v.lastMove = len(v.r.Problems)
	}
	v.add(p)
}

// findSeq looks for the seq r was written at: first the shift of the
// previous reordered entry, then moveWindow either side.
func (v *verifier) findSeq(r *rawEntry) (int64, bool) {
	if v.searches >= maxSearches {
		return 0, false
	}
	v.searches++
	orig := r.Seq
	defer func() { r.Seq = orig }()
	try := func(s int64) bool {
		if s < 1 || s == orig {
			return false
		}
		r.Seq = s
		return r.ComputeHash() == r.Hash
	}
	if v.lastShift != 0 && try(orig-v.lastShift) {
		return orig - v.lastShift, true
	}
	for d := int64(1); d <= moveWindow; d++ {
		if try(orig - d) {
			return orig - d, true
		}
		if try(orig + d) {
			return orig + d, true
		}
	}
	return 0, false
}

// diagnoseLinks says, for each broken link, which stored entry (if any)
// the entry really follows.
func (v *verifier) diagnoseLinks(ctx context.Context, q Querier) error {
	for i, p := range v.links {
		target := p.Detail
		p.Detail = fmt.Sprintf("entry %d does not follow entry %d: ", p.Seq, p.Seq-1)
		if i >= maxLinkFinds {
			p.Detail += "its predecessor was replaced, or entries were moved"
			v.add(p)
			continue
		}
		var h Hash
		if err := h.UnmarshalText([]byte(target)); err != nil {
			return fmt.Errorf("audit: verify: %w", err)
		}
		var at int64
		err := q.QueryRow(ctx, "SELECT seq FROM pgcloak.audit_log WHERE hash = $1 ORDER BY seq LIMIT 1", h[:]).Scan(&at)
		switch {
		case err == nil:
			p.Detail += fmt.Sprintf("it was written after the entry now stored at seq %d (reordered)", at)
		case isNoRows(err):
			p.Detail += fmt.Sprintf("entry %d was replaced (its hash recomputed) or the entry it followed was deleted", p.Seq-1)
		default:
			return fmt.Errorf("audit: verify: %w", err)
		}
		v.add(p)
	}
	return nil
}

func (v *verifier) checkHead() {
	r, h := v.r, v.r.Head
	switch {
	case h.Seq > r.LastSeq:
		v.add(Problem{Kind: ProblemTruncated, Seq: r.LastSeq + 1, LastSeq: h.Seq,
			Detail: fmt.Sprintf("the chain head records %d entries but the log ends at seq %d: the tail was deleted", h.Seq, r.LastSeq)})
	case h.Seq < r.LastSeq:
		v.add(Problem{Kind: ProblemInserted, Seq: h.Seq + 1, LastSeq: r.LastSeq,
			Detail: fmt.Sprintf("entries %d to %d lie beyond the chain head (appended around the key store's checks)", h.Seq+1, r.LastSeq)})
	case h.Seq > 0 && h.Hash != v.lastHash():
		v.add(Problem{Kind: ProblemHead, Seq: h.Seq,
			Detail: fmt.Sprintf("the chain head's hash does not match entry %d: the last entry was replaced", h.Seq)})
	}
	var maxCP int64
	for s := range v.cps {
		maxCP = max(maxCP, s)
	}
	if h.LastCheckpoint > maxCP {
		v.add(Problem{Kind: ProblemCheckpointDeleted, Seq: h.LastCheckpoint,
			Detail: fmt.Sprintf("the chain head records a checkpoint at seq %d that is not in the checkpoint table", h.LastCheckpoint)})
	}
	for s := range v.cps {
		if s > r.LastSeq {
			v.add(Problem{Kind: ProblemTruncated, Seq: s,
				Detail: fmt.Sprintf("a checkpoint covers seq %d but the log ends at seq %d: the tail was deleted", s, r.LastSeq)})
		}
	}
}

func (v *verifier) lastHash() Hash { return v.last }

func isNoRows(err error) bool { return errors.Is(err, pgx.ErrNoRows) }

func (v *verifier) checkMACs(ctx context.Context, cps []Checkpoint, keys KeyFunc) {
	type keyID struct{ ring, version uint32 }
	cache := map[keyID]secret.Bytes{}
	failed := map[keyID]bool{}
	defer func() {
		for _, k := range cache {
			k.Zero()
		}
	}()
	for _, cp := range cps {
		id := keyID{cp.KeyringID, cp.KeyVersion}
		if failed[id] {
			continue
		}
		key, ok := cache[id]
		if !ok {
			var err error
			if keys == nil {
				err = errors.New("no key source given")
			} else {
				key, err = keys(ctx, cp.KeyringID, cp.KeyVersion)
			}
			if err != nil {
				failed[id] = true
				v.add(Problem{Kind: ProblemUnverifiable, Seq: cp.Seq,
					Detail: fmt.Sprintf("checkpoints under audit key ring %d version %d cannot be verified: %v", cp.KeyringID, cp.KeyVersion, err)})
				continue
			}
			cache[id] = key
		}
		want, err := ComputeMAC(MACKey{KeyringID: cp.KeyringID, Version: cp.KeyVersion, Key: key}, cp.Seq, cp.Hash)
		if err != nil || !hmac.Equal(want[:], cp.MAC[:]) {
			v.add(Problem{Kind: ProblemCheckpointForged, Seq: cp.Seq,
				Detail: fmt.Sprintf("the checkpoint at seq %d is forged or altered: its MAC does not verify", cp.Seq)})
			continue
		}
		v.r.VerifiedMACs++
		if v.cpHashOK[cp.Seq] && cp.Seq > v.r.LastCheckpoint {
			v.r.LastCheckpoint = cp.Seq
		}
	}
}
