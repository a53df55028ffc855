package rotation

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/pgcloak/pgcloak/keyring"
)

func TestDue(t *testing.T) {
	const day = 24 * time.Hour
	now := time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)
	p := Policy{Ring: "confidential", RotateAfter: 60 * day, RotateAfterEncryptions: 1000}
	active := func(age time.Duration, flushed int64) keyring.Version {
		return keyring.Version{KeyringID: 7, Keyring: "confidential", Purpose: keyring.PurposeEncryption, Version: 3,
			State: keyring.StateActive, ActivatedAt: now.Add(-age), Encryptions: flushed}
	}
	for _, tc := range []struct {
		name      string
		v         keyring.Version
		unflushed int64
		due       bool
		trigger   Trigger
		reason    string
	}{
		{"fresh", active(time.Hour, 0), 0, false, 0, ""},
		{"just below both", active(60*day-time.Second, 999), 0, false, 0, ""},
		{"count reached by flushed", active(time.Hour, 1000), 0, true, TriggerEncryptions,
			"scheduled rotation: encryptions: 1000 values sealed, rotate_after_encryptions = 1000"},
		{"count reached with this process's unflushed", active(time.Hour, 990), 15, true, TriggerEncryptions,
			"scheduled rotation: encryptions: 1005 values sealed, rotate_after_encryptions = 1000"},
		{"negative unflushed ignored", active(time.Hour, 999), -5, false, 0, ""},
		{"age reached", active(60*day, 0), 0, true, TriggerAge, "scheduled rotation: age: active for 60d, rotate_after = 60d"},
		{"age exceeded", active(61*day+2*time.Hour+3*time.Minute+4*time.Second, 5), 0, true, TriggerAge,
			"scheduled rotation: age: active for 61d2h3m, rotate_after = 60d"},
		{"both: count is named", active(90*day, 5000), 0, true, TriggerEncryptions, "scheduled rotation: encryptions: 5000"},
		{"activated in the future (clock step)", active(-time.Hour, 0), 0, false, 0, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d, due, err := p.Due(tc.v, tc.unflushed, now)
			if err != nil {
				t.Fatal(err)
			}
			if due != tc.due || d.Trigger != tc.trigger {
				t.Fatalf("Due = %v trigger %v, want %v trigger %v (%+v)", due, d.Trigger, tc.due, tc.trigger, d)
			}
			if due && (!strings.HasPrefix(d.Reason(), tc.reason) || d.Version != 3 || d.Ring != "confidential") {
				t.Errorf("decision %+v, reason %q; want reason starting %q", d, d.Reason(), tc.reason)
			}
		})
	}

	// Never due: versions that are not active, and rings of other purposes.
	v := active(365*day, 1<<40)
	v.State = keyring.StateDecryptOnly
	if _, due, err := p.Due(v, 0, now); due || !errors.Is(err, errNotActive) {
		t.Errorf("decrypt_only version: due %v, err %v", due, err)
	}
	v = active(365*day, 1<<40)
	v.Purpose = keyring.PurposeSearch
	if _, due, err := p.Due(v, 0, now); due || err == nil || !strings.Contains(err.Error(), "never rotated by schedule") {
		t.Errorf("search ring: due %v, err %v", due, err)
	}
	// No activation time (cannot happen for an active version): only the
	// count applies.
	v = active(0, 0)
	v.ActivatedAt = time.Time{}
	if _, due, _ := p.Due(v, 0, now); due {
		t.Error("a version without an activation time is due by age")
	}
}

func TestFormatDuration(t *testing.T) {
	for d, want := range map[time.Duration]string{
		250 * time.Millisecond: "250ms",
		90 * time.Second:       "1m30s",
		3*time.Hour + 25*time.Minute + 10500*time.Millisecond: "3h25m10s",
		24 * time.Hour:                   "1d",
		36 * time.Hour:                   "1d12h",
		90 * 24 * time.Hour:              "90d",
		90*24*time.Hour + 61*time.Second: "90d0h1m",
		0:                                "0s",
	} {
		if got := FormatDuration(d); got != want {
			t.Errorf("FormatDuration(%v) = %q, want %q", d, got, want)
		}
	}
}

func TestTriggerString(t *testing.T) {
	if TriggerAge.String() != "age" || TriggerEncryptions.String() != "encryptions" || Trigger(0).String() != "Trigger(0)" {
		t.Errorf("Trigger strings: %v %v %v", TriggerAge, TriggerEncryptions, Trigger(0))
	}
}

func TestNewValidates(t *testing.T) {
	e := newEnv(t)
	st := e.store()
	good := Policy{Ring: "confidential", RotateAfter: time.Hour, RotateAfterEncryptions: 10}
	for _, tc := range []struct {
		name string
		opts Opts
	}{
		{"no store", Opts{Pool: st.Pool()}},
		{"no pool", Opts{Store: st}},
		{"negative interval", Opts{Store: st, Pool: st.Pool(), CheckInterval: -time.Second}},
		{"zero age", Opts{Store: st, Pool: st.Pool(), Policies: []Policy{{Ring: "x", RotateAfterEncryptions: 1}}}},
		{"zero count", Opts{Store: st, Pool: st.Pool(), Policies: []Policy{{Ring: "x", RotateAfter: time.Hour}}}},
		{"bad ring", Opts{Store: st, Pool: st.Pool(), Policies: []Policy{{Ring: "", RotateAfter: time.Hour, RotateAfterEncryptions: 1}}}},
		{"duplicate ring", Opts{Store: st, Pool: st.Pool(), Policies: []Policy{good, good}}},
	} {
		if _, err := New(tc.opts); err == nil {
			t.Errorf("%s: New succeeded", tc.name)
		}
	}
	s, err := New(Opts{Store: st, Pool: st.Pool(), Policies: []Policy{good}})
	if err != nil {
		t.Fatal(err)
	}
	if s.interval != DefaultCheckInterval || s.timeout != DefaultCheckTimeout {
		t.Errorf("defaults: interval %v, timeout %v", s.interval, s.timeout)
	}
}
