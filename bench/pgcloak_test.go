package bench

import (
	"bytes"
	"context"
	"io"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pgcloak/pgcloak/config"
)

// The generated configuration must be one `pgcloak serve` accepts.
func TestPgcloakConfigIsValid(t *testing.T) {
	toml := pgcloakConfig(PgcloakOpts{Upstream: "127.0.0.1:5499"})
	cfg, err := config.Parse("bench.toml", []byte(toml))
	if err != nil {
		t.Fatalf("%v\n%s", err, toml)
	}
	if cfg.Upstream.Addr != "127.0.0.1:5499" || cfg.Upstream.TLS != "disable" || cfg.Server.Listen != "127.0.0.1:0" {
		t.Errorf("parsed %+v %+v", cfg.Server, cfg.Upstream)
	}
}

func TestListeningAddr(t *testing.T) {
	tests := []struct {
		line string
		addr string
		ok   bool
	}{
		{`{"level":"info","message":"listening","addr":"127.0.0.1:40001"}`, "127.0.0.1:40001", true},
		{`{"level":"info","addr":"127.0.0.1:40001","message":"listening","time":"x"}`, "127.0.0.1:40001", true},
		{`{"level":"info","message":"starting","addr":"127.0.0.1:40001"}`, "", false},
		{`{"level":"info","message":"listening"}`, "", false},
		{`listening 127.0.0.1:40001`, "", false},
	}
	for _, tt := range tests {
		addr, ok := listeningAddr([]byte(tt.line))
		if addr != tt.addr || ok != tt.ok {
			t.Errorf("%s: got %q %v", tt.line, addr, ok)
		}
	}
}

func TestScanLogCopiesEverythingAndFindsAddr(t *testing.T) {
	in := `{"message":"config loaded"}` + "\n" +
		`{"message":"listening","addr":"127.0.0.1:1"}` + "\n" +
		`{"message":"listening","addr":"127.0.0.1:2"}` + "\n" + "tail without newline"
	var out bytes.Buffer
	addrc := make(chan string, 1)
	if _, ok := scanLog(strings.NewReader(in), &out, addrc); ok {
		t.Error("found a stopped line where there is none")
	}
	if got := <-addrc; got != "127.0.0.1:1" {
		t.Errorf("addr %q", got)
	}
	if out.String() != in+"\n" {
		t.Errorf("copy differs:\n%q\n%q", out.String(), in)
	}
}

// The line proxy.Server.Serve logs at the end, with and without the
// encryption counters.
func TestParseStopped(t *testing.T) {
	enc := `{"level":"info","sessions":42,"bytes_up":1000,"bytes_down":2000,"plan_cache_hits":90,"plan_cache_misses":10,` +
		`"statements_refused":1,"values_encrypted":500,"values_decrypted":400,"decrypt_failures":2,"time":"2026-12-04T14:35:31Z","message":"stopped"}`
	st, ok := ParseStopped([]byte(enc))
	want := StoppedStats{Sessions: 42, BytesUp: 1000, BytesDown: 2000, Encryption: true, PlanCacheHits: 90, PlanCacheMisses: 10,
		StatementsRefused: 1, ValuesEncrypted: 500, ValuesDecrypted: 400, DecryptFailures: 2}
	if !ok || st != want {
		t.Errorf("got %+v %v, want %+v", st, ok, want)
	}
	if st.PlanLookups() != 100 || !approx(st.PlanCacheHitRate(), 0.9) {
		t.Errorf("lookups %d, hit rate %v", st.PlanLookups(), st.PlanCacheHitRate())
	}

	pass := `{"level":"info","sessions":3,"bytes_up":10,"bytes_down":20,"message":"stopped"}`
	st, ok = ParseStopped([]byte(pass))
	if !ok || st.Encryption || st.Sessions != 3 || !math.IsNaN(st.PlanCacheHitRate()) {
		t.Errorf("pass-through line: %+v %v", st, ok)
	}
	for _, line := range []string{`{"message":"listening","addr":"x"}`, `stopped`, `{"message":"stopped","sessions":"x"}`, ``} {
		if _, ok := ParseStopped([]byte(line)); ok {
			t.Errorf("accepted %q", line)
		}
	}

	// scanLog keeps the last stopped line.
	in := `{"message":"listening","addr":"127.0.0.1:1"}` + "\n" + pass + "\n" + enc + "\n" + `{"message":"bye"}` + "\n"
	got, ok := scanLog(strings.NewReader(in), io.Discard, make(chan string, 1))
	if !ok || got != want {
		t.Errorf("scanLog: %+v %v", got, ok)
	}
}

// StartPgcloak against stand-in binaries that follow the contract of
// `pgcloak serve` (or break it).
func TestStartPgcloakContract(t *testing.T) {
	dir := t.TempDir()
	script := func(name, body string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte("#!/bin/sh\n"+body), 0o755); err != nil {
			t.Fatal(err)
		}
		return p
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()

	good := script("good", `if [ "$1" = version ]; then echo "pgcloak v9"; exit 0; fi
[ "$1" = serve ] && [ "$2" = --config ] && [ -f "$3" ] || exit 2
trap 'echo "{\"message\":\"stopped\",\"sessions\":7,\"plan_cache_hits\":5,\"plan_cache_misses\":1}" >&2; kill $pid; exit 0' TERM
sleep 30 >/dev/null 2>&1 &
pid=$!
echo '{"level":"info","message":"starting"}' >&2
echo '{"level":"info","message":"listening","addr":"127.0.0.1:45678"}' >&2
wait
`)
	wd := filepath.Join(dir, "good.d")
	if err := os.Mkdir(wd, 0o700); err != nil {
		t.Fatal(err)
	}
	p, err := StartPgcloak(ctx, PgcloakOpts{Binary: good, Dir: wd, Upstream: "127.0.0.1:5499"})
	if err != nil {
		t.Fatal(err)
	}
	if p.Host != "127.0.0.1" || p.Port != 45678 || p.Version != "pgcloak v9" || p.PID == 0 {
		t.Errorf("got %+v", p)
	}
	if _, ok := p.StoppedStats(); ok {
		t.Error("stopped counters while running")
	}
	start := time.Now()
	p.Stop()
	if time.Since(start) > 10*time.Second {
		t.Error("Stop waited for the kill timeout: SIGTERM not delivered")
	}
	if st, ok := p.StoppedStats(); !ok || st.Sessions != 7 || st.PlanCacheHits != 5 || !st.Encryption {
		t.Errorf("stopped counters after Stop: %+v %v", st, ok)
	}
	if _, err := ReadProcStat(p.PID); err == nil {
		t.Error("process still exists after Stop")
	}

	bad := script("bad", `echo '{"level":"error","message":"upstream: bad config"}' >&2; exit 2`)
	wd = filepath.Join(dir, "bad.d")
	if err := os.Mkdir(wd, 0o700); err != nil {
		t.Fatal(err)
	}
	_, err = StartPgcloak(ctx, PgcloakOpts{Binary: bad, Dir: wd, Upstream: "127.0.0.1:5499"})
	if err == nil || !strings.Contains(err.Error(), "upstream: bad config") {
		t.Errorf("early exit: err = %v", err)
	}
}
