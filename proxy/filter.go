package proxy

import "errors"

// frameFilter is the per-direction hook for inspecting and rewriting
// messages during the relay. It is how the encryption layer will plug in:
// e.g. on the client→server side a filter for 'Q', 'P' and 'B' applies
// rewrite plans, on the server→client side one for 'T', 't' and 'D' decrypts.
//
// Only frames whose type the filter wants reach it; all others are streamed
// through untouched (and without being buffered whole), so a session with no
// filter, or with a filter that wants few types, pays one table lookup per
// frame. A filter runs on its direction's goroutine only and needs no
// locking for its own state; state shared between the two directions of a
// session (e.g. statement names seen in Parse, needed when RowDescription
// comes back) is the filter implementation's business.
type frameFilter interface {
	// wants reports whether frames of message type typ must go through
	// filter. It is asked once per type when the relay starts.
	wants(typ byte) bool
	// filter receives one complete frame (type byte, length, body) and
	// appends to out what to forward in its place: nothing to drop it, the
	// frame itself to keep it, or any number of other complete frames. The
	// frame is only valid until filter returns. An error ends the session;
	// wrap a sentinel from errors.go so the client gets the right SQLSTATE.
	// Returning errKeep (with out unchanged) forwards the frame as it is,
	// which spares the relay from copying the batch.
	filter(frame []byte, out []byte) ([]byte, error)
}

// errKeep is returned by a filter that forwards the frame unchanged and
// appended nothing.
var errKeep = errors.New("proxy: frame kept")

// Per-message-type actions of a pump, looked up once per frame.
const (
	actPass      uint8 = 0 // stream through unchanged
	actFilter    uint8 = 1 // hand the whole frame to the filter
	actTerminate uint8 = 2 // forward, then end the direction (client Terminate)
)

// actionTable builds the per-type action table for a direction.
func actionTable(f frameFilter, terminate bool) *[256]uint8 {
	var t [256]uint8
	if f != nil {
		for typ := 0; typ < 256; typ++ {
			if f.wants(byte(typ)) {
				t[typ] = actFilter
			}
		}
	}
	if terminate && t['X'] == actPass {
		t['X'] = actTerminate
	}
	return &t
}
