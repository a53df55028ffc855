package proxy

import "sync/atomic"

// Stats are the Server's counters since New. They carry no values, names or
// addresses, only counts.
type Stats struct {
	SessionsAccepted  uint64 // connections accepted
	SessionsActive    int64  // connections currently open (handshake or relay)
	HandshakeFailures uint64 // connections that ended before ReadyForQuery (cancel requests excluded)
	CancelRequests    uint64 // CancelRequest packets received
	CancelKeys        int    // proxy-issued cancel keys currently registered
	BytesUp           uint64 // bytes forwarded client → server
	BytesDown         uint64 // bytes forwarded server → client

	// Column encryption (zero without Opts.Encryption).
	PlanCacheHits     uint64 // statements planned from the plan cache
	PlanCacheMisses   uint64 // statements parsed and planned
	StatementsRefused uint64 // statements refused (0A000, 42501, invalid values, no key)
	ValuesEncrypted   uint64 // parameters and literals sealed
	ValuesDecrypted   uint64 // result values opened
	DecryptFailures   uint64 // result values that failed (XX001, 58000)
}

type counters struct {
	sessionsAccepted  atomic.Uint64
	sessionsActive    atomic.Int64
	handshakeFailures atomic.Uint64
	cancelRequests    atomic.Uint64
	bytesUp           atomic.Uint64
	bytesDown         atomic.Uint64

	refused, encrypted, decrypted, decryptFailures atomic.Uint64
}

// Stats returns a snapshot of the counters.
func (s *Server) Stats() Stats {
	st := Stats{
		SessionsAccepted:  s.stats.sessionsAccepted.Load(),
		SessionsActive:    s.stats.sessionsActive.Load(),
		HandshakeFailures: s.stats.handshakeFailures.Load(),
		CancelRequests:    s.stats.cancelRequests.Load(),
		CancelKeys:        s.cancels.len(),
		BytesUp:           s.stats.bytesUp.Load(),
		BytesDown:         s.stats.bytesDown.Load(),
		StatementsRefused: s.stats.refused.Load(),
		ValuesEncrypted:   s.stats.encrypted.Load(),
		ValuesDecrypted:   s.stats.decrypted.Load(),
		DecryptFailures:   s.stats.decryptFailures.Load(),
	}
	if s.cloak != nil {
		cs := s.cloak.plans.Stats()
		st.PlanCacheHits, st.PlanCacheMisses = cs.Hits, cs.Misses
	}
	return st
}
