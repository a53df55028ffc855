package envelope

import (
	"bytes"
	"errors"
	"testing"
)

func TestAppendHeaderBytes(t *testing.T) {
	h := Header{KeyringID: 0x01020304, KeyVersion: 0x0A0B0C0D}
	got := AppendHeader([]byte("x"), h)
	want := mustHex(t, "78"+"c10a"+"01"+"01"+"00"+"01020304"+"0a0b0c0d")
	if !bytes.Equal(got, want) {
		t.Fatalf("AppendHeader = %x, want %x", got, want)
	}
	h.HasBlindIndex = true
	for i := range h.BlindIndex {
		h.BlindIndex[i] = byte(0xB0 + i)
	}
	got = AppendHeader(nil, h)
	want = mustHex(t, "c10a010101"+"01020304"+"0a0b0c0d"+"b0b1b2b3b4b5b6b7b8b9babbbcbdbebf")
	if !bytes.Equal(got, want) {
		t.Fatalf("AppendHeader with blind index = %x, want %x", got, want)
	}
	if h.Len() != 29 || (Header{}).Len() != 13 {
		t.Fatalf("Len: %d / %d, want 29 / 13", h.Len(), (Header{}).Len())
	}
	if n := h.SealedLen(5); n != 29+12+5+16 {
		t.Fatalf("SealedLen(5) = %d", n)
	}
}

func TestParseHeaderRoundTrip(t *testing.T) {
	blind := Header{KeyringID: 9, KeyVersion: 1, HasBlindIndex: true}
	copy(blind.BlindIndex[:], "0123456789abcdef")
	for _, h := range []Header{
		{},
		{KeyringID: 1, KeyVersion: 1},
		{KeyringID: 0xFFFFFFFF, KeyVersion: 0x80000000},
		blind,
	} {
		for _, body := range []int{NonceSize + TagSize, NonceSize + TagSize + 100} {
			b := AppendHeader(nil, h)
			b = append(b, make([]byte, body)...)
			got, err := ParseHeader(b)
			if err != nil {
				t.Fatalf("ParseHeader(%+v, body %d): %v", h, body, err)
			}
			if got != h {
				t.Fatalf("ParseHeader = %+v, want %+v", got, h)
			}
		}
	}
}

func TestParseHeaderErrors(t *testing.T) {
	valid := AppendHeader(nil, Header{KeyringID: 1, KeyVersion: 2})
	valid = append(valid, make([]byte, NonceSize+TagSize)...)
	with := func(i int, v byte) []byte {
		b := bytes.Clone(valid)
		b[i] = v
		return b
	}
	blind := AppendHeader(nil, Header{KeyringID: 1, KeyVersion: 2, HasBlindIndex: true})
	cases := []struct {
		name      string
		in        []byte
		field     string // MalformedError field, or UnsupportedError field when unsupported
		unsupport bool
	}{
		{"nil", nil, "magic", false},
		{"one byte", []byte{0xC1}, "magic", false},
		{"bad magic 0", with(0, 0xC2), "magic", false},
		{"bad magic 1", with(1, 0x0B), "magic", false},
		{"magic only", valid[:2], "version", false},
		{"version 0", with(2, 0), "version", true},
		{"version 2", with(2, 2), "version", true},
		{"no algorithm", valid[:3], "algorithm", false},
		{"algorithm 0", with(3, 0), "algorithm", true},
		{"algorithm 2", with(3, 2), "algorithm", true},
		{"no flags", valid[:4], "flags", false},
		{"flag bit 1", with(4, 0x02), "flags", false},
		{"flag bit 7", with(4, 0x81), "flags", false},
		{"short key id", valid[:12], "key id", false},
		{"header only", valid[:13], "nonce", false},
		{"no tag", valid[:13+NonceSize], "tag", false},
		{"short tag", valid[:len(valid)-1], "tag", false},
		{"short blind index", blind[:20], "blind index", false},
		{"blind index, no nonce", append(bytes.Clone(blind), make([]byte, 11)...), "nonce", false},
		{"blind index, short tag", append(bytes.Clone(blind), make([]byte, NonceSize+TagSize-1)...), "tag", false},
		{"flag claims blind index", with(4, 0x01), "tag", false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := ParseHeader(c.in)
			if c.unsupport {
				var ue *UnsupportedError
				if !errors.As(err, &ue) || !errors.Is(err, ErrUnsupported) || errors.Is(err, ErrMalformed) {
					t.Fatalf("err = %v, want *UnsupportedError", err)
				}
				if ue.Field != c.field {
					t.Fatalf("field = %q, want %q", ue.Field, c.field)
				}
				return
			}
			var me *MalformedError
			if !errors.As(err, &me) || !errors.Is(err, ErrMalformed) || errors.Is(err, ErrUnsupported) {
				t.Fatalf("err = %v, want *MalformedError", err)
			}
			if me.Field != c.field {
				t.Fatalf("field = %q (%v), want %q", me.Field, err, c.field)
			}
		})
	}
}

func TestParseHeaderDoesNotAlias(t *testing.T) {
	b := AppendHeader(nil, Header{KeyringID: 5, KeyVersion: 6, HasBlindIndex: true, BlindIndex: [16]byte{1, 2, 3}})
	b = append(b, make([]byte, NonceSize+TagSize)...)
	h, err := ParseHeader(b)
	if err != nil {
		t.Fatal(err)
	}
	clear(b)
	if h.BlindIndex[0] != 1 || h.BlindIndex[2] != 3 {
		t.Fatalf("Header aliases its input: %x", h.BlindIndex)
	}
}

func TestParseHeaderNoAlloc(t *testing.T) {
	b := AppendHeader(nil, Header{KeyringID: 5, KeyVersion: 6, HasBlindIndex: true})
	b = append(b, make([]byte, NonceSize+TagSize)...)
	short := b[:20]
	allocs := testing.AllocsPerRun(100, func() {
		if _, err := ParseHeader(b); err != nil {
			t.Fatal(err)
		}
		if _, err := ParseHeader(short); err == nil {
			t.Fatal("short envelope parsed")
		}
	})
	if allocs != 0 {
		t.Fatalf("ParseHeader allocates %v times per call", allocs)
	}
}

func TestAlgorithmString(t *testing.T) {
	if AlgAES256GCM.String() != "AES-256-GCM" || Algorithm(0).String() != "unknown algorithm" {
		t.Fatalf("Algorithm.String: %q, %q", AlgAES256GCM, Algorithm(0))
	}
}
