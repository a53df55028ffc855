package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"os"

	"github.com/rs/zerolog"

	"github.com/pgcloak/pgcloak/config"
	"github.com/pgcloak/pgcloak/keyring"
	"github.com/pgcloak/pgcloak/proxy"
)

func init() {
	register("serve", "Run the proxy until SIGINT or SIGTERM.", func() any { return &serveCmd{} })
}

// serveCmd: pgcloak serve [--config FILE]
//
// Logs JSON lines to stderr and nothing to stdout. Once listening it logs
// {"level":"info","message":"listening","addr":"HOST:PORT"} with the real
// port (also when [server] listen uses port 0). The first SIGINT/SIGTERM
// starts a graceful shutdown (exit 0); a second one exits at once (exit 1).
type serveCmd struct{}

func (c *serveCmd) Run(g *globals) error {
	cfg, err := g.loadConfig("", false)
	if err != nil {
		return err
	}
	log := g.logger(cfg.Log)
	ctx, release := g.shutdownSignals(log, forceExit)
	defer release()
	encrypting := len(encryptedColumns(cfg)) > 0
	if encrypting && cfg.Keystore.DSN == "" {
		// config validation already requires it; never serve encrypted
		// columns without keys.
		return usageErr(fmt.Errorf("%s: [keystore] dsn is not set: encrypted columns need the key store", cfg.File))
	}
	var enc *proxy.Encryption
	if cfg.Keystore.DSN != "" {
		store, closeStore, err := prepareKeyStore(ctx, g, cfg, log)
		if err != nil {
			return err
		}
		defer closeStore()
		if encrypting {
			e, err := startEncryption(ctx, cfg, store, log)
			if err != nil {
				return err
			}
			defer e.close() // before closeStore: flushes counters and audits
			enc = e.enc
		}
	}
	return serve(ctx, cfg, log, enc)
}

// prepareKeyStore opens the key store, applies its migrations and creates
// the first active version of every key ring the configuration needs and
// lacks (each an audited event), so that a fresh setup needs no extra
// step. It fails (and serve does not start) when the key store or a KEK is
// unreachable: pgcloak never serves with keys it cannot vouch for. The
// store stays open for the process lifetime; closeStore closes it and the
// KEKs.
func prepareKeyStore(ctx context.Context, g *globals, cfg *config.Config, log zerolog.Logger) (store *keyring.Store, closeStore func(), err error) {
	host, _ := os.Hostname()
	store, closeStore, err = openStore(g, cfg, storeOpts{
		Actor:   "pgcloak serve@" + host,
		OnError: func(err error) { log.Warn().Err(err).Msg("key store") },
	})
	if err != nil {
		return nil, nil, err
	}
	res, err := ensureRings(ctx, store, cfg)
	if err != nil {
		closeStore()
		return nil, nil, fmt.Errorf("serve: key store: %w", err)
	}
	if len(res.Migrations) > 0 {
		log.Info().Ints("migrations", res.Migrations).Msg("key store schema migrated")
	}
	for _, r := range res.Rings {
		log.Info().Str("keyring", r.Ring.Name).Str("purpose", string(r.Ring.Purpose)).
			Str("kek", r.Ring.KEK).Str("status", r.Status).Msg("key ring ready")
	}
	return store, closeStore, nil
}

// serve runs the proxy described by cfg until ctx is cancelled, then shuts
// it down gracefully. enc, when not nil, turns on column encryption. The
// proxy logs the "listening" line.
func serve(ctx context.Context, cfg *config.Config, log zerolog.Logger, enc *proxy.Encryption) error {
	opts, err := proxyOpts(cfg, log)
	if err != nil {
		return usageErr(err)
	}
	opts.Encryption = enc
	srv, err := proxy.New(opts)
	if err != nil {
		return err
	}
	ln, err := listen(cfg.Server.Listen)
	if err != nil {
		return err
	}
	if err := srv.Serve(ctx, ln); err != nil {
		return fmt.Errorf("serve: %w", err)
	}
	return nil
}

// proxyOpts converts the configuration into proxy.Opts, loading the TLS
// files it names. Errors are configuration errors.
func proxyOpts(cfg *config.Config, log zerolog.Logger) (proxy.Opts, error) {
	mode, err := proxy.ParseUpstreamTLS(cfg.Upstream.TLS)
	if err != nil {
		return proxy.Opts{}, err
	}
	opts := proxy.Opts{
		UpstreamAddr:     cfg.Upstream.Addr,
		UpstreamTLS:      mode,
		HandshakeTimeout: cfg.Server.HandshakeTimeout,
		ShutdownTimeout:  cfg.Server.ShutdownTimeout,
		MaxMessageLen:    cfg.Server.MaxMessageLen,
		EventLoops:       cfg.Server.EventLoops,
		Logger:           log,
	}
	if cfg.Server.TLSCert != "" {
		cert, err := tls.LoadX509KeyPair(cfg.Server.TLSCert, cfg.Server.TLSKey)
		if err != nil {
			return proxy.Opts{}, fmt.Errorf("server.tls_cert / server.tls_key: %w", err)
		}
		opts.ClientTLS = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	}
	if mode != proxy.UpstreamTLSDisable {
		up := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: cfg.Upstream.TLSServerName}
		if cfg.Upstream.TLSCA != "" {
			pem, err := os.ReadFile(cfg.Upstream.TLSCA)
			if err != nil {
				return proxy.Opts{}, fmt.Errorf("upstream.tls_ca: %w", err)
			}
			up.RootCAs = x509.NewCertPool()
			if !up.RootCAs.AppendCertsFromPEM(pem) {
				return proxy.Opts{}, fmt.Errorf("upstream.tls_ca: %s holds no PEM certificate", cfg.Upstream.TLSCA)
			}
		}
		opts.UpstreamTLSConfig = up
	}
	return opts, nil
}

// listen opens the client-facing listener.
func listen(addr string) (net.Listener, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", addr, err)
	}
	return ln, nil
}
