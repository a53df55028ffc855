package pgvalue

import (
	"bytes"
	"errors"
	"testing"
)

// Fuzz targets per type family. Properties: no panic; a rejection is an
// *Error with a SQLSTATE; an accepted value's canonical form is a fixed
// point, has a binary form, and that binary form reads back to the same
// canonical text. Seed corpora: testdata/fuzz/<target>/ plus the test
// tables.

func fuzzFamily(f *testing.F, types []string) {
	add := func(in string) {
		if len(in) <= 4096 { // huge seeds (deep JSON) slow the fuzzer down
			f.Add(in)
		}
	}
	for _, c := range canonCases {
		for _, typ := range types {
			if c.typ == typ {
				add(c.in)
			}
		}
	}
	for _, typ := range types {
		for _, in := range serverCases[typ] {
			add(in)
		}
	}
	parsed := make([]Type, len(types))
	for i, typ := range types {
		parsed[i] = MustParseType(typ)
	}
	f.Fuzz(func(t *testing.T, in string) {
		for _, typ := range parsed {
			checkCanonical(t, typ, []byte(in))
		}
	})
}

func checkCanonical(t *testing.T, typ Type, src []byte) {
	canon, err := Canonical(typ, TextFormat, src)
	if err != nil {
		var e *Error
		if !errors.As(err, &e) || len(e.Code()) != 5 {
			t.Fatalf("%v: error without SQLSTATE: %v", typ, err)
		}
		return
	}
	again, err := Canonical(typ, TextFormat, canon)
	if err != nil || !bytes.Equal(again, canon) {
		t.Fatalf("%v %q: canonical %q is not a fixed point: %q, %v", typ, src, canon, again, err)
	}
	bin, err := Output(typ, BinaryFormat, canon, nil)
	if err != nil {
		t.Fatalf("%v %q: canonical %q has no binary form: %v", typ, src, canon, err)
	}
	back, err := Canonical(typ, BinaryFormat, bin)
	if err != nil || !bytes.Equal(back, canon) {
		t.Fatalf("%v %q: binary %x reads back as %q, %v; want %q", typ, src, bin, back, err, canon)
	}
}

func FuzzCanonicalTextInt(f *testing.F) { fuzzFamily(f, []string{"int2", "int4", "int8"}) }

func FuzzCanonicalTextNumeric(f *testing.F) {
	fuzzFamily(f, []string{"numeric", "numeric(5,2)", "numeric(3)", "numeric(3,-2)", "numeric(4,4)"})
}

func FuzzCanonicalTextFloat(f *testing.F) { fuzzFamily(f, []string{"float4", "float8"}) }

func FuzzCanonicalTextDatetime(f *testing.F) {
	fuzzFamily(f, []string{"date", "timestamp", "timestamp(0)", "timestamp(3)", "timestamptz", "timestamptz(2)"})
}

func FuzzCanonicalTextJSON(f *testing.F) { fuzzFamily(f, []string{"json", "jsonb"}) }

func FuzzCanonicalTextMisc(f *testing.F) {
	fuzzFamily(f, []string{"text", "varchar(5)", "bool", "uuid", "bytea"})
}

// FuzzCanonicalBinary feeds arbitrary binary input to every type.
func FuzzCanonicalBinary(f *testing.F) {
	f.Add(uint8(KindNumeric), []byte{0, 1, 0, 0, 0, 0, 0, 2, 0, 12})
	f.Add(uint8(KindTimestamptz), []byte{0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff})
	f.Add(uint8(KindDate), []byte{0x80, 0, 0, 0})
	f.Add(uint8(KindJSONB), []byte("\x01{\"a\": 1}"))
	f.Add(uint8(KindFloat8), []byte{0x7f, 0xf8, 0, 0, 0, 0, 0, 1})
	f.Fuzz(func(t *testing.T, kind uint8, src []byte) {
		k := Kind(kind%16 + 1)
		typ := Type{Kind: k}
		canon, err := Canonical(typ, BinaryFormat, src)
		if err != nil {
			var e *Error
			if !errors.As(err, &e) || len(e.Code()) != 5 {
				t.Fatalf("%v: error without SQLSTATE: %v", typ, err)
			}
			return
		}
		checkCanonical(t, typ, canon)
	})
}
