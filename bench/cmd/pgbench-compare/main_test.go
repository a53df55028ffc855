package main

import (
	"os"
	"slices"
	"testing"
	"time"

	"github.com/pgcloak/pgcloak/bench"
)

func TestParseInts(t *testing.T) {
	got, err := parseInts(" 8, 32 ,")
	if err != nil || !slices.Equal(got, []int{8, 32}) {
		t.Errorf("parseInts = %v, %v", got, err)
	}
	for _, bad := range []string{"", ",", "8,x", "0", "-4"} {
		if _, err := parseInts(bad); err == nil {
			t.Errorf("accepted %q", bad)
		}
	}
}

func TestConfFlag(t *testing.T) {
	c := confFlag{"shared_buffers": "512MB"}
	if err := c.Set("work_mem = 8MB"); err != nil {
		t.Fatal(err)
	}
	if err := c.Set("shared_buffers=1GB"); err != nil {
		t.Fatal(err)
	}
	if c.String() != "shared_buffers=1GB,work_mem=8MB" {
		t.Errorf("String = %q", c.String())
	}
	for _, bad := range []string{"novalue", "=x"} {
		if err := c.Set(bad); err == nil {
			t.Errorf("accepted %q", bad)
		}
	}
}

func TestCommandLineQuotes(t *testing.T) {
	saved := os.Args
	defer func() { os.Args = saved }()
	os.Args = []string{"/tmp/go-build123/b001/exe/pgbench-compare", "-clients", "8,32", "-pg-conf", "work_mem=4MB", "-label", "it's x"}
	want := `go run ./bench/cmd/pgbench-compare -clients 8,32 -pg-conf work_mem=4MB -label 'it'\''s x'`
	if got := commandLine(); got != want {
		t.Errorf("commandLine\n got %s\nwant %s", got, want)
	}
}

func TestDefaultLabel(t *testing.T) {
	for _, tt := range []struct {
		workloads, targets, want string
		setup, rotation          bool
	}{
		{"select-simple,tpcb-prepared", "direct,pgbouncer,pgcloak,pgcloak-enc", "passthrough", false, false},
		{"enc-prepared,plain-prepared", "direct,pgbouncer,pgcloak,pgcloak-enc", "encrypted", true, false},
		{bench.DefaultWorkloads, "direct,pgbouncer,pgcloak,pgcloak-enc", "passthrough-encrypted", true, false},
		{bench.DefaultWorkloads, "direct,pgcloak", "passthrough", false, false},
		{bench.DefaultWorkloads, "direct,pgbouncer,pgcloak,pgcloak-enc", "passthrough-encrypted-rotation", true, true},
		{"select-simple", "direct,pgcloak-enc", "passthrough-rotation", false, true},
		{"none", "pgcloak-enc", "rotation", false, true},
	} {
		var cfg bench.Config
		var err error
		if tt.workloads != "none" {
			if cfg.Workloads, err = bench.SelectWorkloads(tt.workloads, bench.BuiltinWorkloads()); err != nil {
				t.Fatal(err)
			}
		}
		if tt.rotation {
			if cfg.Rotation, err = rotationConfig(40*time.Second, true); err != nil {
				t.Fatal(err)
			}
		}
		if cfg.Targets, err = bench.SelectTargets(tt.targets); err != nil {
			t.Fatal(err)
		}
		if got := defaultLabel(cfg); got != tt.want {
			t.Errorf("%s on %s: label %q, want %q", tt.workloads, tt.targets, got, tt.want)
		}
		if got := runsOn(cfg, bench.TargetPgcloakEnc); got != tt.setup {
			t.Errorf("%s on %s: runs on pgcloak-enc = %v", tt.workloads, tt.targets, got)
		}
	}
}

// The scenario of the command line runs the encrypted read/write script,
// prepared, with the goal of issue 6 only when goals are checked, and
// rows to re-encrypt that grow with its length.
func TestRotationConfig(t *testing.T) {
	rc, err := rotationConfig(40*time.Second, true)
	if err != nil {
		t.Fatal(err)
	}
	if rc.Workload.Name != "enc-prepared" || !slices.Equal(rc.Workload.Args, []string{"-M", "prepared"}) || rc.Clients != 8 ||
		rc.At != 0.2 || rc.MaxDip != 0.10 || rc.Duration != 40*time.Second {
		t.Errorf("%+v", rc)
	}
	long, err := rotationConfig(80*time.Second, false)
	if err != nil {
		t.Fatal(err)
	}
	if long.MaxDip != 0 || long.Rows != 2*rc.Rows || rc.Rows == 0 {
		t.Errorf("80 s without goals: %+v (40 s: %d rows)", long, rc.Rows)
	}
}
