package bench

import (
	"bytes"
	"context"
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
	scanLog(strings.NewReader(in), &out, addrc)
	if got := <-addrc; got != "127.0.0.1:1" {
		t.Errorf("addr %q", got)
	}
	if out.String() != in+"\n" {
		t.Errorf("copy differs:\n%q\n%q", out.String(), in)
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
echo '{"level":"info","message":"starting"}' >&2
echo '{"level":"info","message":"listening","addr":"127.0.0.1:45678"}' >&2
exec sleep 30
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
	start := time.Now()
	p.Stop()
	if time.Since(start) > 10*time.Second {
		t.Error("Stop waited for the kill timeout: SIGTERM not delivered")
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
