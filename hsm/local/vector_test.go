package local

import (
	"encoding/hex"
	"testing"
)

// vectorBlobHex was computed once, independently of this code (Python
// cryptography's AESGCM with the key 00..1f, the IV cafebabefacedbaddecaf888,
// the DEK a0..bf and GCM associated data 0x01 || "pgcloak vector aad"), and
// laid out as version || IV || ciphertext || tag. Never regenerate it.
const vectorBlobHex = "01cafebabefacedbaddecaf8882a0202850edfe9bceea2f776d7b02790bd9172e26bacdcc3f666beca0234db402fc957ea9f7d6f6acb60a9d569a2f31d"

func mustHex(t *testing.T, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
