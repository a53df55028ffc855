package proxy

import "testing"

// A session can outlive its backend briefly and the server reuse the id:
// two live keys under one process id must stay apart by their secrets.
func TestCancelRegistrySharedProcessID(t *testing.T) {
	r := newCancelRegistry()
	a := &cancelTarget{addr: "a", upPID: 77, upSecret: []byte{1, 2, 3, 4}}
	b := &cancelTarget{addr: "b", upPID: 77, upSecret: []byte{5, 6, 7, 8}}
	for _, x := range []*cancelTarget{a, b} {
		if pid, err := r.register(x); err != nil || pid != 77 {
			t.Fatalf("register: %d, %v", pid, err)
		}
	}
	if string(a.secret) == string(a.upSecret) || len(a.secret) != 4 {
		t.Fatalf("issued secret %x must be new and of the server's length", a.secret)
	}
	if got, ok := r.lookup(77, a.secret); !ok || got != a {
		t.Fatal("lookup of a's key did not find a")
	}
	if got, ok := r.lookup(77, b.secret); !ok || got != b {
		t.Fatal("lookup of b's key did not find b")
	}
	if _, ok := r.lookup(77, a.upSecret); ok {
		t.Fatal("the server's own secret was accepted as a client key")
	}
	r.remove(77, a)
	if _, ok := r.lookup(77, a.secret); ok || r.len() != 1 {
		t.Fatalf("a still registered (len %d)", r.len())
	}
	if _, ok := r.lookup(77, b.secret); !ok {
		t.Fatal("removing a removed b")
	}
	r.remove(77, b)
	if r.len() != 0 {
		t.Fatalf("len %d after removing both", r.len())
	}
}
