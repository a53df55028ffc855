package pkcs11

import (
	"context"
	"testing"
)

// BenchmarkUnwrap measures one C_DecryptInit + C_Decrypt round on SoftHSM2
// (pool acquisition included): the cost of a DEK cache miss.
func BenchmarkUnwrap(b *testing.B) {
	p, _ := newProvider(b, nil)
	ctx := context.Background()
	aad := []byte("keyring=1/version=1")
	w, err := p.Wrap(ctx, randomDEK(b), aad)
	if err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		k, err := p.Unwrap(ctx, w, aad)
		if err != nil {
			b.Fatal(err)
		}
		k.Zero()
	}
}

func BenchmarkWrap(b *testing.B) {
	p, _ := newProvider(b, nil)
	ctx := context.Background()
	dek := randomDEK(b)
	for b.Loop() {
		if _, err := p.Wrap(ctx, dek, []byte("keyring=1/version=1")); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkUnwrapParallel(b *testing.B) {
	p, _ := newProvider(b, nil)
	ctx := context.Background()
	aad := []byte("keyring=1/version=1")
	w, err := p.Wrap(ctx, randomDEK(b), aad)
	if err != nil {
		b.Fatal(err)
	}
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			k, err := p.Unwrap(ctx, w, aad)
			if err != nil {
				b.Error(err)
				return
			}
			k.Zero()
		}
	})
}
