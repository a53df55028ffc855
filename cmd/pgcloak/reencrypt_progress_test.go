package main

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/pgcloak/pgcloak/reencrypt"
)

func TestProgressView(t *testing.T) {
	clock := time.Date(2026, 12, 4, 12, 0, 0, 0, time.UTC)
	now := func() time.Time { return clock }
	p := reencrypt.Progress{Column: "public.t.c", Keyring: "confidential", ToVersion: 3, Job: 7, Total: 1000}

	var tty bytes.Buffer
	v := &progressView{w: &tty, tty: true, now: now}
	for _, done := range []int64{0, 250, 500} {
		p.Done, p.Rate = done, 100
		v.update(p)
		clock = clock.Add(time.Second)
	}
	p.Final, p.Outcome = true, reencrypt.OutcomeDone
	v.update(p)
	out := tty.String()
	if !strings.Contains(out, "\rpublic.t.c  [############------------]  50%  500/1000 rows  100 rows/s  ETA 5s") ||
		!strings.HasSuffix(out, "\n") || strings.Count(out, "\n") != 1 {
		t.Errorf("terminal output: %q", out)
	}

	var plain bytes.Buffer
	v = &progressView{w: &plain, now: now}
	p.Final, p.Done = false, 0
	v.update(p)
	p.Done = 100
	clock = clock.Add(5 * time.Second)
	v.update(p) // too soon for a line
	clock = clock.Add(6 * time.Second)
	p.Done, p.Pause = 200, 2*time.Second
	v.update(p)
	want := "public.t.c: re-encrypting to confidential version 3 (job 7), 0/1000 rows\n" +
		"public.t.c: 200/1000 rows (20%), 100 rows/s, ETA 8s, backing off 2s\n"
	if plain.String() != want {
		t.Errorf("plain output:\n%q\nwant\n%q", plain.String(), want)
	}

	var off bytes.Buffer
	v = &progressView{w: &off, off: true, now: now}
	v.update(p)
	if off.Len() != 0 {
		t.Errorf("--json: progress written: %q", off.String())
	}
}
