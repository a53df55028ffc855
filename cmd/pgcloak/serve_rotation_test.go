package main

import (
	"slices"
	"testing"
	"time"

	"github.com/pgcloak/pgcloak/config"
	"github.com/pgcloak/pgcloak/rotation"
)

// serve rotates the encryption ring of every encrypting classification
// with that classification's limits (defaults per level), never the
// public level, and flushes counters at least once per check.
func TestRotationPolicies(t *testing.T) {
	cfg, err := config.Parse("pgcloak.toml", []byte(`[upstream]
addr = "h:1"
[keystore]
dsn = "host=h"
[kek.k]
type = "awskms"
key_id = "alias/k"
[classification.public]
[classification.restricted]
kek = "k"
rotate_after_encryptions = 5000
[classification.internal]
kek = "k"
rotate_after = "45d"
[rotation]
check_interval = "250ms"
`))
	if err != nil {
		t.Fatal(err)
	}
	const day = 24 * time.Hour
	want := []rotation.Policy{
		{Ring: "internal", RotateAfter: 45 * day, RotateAfterEncryptions: config.DefaultRotateAfterEncryptions},
		{Ring: "restricted", RotateAfter: 30 * day, RotateAfterEncryptions: 5000},
	}
	if got := rotationPolicies(cfg); !slices.Equal(got, want) {
		t.Errorf("rotationPolicies = %+v, want %+v", got, want)
	}
	if got := counterFlushInterval(cfg); got != 250*time.Millisecond {
		t.Errorf("counter flush interval %v with a 250ms check interval", got)
	}
	cfg.Rotation.CheckInterval = config.DefaultRotationCheckInterval
	if got := counterFlushInterval(cfg); got != 5*time.Second {
		t.Errorf("counter flush interval %v with the default check interval, want 5s", got)
	}
}
