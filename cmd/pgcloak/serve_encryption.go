package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/rs/zerolog"

	"github.com/pgcloak/pgcloak/catalog"
	"github.com/pgcloak/pgcloak/config"
	"github.com/pgcloak/pgcloak/crypto/envelope"
	"github.com/pgcloak/pgcloak/keyring"
	"github.com/pgcloak/pgcloak/keyring/audit"
	"github.com/pgcloak/pgcloak/keys"
	"github.com/pgcloak/pgcloak/proxy"
)

// auditCloseTimeout bounds writing the queued read audits at shutdown.
const auditCloseTimeout = 10 * time.Second

// encryption is what serve builds when a column is encrypted: the proxy's
// Encryption and the resources behind it, which close releases in order.
type encryption struct {
	enc          *proxy.Encryption
	keys         *keys.Source
	stopRotation func() // stops the rotation scheduler, releasing its leadership
	catalogs     *catalog.Source
	audits       *keyring.AuditQueue // nil without a classification that audits reads
	log          zerolog.Logger
}

// startEncryption builds the key source (running: NOTIFY, poll, counter
// flushes), the rotation scheduler (running until ctx ends), the catalog
// source over the [keystore] dsn's server, the read auditor and the
// policies of every encrypting classification. store stays open until
// after close.
func startEncryption(ctx context.Context, cfg *config.Config, store *keyring.Store, log zerolog.Logger) (*encryption, error) {
	policies, err := policies(cfg)
	if err != nil {
		return nil, usageErr(err)
	}
	src, err := keys.New(keys.Opts{
		Store:              store,
		FlushInterval:      counterFlushInterval(cfg),
		AllowDisabledReads: cfg.Rotation.CompromisedReads == config.CompromisedReadsAllow,
		Logger:             log.With().Str("component", "keys").Logger(),
	})
	if err != nil {
		return nil, err
	}
	// Run follows the key store until close, not until the shutdown
	// signal: sessions still draining must see key state changes.
	go func() { _ = src.Run(context.WithoutCancel(ctx)) }()
	// The scheduler stops at the shutdown signal: a proxy on its way out
	// hands the leadership to one that keeps running.
	stopRotation, err := startRotation(ctx, cfg, store, log)
	if err != nil {
		_ = src.Close()
		return nil, err
	}

	resolver, err := catalog.NewResolver(catalog.ResolverOpts{Columns: encryptedColumns(cfg)})
	if err != nil {
		stopRotation()
		_ = src.Close()
		return nil, err
	}
	catLog := log.With().Str("component", "catalog").Logger()
	cats, err := catalog.NewSource(catalog.SourceOpts{
		Resolver: resolver,
		DSN:      cfg.Keystore.DSN,
		OnProblems: func(db string, problems []catalog.Problem) {
			for _, p := range problems {
				catLog.Warn().Str("database", db).Str("column", p.Column.QualifiedName()).Str("problem", p.Kind.String()).
					Msg(p.String())
			}
		},
	})
	if err != nil {
		stopRotation()
		_ = src.Close()
		return nil, usageErr(fmt.Errorf("%s: [keystore] dsn: %w", cfg.File, err))
	}
	warnCatalogServer(cfg, catLog)

	e := &encryption{keys: src, stopRotation: stopRotation, catalogs: cats, log: log}
	e.enc = &proxy.Encryption{Catalogs: cats, Keys: proxyKeys{src}, Policies: policies}
	for _, p := range policies {
		if p.AuditReads {
			e.audits = store.NewAuditQueue(keyring.AuditQueueOpts{OnError: func(err error) {
				var de *keyring.AuditDropError
				if errors.As(err, &de) {
					log.Warn().Uint64("dropped", de.Dropped).Msg("read audit records dropped")
					return
				}
				log.Warn().Err(err).Msg("read audit")
			}})
			e.enc.Auditor = readAuditor{q: e.audits, ring: keys.RingName(config.LevelRestricted)}
			break
		}
	}
	return e, nil
}

