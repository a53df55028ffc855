package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os/exec"
	"strconv"
	"time"

	"github.com/rs/zerolog"

	"github.com/pgcloak/pgcloak/config"
	"github.com/pgcloak/pgcloak/internal/pgtest"
	"github.com/pgcloak/pgcloak/proxy"
)

func init() {
	register("dev", "Start a throwaway PostgreSQL, a SoftHSM2 token and an encrypting proxy in front of it (no configuration file needed); Ctrl-C stops all.",
		func() any { return &devCmd{} })
}

// devCmd: pgcloak dev [--port N] [--demo]
//
// Starts a throwaway cluster (initdb in a temporary directory), creates the
// role app with a random SCRAM password and its database app, a SoftHSM2
// token with a KEK, the key store and a table patients with two encrypted
// columns, starts the proxy on 127.0.0.1:PORT in front of it and prints the
// connection string. It does not read the configuration file: it writes
// its own. With --demo it runs a scripted round trip through the proxy,
// prints it and stops.
type devCmd struct {
	Port int  `default:"6432" help:"Port of the proxy on 127.0.0.1 (0 picks a free port)."`
	Demo bool `help:"Run a scripted round trip through the proxy, print what it did, and stop."`
}

const (
	devRole         = "app"
	devDatabase     = "app"
	devStartTimeout = 2 * time.Minute
	devShutdown     = 5 * time.Second // sessions get this long after Ctrl-C
)

func (c *devCmd) Run(g *globals) error {
	if c.Port < 0 || c.Port > 65535 {
		return usageErr(fmt.Errorf("--port: %d is outside 0..65535", c.Port))
	}
	log := g.logger(config.Log{})
	ctx, release := g.shutdownSignals(log, forceExit)
	defer release()
	err := c.run(ctx, g, log)
	if err != nil && ctx.Err() != nil && g.ctx.Err() == nil {
		return nil // interrupted during start-up: not a failure
	}
	return err
}

func (c *devCmd) run(ctx context.Context, g *globals, log zerolog.Logger) error {
	fmt.Fprintln(g.stdout, "Starting a throwaway PostgreSQL cluster…")
	startCtx, cancelStart := context.WithTimeout(ctx, devStartTimeout)
	cluster, err := pgtest.Start(startCtx, pgtest.Opts{})
	cancelStart()
	if err != nil {
		if errors.Is(err, pgtest.ErrNotFound) {
			return fmt.Errorf("dev: PostgreSQL server binaries not found; install the postgresql package: %w", err)
		}
		return fmt.Errorf("dev: start PostgreSQL: %w", err)
	}
	defer func() {
		if err := cluster.Stop(); err != nil {
			log.Warn().Err(err).Msg("stopping the throwaway cluster")
		}
	}()

	password, err := randomPassword()
	if err != nil {
		return err
	}
	if err := cluster.AddUser(ctx, devRole, password, pgtest.MethodSCRAM); err != nil {
		return fmt.Errorf("dev: %w", err)
	}
	if err := cluster.CreateDatabase(ctx, devDatabase, devRole); err != nil {
		return fmt.Errorf("dev: %w", err)
	}

	fmt.Fprintln(g.stdout, "Creating a SoftHSM2 token with a non-extractable KEK, the key store and the patients table…")
	stack, err := startDevStack(ctx, g, cluster, log)
	if err != nil {
		return err
	}
	defer stack.close()

	srv, err := proxy.New(proxy.Opts{
		UpstreamAddr:    cluster.Addr(),
		UpstreamTLS:     proxy.UpstreamTLSDisable,
		ShutdownTimeout: devShutdown,
		Encryption:      stack.enc.enc,
		Logger:          log,
	})
	if err != nil {
		return err
	}
	ln, err := listen(net.JoinHostPort("127.0.0.1", strconv.Itoa(c.Port)))
	if err != nil {
		return fmt.Errorf("dev: %w (pick another port with --port, or --port 0 for any free one)", err)
	}
	// The proxy outlives ctx by its graceful shutdown; stopProxy starts it.
	proxyCtx, stopProxy := context.WithCancel(context.WithoutCancel(ctx))
	defer stopProxy()
	served := make(chan error, 1)
	go func() { served <- srv.Serve(proxyCtx, ln) }()

	dsn := (&url.URL{
		Scheme: "postgres",
		User:   url.UserPassword(devRole, password),
		Host:   ln.Addr().String(),
		Path:   "/" + devDatabase,
	}).String()
	fmt.Fprintf(g.stdout, "\nPostgreSQL (%s) on %s, pgcloak on %s.\n", cluster.BinDir(), cluster.Addr(), ln.Addr())
	fmt.Fprintf(g.stdout, "Encrypted columns: public.patients.ssn (text) and public.patients.birth_date (date), classification\n")
	fmt.Fprintf(g.stdout, "confidential, plaintext for role %s (configuration: %s). Other tables pass through.\n\n", devRole, stack.conf)
	fmt.Fprintf(g.stdout, "  connection string  %s\n", dsn)
	fmt.Fprintf(g.stdout, "  psql               %s '%s'\n\n", psqlPath(), dsn)

	var result error
	if c.Demo {
		result = runDemo(ctx, g.stdout, dsn)
		if result == nil {
			result = runEncryptionDemo(ctx, g.stdout, dsn, cluster.DSN("postgres", "", devDatabase), stack.store)
		}
		if result == nil {
			fmt.Fprintln(g.stdout, "Demo done.")
		}
	} else {
		fmt.Fprintln(g.stdout, "Press Ctrl-C to stop.")
		select {
		case <-ctx.Done():
		case err := <-served:
			return fmt.Errorf("dev: proxy stopped: %w", err)
		}
	}
	stopProxy()
	if err := <-served; err != nil && result == nil {
		result = fmt.Errorf("dev: proxy: %w", err)
	}
	s := srv.Stats()
	fmt.Fprintf(g.stdout, "Stopped: %d sessions served, %d values encrypted, %d decrypted, %d statements refused; removing the cluster and the token.\n",
		s.SessionsAccepted, s.ValuesEncrypted, s.ValuesDecrypted, s.StatementsRefused)
	return result
}

func randomPassword() (string, error) {
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("dev: random password: %w", err)
	}
	return hex.EncodeToString(b), nil
}

// psqlPath is how to run psql: plain "psql" when it is on PATH.
func psqlPath() string {
	if _, err := exec.LookPath("psql"); err == nil {
		return "psql"
	}
	if p, err := pgtest.FindBinary("psql"); err == nil {
		return p
	}
	return "psql"
}
