package main

import (
	"context"
	"time"

	"github.com/rs/zerolog"

	"github.com/pgcloak/pgcloak/config"
	"github.com/pgcloak/pgcloak/keyring"
	"github.com/pgcloak/pgcloak/keys"
	"github.com/pgcloak/pgcloak/rotation"
)

// startRotation starts the rotation scheduler (package rotation): this
// process takes part in the election of the one proxy that rotates the
// encryption key rings on schedule, and rotates them while elected. It
// runs until ctx ends (the shutdown signal: the leadership then passes to
// a proxy that keeps running) or until stop is called; stop waits for it
// and releases the leadership.
func startRotation(ctx context.Context, cfg *config.Config, store *keyring.Store, log zerolog.Logger) (stop func(), err error) {
	s, err := rotation.New(rotation.Opts{
		Store:         store,
		Pool:          store.Pool(),
		Policies:      rotationPolicies(cfg),
		CheckInterval: cfg.Rotation.CheckInterval,
		Logger:        log.With().Str("component", "rotation").Logger(),
	})
	if err != nil {
		return nil, err
	}
	go func() { _ = s.Run(ctx) }()
	return s.Close, nil
}

// rotationPolicies lists the rotation rule of every encrypting
// classification's encryption key ring, least protected first. Search
// and audit rings are never rotated on schedule.
func rotationPolicies(cfg *config.Config) []rotation.Policy {
	var out []rotation.Policy
	for _, name := range classificationOrder(cfg) {
		c := cfg.Classifications[name]
		if !c.Encrypted() || c.KEK == "" {
			continue
		}
		out = append(out, rotation.Policy{
			Ring:                   keys.RingName(name),
			RotateAfter:            c.RotateAfter,
			RotateAfterEncryptions: c.RotateAfterEncryptions,
		})
	}
	return out
}

// counterFlushInterval is how often serve flushes the encryption counters
// to the key store: keys.DefaultFlushInterval, or every check interval
// when checks are more frequent, so that the elected proxy sees the other
// proxies' counts by its next check.
func counterFlushInterval(cfg *config.Config) time.Duration {
	return min(keys.DefaultFlushInterval, cfg.Rotation.CheckInterval)
}