// close stops the rotation scheduler (if the shutdown signal has not
// already), the key source (flushing the encryption counters), writes the
// queued read audits and closes the catalog connections. Call it once the
// proxy has stopped.
func (e *encryption) close() {
	e.stopRotation()
	if err := e.keys.Close(); err != nil {
		e.log.Warn().Err(err).Msg("encryption counters not flushed at shutdown")
	}
	if e.audits != nil {
		ctx, cancel := context.WithTimeout(context.Background(), auditCloseTimeout)
		if err := e.audits.Close(ctx); err != nil {
			e.log.Warn().Err(err).Msg("read audit records lost at shutdown")
		}
		cancel()
	}
	e.catalogs.Close()
}

// policies returns the access rule of every encrypting classification.
func policies(cfg *config.Config) (map[string]proxy.Policy, error) {
	out := map[string]proxy.Policy{}
	for name, c := range cfg.Classifications {
		if !c.Encrypted() {
			continue
		}
		od, err := proxy.ParseOnDenied(c.OnDenied)
		if err != nil {
			return nil, fmt.Errorf("%s: classification.%s.on_denied: %w", cfg.File, name, err)
		}
		out[name] = proxy.Policy{
			PlaintextRoles: append([]string(nil), c.PlaintextRoles...),
			OnDenied:       od,
			AuditReads:     name == config.LevelRestricted,
		}
	}
	return out, nil
}

// proxyKeys is the key source as the proxy sees it: a destroyed version's
// error also wraps proxy.ErrKeyDestroyed.
type proxyKeys struct{ *keys.Source }

var _ proxy.KeySource = proxyKeys{}

// Key returns the key version a ciphertext names.
func (k proxyKeys) Key(ctx context.Context, keyringID, version uint32) (*envelope.Key, error) {
	key, err := k.Source.Key(ctx, keyringID, version)
	if err != nil && errors.Is(err, keyring.ErrKeyDestroyed) {
		return nil, fmt.Errorf("%w: %w", proxy.ErrKeyDestroyed, err)
	}
	return key, err
}

var _ proxy.CatalogSource = (*catalog.Source)(nil)

// readAuditor turns the proxy's read audits into audit-log records
// (event data.read), queued and written in batches.
type readAuditor struct {
	q    *keyring.AuditQueue
	ring string
}

var _ proxy.ReadAuditor = readAuditor{}

// AuditRead queues r; it never blocks (a full queue drops and counts).
func (a readAuditor) AuditRead(r proxy.ReadAudit) {
	a.q.Add(audit.Record{Event: audit.EventDataRead, Keyring: a.ring, Details: map[string]string{
		"conn":        strconv.FormatUint(r.Conn, 10),
		"role":        r.Role,
		"database":    r.Database,
		"application": r.Application,
		"fingerprint": r.Fingerprint,
		"command":     r.Command,
		"columns":     strings.Join(r.Columns, ","),
		"rows":        strconv.FormatInt(r.Rows, 10),
	}})
}

// warnCatalogServer warns when the [keystore] dsn names another server
// than [upstream] addr: catalog lookups use the key store's server with
// the session's database, so the two must reach the same cluster.
func warnCatalogServer(cfg *config.Config, log zerolog.Logger) {
	pc, err := pgconn.ParseConfig(cfg.Keystore.DSN)
	if err != nil || strings.HasPrefix(pc.Host, "/") {
		return // unparsable (reported elsewhere) or a Unix socket: cannot compare
	}
	ks := net.JoinHostPort(pc.Host, strconv.Itoa(int(pc.Port)))
	if ks == cfg.Upstream.Addr {
		return
	}
	log.Warn().Str("keystore", ks).Str("upstream", cfg.Upstream.Addr).
		Msg("the [keystore] dsn names another server than [upstream] addr; encrypted columns are resolved in the key store's server under the session's database name, so both must reach the same PostgreSQL cluster")
}
