//go:build !linux

package proxy

// fastRelay is the Linux event loop; elsewhere every session takes the
// portable goroutine relay.
type fastRelay struct{}

func newFastRelay(int) *fastRelay        { return nil }
func (*fastRelay) acquire() error        { return nil }
func (*fastRelay) release()              {}
func (*fastRelay) pick(*session) relayer { return nil }
