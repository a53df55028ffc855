package main

import (
	"os"
	"slices"
	"testing"

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
		setup                    bool
	}{
		{"select-simple,tpcb-prepared", "direct,pgbouncer,pgcloak,pgcloak-enc", "passthrough", false},
		{"enc-prepared,plain-prepared", "direct,pgbouncer,pgcloak,pgcloak-enc", "encrypted", true},
		{bench.DefaultWorkloads, "direct,pgbouncer,pgcloak,pgcloak-enc", "passthrough-encrypted", true},
		{bench.DefaultWorkloads, "direct,pgcloak", "passthrough", false},
	} {
		var cfg bench.Config
		var err error
		if cfg.Workloads, err = bench.SelectWorkloads(tt.workloads, bench.BuiltinWorkloads()); err != nil {
			t.Fatal(err)
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
