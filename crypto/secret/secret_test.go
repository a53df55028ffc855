package secret

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
)

func TestNeverPrintsKeyBytes(t *testing.T) {
	key := New([]byte("super-secret-key-material-0123456789"))
	for _, verb := range []string{"%v", "%+v", "%#v", "%s", "%q", "%x", "%X", "%d"} {
		out := fmt.Sprintf(verb, key)
		if strings.Contains(out, "super") || strings.Contains(out, "7375706572") || strings.Contains(strings.ToLower(out), "7375706572") {
			t.Errorf("%s printed key bytes: %s", verb, out)
		}
		if !strings.Contains(out, "REDACTED") {
			t.Errorf("%s printed %q, want a redaction marker", verb, out)
		}
	}
	j, err := json.Marshal(struct{ K Bytes }{key})
	if err != nil || strings.Contains(string(j), "super") {
		t.Fatalf("json: %s, %v", j, err)
	}
}

func TestNewCopiesAndZeroClears(t *testing.T) {
	src := []byte{1, 2, 3, 4}
	k := New(src)
	src[0] = 9
	if k.Expose()[0] != 1 {
		t.Fatal("New did not copy its input")
	}
	alias := k
	k.Zero()
	for _, b := range alias.Expose() {
		if b != 0 {
			t.Fatal("Zero left key bytes in a copy of the value")
		}
	}
	if k.Len() != 4 {
		t.Fatalf("Len = %d", k.Len())
	}
}

func TestEqual(t *testing.T) {
	a, b, c := New([]byte("abc")), New([]byte("abc")), New([]byte("abd"))
	if !a.Equal(b) || a.Equal(c) || a.Equal(New([]byte("ab"))) {
		t.Fatal("Equal is wrong")
	}
}
