package proxy

import (
	"context"
	"crypto/tls"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"time"
)

// upstreamTLSConfig derives the TLS configuration towards the server from
// Opts, or nil for UpstreamTLSDisable.
func upstreamTLSConfig(opts *Opts) (*tls.Config, error) {
	if opts.UpstreamTLS == UpstreamTLSDisable {
		return nil, nil
	}
	var cfg *tls.Config
	if opts.UpstreamTLSConfig != nil {
		cfg = opts.UpstreamTLSConfig.Clone()
	} else {
		cfg = &tls.Config{}
	}
	if cfg.MinVersion == 0 {
		cfg.MinVersion = tls.VersionTLS12
	}
	if len(cfg.NextProtos) == 0 {
		cfg.NextProtos = []string{alpnPostgres} // PostgreSQL 17+ checks it when sent; older servers ignore it
	}
	switch opts.UpstreamTLS {
	case UpstreamTLSPrefer, UpstreamTLSRequire:
		cfg.InsecureSkipVerify = true // encryption without authentication, as libpq's sslmode=require
	case UpstreamTLSVerifyFull:
		cfg.InsecureSkipVerify = false
		if cfg.ServerName == "" {
			host, _, err := net.SplitHostPort(opts.UpstreamAddr)
			if err != nil {
				return nil, fmt.Errorf("proxy: upstream address %q: %w", opts.UpstreamAddr, err)
			}
			cfg.ServerName = host
		}
	}
	return cfg, nil
}

// connectUpstream dials the server and negotiates TLS per Opts.UpstreamTLS.
// On success s.server (and s.serverRaw) are set.
func (s *session) connectUpstream(ctx context.Context, deadline time.Time) error {
	d := net.Dialer{Deadline: deadline}
	raw, err := d.DialContext(ctx, "tcp", s.srv.opts.UpstreamAddr)
	if err != nil {
		if r := s.reason(); r != nil {
			return r
		}
		if isTimeout(err) {
			return newError(ErrUpstreamUnavailable, "", fmt.Errorf("connect timeout: %w", err))
		}
		return newError(ErrUpstreamUnavailable, "", err)
	}
	_ = raw.SetDeadline(deadline)
	if err := s.setServerRaw(raw); err != nil {
		_ = raw.Close()
		return err
	}
	cfg := s.srv.upstreamTLS
	if cfg == nil {
		return nil
	}
	var req [8]byte
	binary.BigEndian.PutUint32(req[0:4], 8)
	binary.BigEndian.PutUint32(req[4:8], sslRequestCode)
	if _, err := raw.Write(req[:]); err != nil {
		return s.handshakeIOErr(false, err)
	}
	var answer [1]byte
	if _, err := io.ReadFull(raw, answer[:]); err != nil {
		return s.handshakeIOErr(false, err)
	}
	switch answer[0] {
	case 'S':
		tc := tls.Client(raw, cfg)
		if err := tc.HandshakeContext(ctx); err != nil {
			if r := s.reason(); r != nil {
				return r
			}
			return newError(ErrUpstreamTLS, "", err)
		}
		s.mu.Lock()
		s.server = tc
		s.mu.Unlock()
		s.serverTLS = true
		return nil
	case 'N':
		if s.srv.opts.UpstreamTLS == UpstreamTLSPrefer {
			return nil
		}
		return newError(ErrUpstreamTLS, "the server does not support TLS, but pgcloak requires it", nil)
	default:
		// 'E' from servers too old to know SSLRequest; anything else is garbage.
		return newError(ErrUpstreamTLS, "", fmt.Errorf("unexpected answer %q to SSLRequest", answer[0]))
	}
}
