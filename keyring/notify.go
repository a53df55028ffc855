package keyring

import (
	"fmt"
	"strconv"
	"strings"
)

// NotifyChannel is the LISTEN/NOTIFY channel on which the key store
// announces every new version and every state change (sent by a trigger,
// so direct SQL changes are announced too; delivered at commit).
const NotifyChannel = "pgcloak_keys"

// Notification is a parsed NotifyChannel payload
// "<keyring>:<version>:<state>". Any role can NOTIFY on the channel, so a
// notification is only a hint to re-read the key store (Get, List) and
// invalidate caches; never act on its content alone.
type Notification struct {
	Keyring string
	Version uint32
	State   State
}

// ParseNotification parses a payload. Key ring names may contain ':', so
// the version and state are taken from the right.
func ParseNotification(payload string) (Notification, error) {
	i := strings.LastIndexByte(payload, ':')
	if i < 0 {
		return Notification{}, fmt.Errorf("keyring: notification %q: want ring:version:state", payload)
	}
	j := strings.LastIndexByte(payload[:i], ':')
	if j <= 0 {
		return Notification{}, fmt.Errorf("keyring: notification %q: want ring:version:state", payload)
	}
	v, err := strconv.ParseUint(payload[j+1:i], 10, 32)
	if err != nil || v == 0 {
		return Notification{}, fmt.Errorf("keyring: notification %q: bad version", payload)
	}
	st := State(payload[i+1:])
	if !st.Valid() {
		return Notification{}, fmt.Errorf("keyring: notification %q: bad state", payload)
	}
	ring := payload[:j]
	if !ValidKeyringName(ring) {
		return Notification{}, fmt.Errorf("keyring: notification %q: bad key ring name", payload)
	}
	return Notification{Keyring: ring, Version: uint32(v), State: st}, nil
}

// String formats the payload as the trigger sends it.
func (n Notification) String() string {
	return n.Keyring + ":" + strconv.FormatUint(uint64(n.Version), 10) + ":" + string(n.State)
}
