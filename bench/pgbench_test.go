package bench

import (
	"errors"
	"os"
	"slices"
	"strings"
	"testing"
	"time"
)

func readTestdata(t *testing.T, name string) string {
	t.Helper()
	b, err := os.ReadFile("testdata/" + name)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// The fixtures are real pgbench 15 output captured on a throwaway cluster.
func TestParseOutputCaptured(t *testing.T) {
	tests := []struct {
		file string
		want Output
	}{
		{"pgbench15-select-prepared.out", Output{
			TransactionType: "<builtin: select only>", QueryMode: "prepared", Clients: 4, Threads: 2,
			Processed: 90269, Failed: 0, LatencyAvgMs: 0.088, InitialConnMs: 18.073, TPS: 45481.455282,
		}},
		{"pgbench15-tpcb.out", Output{
			TransactionType: "<builtin: TPC-B (sort of)>", QueryMode: "prepared", Clients: 8, Threads: 2,
			Processed: 447, Failed: 0, LatencyAvgMs: 46.961, InitialConnMs: 54.883, TPS: 170.354180,
		}},
		{"pgbench15-serializable-failures.out", Output{
			TransactionType: "<builtin: TPC-B (sort of)>", QueryMode: "prepared", Clients: 8, Threads: 2,
			Processed: 1176, Failed: 5836, LatencyAvgMs: 1.365, InitialConnMs: 816.964, TPS: 982.759917,
		}},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			got, err := ParseOutput(readTestdata(t, tt.file))
			if err != nil {
				t.Fatal(err)
			}
			if got != tt.want {
				t.Errorf("got  %+v\nwant %+v", got, tt.want)
			}
		})
	}
}

// pgbench ≤ 13 printed two tps lines; the one including connection time
// must be ignored whatever the order. (Synthetic, in the old format.)
func TestParseOutputOldFormatExcludesConnections(t *testing.T) {
	for _, out := range []string{
		"number of transactions actually processed: 1000/1000\nlatency average = 1.000 ms\n" +
			"tps = 900.5 (including connections establishing)\ntps = 1000.25 (excluding connections establishing)\n",
		"number of transactions actually processed: 1000/1000\nlatency average = 1.000 ms\n" +
			"tps = 1000.25 (excluding connections establishing)\ntps = 900.5 (including connections establishing)\n",
	} {
		got, err := ParseOutput(out)
		if err != nil {
			t.Fatal(err)
		}
		if got.TPS != 1000.25 || got.Processed != 1000 || got.LatencyAvgMs != 1 {
			t.Errorf("got %+v", got)
		}
	}
	if _, err := ParseOutput("tps = 900.5 (including connections establishing)\n"); !errors.Is(err, ErrNoTPS) {
		t.Errorf("only an including-connections tps: err = %v, want ErrNoTPS", err)
	}
}

func TestParseOutputErrors(t *testing.T) {
	if _, err := ParseOutput(""); !errors.Is(err, ErrNoTPS) {
		t.Errorf("empty: err = %v", err)
	}
	// What a failed connection leaves: nothing on stdout that parses.
	if _, err := ParseOutput(readTestdata(t, "pgbench15-connect-refused.err")); !errors.Is(err, ErrNoTPS) {
		t.Errorf("connection refused: err = %v", err)
	}
	if _, err := ParseOutput("number of clients: many\ntps = 1 (without initial connection time)\n"); err == nil {
		t.Error("garbage client count accepted")
	}
	if _, err := ParseOutput("latency average = 3 s\ntps = 1 (without initial connection time)\n"); err == nil {
		t.Error("latency in seconds accepted as ms")
	}
}

func TestRunSpecArgs(t *testing.T) {
	spec := RunSpec{
		Target:   Target{Name: "pgcloak", Host: "127.0.0.1", Port: 6543},
		Workload: Workload{Name: "select-simple", Args: []string{"-S", "-M", "simple"}, NoVacuum: true},
		Clients:  8, Threads: 2, Duration: 10 * time.Second, DB: "bench", User: "bench",
		LogPrefix: "/tmp/x/tx",
	}
	want := []string{"-h", "127.0.0.1", "-p", "6543", "-U", "bench", "-c", "8", "-j", "2", "-T", "10",
		"--no-vacuum", "-S", "-M", "simple", "-l", "--log-prefix=/tmp/x/tx", "bench"}
	if got := spec.Args(); !slices.Equal(got, want) {
		t.Errorf("args\n got %q\nwant %q", got, want)
	}

	// Threads are capped at the clients, the duration is rounded to whole
	// seconds (at least one), a script is passed with -f, no logging
	// without a prefix, and vacuum stays on.
	spec.Clients, spec.Threads, spec.Duration = 1, 4, 1400*time.Millisecond
	spec.Workload = Workload{Name: "custom", Args: []string{"-M", "prepared"}}
	spec.ScriptFile, spec.LogPrefix = "/tmp/s.sql", ""
	want = []string{"-h", "127.0.0.1", "-p", "6543", "-U", "bench", "-c", "1", "-j", "1", "-T", "1",
		"-M", "prepared", "-f", "/tmp/s.sql", "bench"}
	if got := spec.Args(); !slices.Equal(got, want) {
		t.Errorf("args\n got %q\nwant %q", got, want)
	}
	spec.Duration = 200 * time.Millisecond
	if got := strings.Join(spec.Args(), " "); !strings.Contains(got, "-T 1 ") {
		t.Errorf("sub-second duration: %s", got)
	}
}
