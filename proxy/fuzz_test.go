package proxy

import (
	"strings"
	"testing"

	"github.com/jackc/pgx/v5/pgproto3"
)

func FuzzDecodeStartup(f *testing.F) {
	seed, _ := (&pgproto3.StartupMessage{ProtocolVersion: pgproto3.ProtocolVersion30,
		Parameters: map[string]string{"user": "a", "database": "b"}}).Encode(nil)
	f.Add(seed)
	f.Add([]byte{0, 0, 0, 8, 0, 3, 0, 1})
	f.Fuzz(func(t *testing.T, pkt []byte) {
		if len(pkt) < 8 {
			return // readStartupPacket guarantees at least 8 bytes
		}
		st, err := decodeStartup(pkt)
		if err == nil && st.params == nil {
			t.Fatal("accepted without parameters")
		}
	})
}

func FuzzStripChannelBinding(f *testing.F) {
	seed, _ := (&pgproto3.AuthenticationSASL{AuthMechanisms: []string{"SCRAM-SHA-256-PLUS", "SCRAM-SHA-256"}}).Encode(nil)
	f.Add(seed)
	f.Fuzz(func(t *testing.T, frame []byte) {
		if len(frame) < headerLen+4 {
			return // authRequest checks this first
		}
		out, err := stripChannelBinding(frame, nil)
		if err != nil {
			return
		}
		var m pgproto3.AuthenticationSASL
		if err := m.Decode(out[headerLen:]); err != nil {
			t.Fatalf("re-encoded message does not decode: %v", err)
		}
		for _, mech := range m.AuthMechanisms {
			if strings.HasSuffix(mech, "-PLUS") {
				t.Fatalf("%q kept", mech)
			}
		}
	})
}

func FuzzErrorCode(f *testing.F) {
	seed, _ := (&pgproto3.ErrorResponse{Severity: "FATAL", Code: "28P01", Message: "m"}).Encode(nil)
	f.Add(seed)
	f.Fuzz(func(t *testing.T, frame []byte) {
		if len(frame) < headerLen {
			return
		}
		if c := errorCode(frame); len(c) > len(frame) {
			t.Fatal("code longer than the frame")
		}
	})
}
