package rotation

import (
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/pgcloak/pgcloak/keyring"
)

// Trigger says why a rotation is due.
type Trigger int

// Triggers. The numbers appear in no stored format; the audit log records
// the String form inside the reason.
const (
	TriggerEncryptions Trigger = 1 // the active version sealed rotate_after_encryptions values
	TriggerAge         Trigger = 2 // the active version is older than rotate_after
)

// String returns "encryptions" or "age".
func (t Trigger) String() string {
	switch t {
	case TriggerEncryptions:
		return "encryptions"
	case TriggerAge:
		return "age"
	}
	return "Trigger(" + strconv.Itoa(int(t)) + ")"
}

// Policy is the rotation rule of one encryption key ring (from its
// classification's rotate_after and rotate_after_encryptions).
type Policy struct {
	Ring string // key ring name (keys.RingName of the classification)
	// RotateAfter rotates the active version once it has been active this
	// long (key store clock). Must be positive.
	RotateAfter time.Duration
	// RotateAfterEncryptions rotates the active version once it has sealed
	// this many values. Must be positive.
	RotateAfterEncryptions int64
}

func (p Policy) validate() error {
	switch {
	case !keyring.ValidKeyringName(p.Ring):
		return fmt.Errorf("rotation: policy: invalid key ring name %q", p.Ring)
	case p.RotateAfter <= 0:
		return fmt.Errorf("rotation: policy %s: RotateAfter must be positive, got %v", p.Ring, p.RotateAfter)
	case p.RotateAfterEncryptions <= 0:
		return fmt.Errorf("rotation: policy %s: RotateAfterEncryptions must be positive, got %d", p.Ring, p.RotateAfterEncryptions)
	}
	return nil
}

// Decision is a due rotation of one version.
type Decision struct {
	Ring        string
	Version     uint32 // the active version to replace
	Trigger     Trigger
	Age         time.Duration // how long the version has been active
	Encryptions int64         // values sealed under it: flushed plus this process's unflushed
	Policy      Policy
}

// Reason is the text recorded with the rotation (the audit entry's reason
// and the demoted version's state_reason). It names the trigger first:
// "scheduled rotation: encryptions: …" or "scheduled rotation: age: …".
func (d Decision) Reason() string {
	if d.Trigger == TriggerEncryptions {
		return fmt.Sprintf("scheduled rotation: encryptions: %d values sealed, rotate_after_encryptions = %d",
			d.Encryptions, d.Policy.RotateAfterEncryptions)
	}
	return fmt.Sprintf("scheduled rotation: age: active for %s, rotate_after = %s",
		FormatDuration(d.Age), FormatDuration(d.Policy.RotateAfter))
}

// errNotActive is returned by Due for a version that is not active.
var errNotActive = errors.New("not the active version")

// Due decides whether v, the ring's active version, must be rotated now.
// unflushed is what this process counted for v and has not flushed yet
// (keyring.Store.UnflushedEncryptions); now is the key store's clock. The
// encryption count is checked first: it guards the AES-GCM nonce bound,
// age guards the cryptoperiod. A version that is not active, or not an
// encryption key, is never due (and err says why).
func (p Policy) Due(v keyring.Version, unflushed int64, now time.Time) (d Decision, due bool, err error) {
	switch {
	case v.State != keyring.StateActive:
		return Decision{}, false, fmt.Errorf("rotation: %s version %d: %w (%s)", v.Keyring, v.Version, errNotActive, v.State)
	case v.Purpose != keyring.PurposeEncryption:
		return Decision{}, false, fmt.Errorf("rotation: %s: a %s key ring is never rotated by schedule", v.Keyring, v.Purpose)
	}
	d = Decision{Ring: p.Ring, Version: v.Version, Encryptions: v.Encryptions + max(unflushed, 0), Policy: p}
	if !v.ActivatedAt.IsZero() {
		d.Age = max(v.Age(now), 0) // a clock step back is no reason to rotate
	}
	switch {
	case d.Encryptions >= p.RotateAfterEncryptions:
		d.Trigger = TriggerEncryptions
	case !v.ActivatedAt.IsZero() && d.Age >= p.RotateAfter:
		d.Trigger = TriggerAge
	default:
		return d, false, nil
	}
	return d, true, nil
}

// FormatDuration writes d with days: "90d", "1d12h", "3h25m10s", "250ms".
// Durations of a day or more are rounded down to the minute.
func FormatDuration(d time.Duration) string {
	const day = 24 * time.Hour
	if d < day {
		if d >= time.Minute {
			d = d.Truncate(time.Second)
		}
		return d.String()
	}
	days := d / day
	rest := (d % day).Truncate(time.Minute)
	s := strconv.FormatInt(int64(days), 10) + "d"
	if rest == 0 {
		return s
	}
	h, m := rest/time.Hour, (rest%time.Hour)/time.Minute
	s += strconv.FormatInt(int64(h), 10) + "h"
	if m != 0 {
		s += strconv.FormatInt(int64(m), 10) + "m"
	}
	return s
}
