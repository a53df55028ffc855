package envelope

import (
	"fmt"
	"testing"
)

var benchSizes = []int{16, 256, 4096}

func BenchmarkSeal(b *testing.B) {
	k := mustKey(b, 1, 1, testDEK("bench"))
	for _, n := range benchSizes {
		b.Run(fmt.Sprintf("%dB", n), func(b *testing.B) {
			pt := make([]byte, n)
			dst := make([]byte, 0, n+MaxHeaderSize+NonceSize+TagSize)
			b.SetBytes(int64(n))
			b.ReportAllocs()
			for b.Loop() {
				var err error
				if dst, err = k.Seal(dst[:0], nil, "public.customers.ssn", pt); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkOpen(b *testing.B) {
	k := mustKey(b, 1, 1, testDEK("bench"))
	for _, n := range benchSizes {
		b.Run(fmt.Sprintf("%dB", n), func(b *testing.B) {
			env, err := k.Seal(nil, nil, "public.customers.ssn", make([]byte, n))
			if err != nil {
				b.Fatal(err)
			}
			dst := make([]byte, 0, n)
			b.SetBytes(int64(n))
			b.ReportAllocs()
			for b.Loop() {
				if dst, err = k.Open(dst[:0], env, "public.customers.ssn"); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkSealAlloc is Seal into a nil dst: the one allocation is the
// output itself.
func BenchmarkSealAlloc(b *testing.B) {
	k := mustKey(b, 1, 1, testDEK("bench"))
	pt := make([]byte, 16)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := k.Seal(nil, nil, "public.customers.ssn", pt); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkParseHeader(b *testing.B) {
	k := mustKey(b, 1, 1, testDEK("bench"))
	env, err := k.Seal(nil, []byte("0123456789abcdef"), "public.customers.ssn", make([]byte, 16))
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := ParseHeader(env); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkNewKey(b *testing.B) {
	dek := testDEK("bench")
	b.ReportAllocs()
	for b.Loop() {
		if _, err := NewKey(1, 1, dek); err != nil {
			b.Fatal(err)
		}
	}
}
