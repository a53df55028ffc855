package pgvalue

import (
	"errors"
	"strings"
	"testing"
)

const marker = "S3CR3T-9f3a"

// TestErrorsNeverContainValue: rejected values, text and binary, for every
// type, with the marker inside: the error names the type and the reason,
// never the value.
func TestErrorsNeverContainValue(t *testing.T) {
	texts := []string{
		marker, "12" + marker, marker + "  ", "{" + marker + "}", `"` + marker, "[" + marker + "]",
		`\x` + marker, "2024-01-31 " + marker, "1e" + marker, "\xff" + marker, marker + "\x00",
		`{"` + marker + `":}`, `"\u0000` + marker + `"`,
	}
	n := 0
	for k := KindText; k.valid(); k++ {
		typ := Type{Kind: k}
		if k == KindVarchar {
			typ.Len = 3
		}
		for _, in := range texts {
			if _, err := Canonical(typ, TextFormat, []byte(in)); err != nil {
				n++
				checkErr(t, typ, in, err)
			}
			bin := append([]byte{1}, in...) // wrong length for every fixed-width type
			if _, err := Canonical(typ, BinaryFormat, bin); err != nil {
				n++
				checkErr(t, typ, in, err)
			}
			if _, err := Output(typ, BinaryFormat, []byte(in), nil); err != nil {
				n++
				checkErr(t, typ, in, err)
			}
		}
	}
	if n < 200 {
		t.Errorf("only %d rejections: the inputs do not exercise the error paths", n)
	}
}

func checkErr(t *testing.T, typ Type, in string, err error) {
	t.Helper()
	var e *Error
	if !errors.As(err, &e) || len(e.Code()) != 5 || !errors.Is(err, ErrInvalid) {
		t.Errorf("%v %q: error %v (%T) has no SQLSTATE", typ, in, err, err)
	}
	if strings.Contains(err.Error(), "9f3a") || strings.Contains(err.Error(), "S3CR") {
		t.Errorf("%v: error %q contains the value", typ, err)
	}
}

func TestMask(t *testing.T) {
	for _, name := range []string{"text", "varchar(2)", "varchar(10)", "int2", "int4", "int8", "numeric", "numeric(6,2)",
		"numeric(3,-1)", "float4", "float8", "bool", "date", "timestamp", "timestamp(0)", "timestamptz", "uuid", "json", "jsonb", "bytea"} {
		typ := MustParseType(name)
		m := Mask(typ)
		canon, err := Canonical(typ, TextFormat, m)
		if err != nil || string(canon) != string(m) {
			t.Errorf("%s: Mask %q is not canonical (%q, %v)", name, m, canon, err)
		}
		if _, err := Output(typ, BinaryFormat, m, nil); err != nil {
			t.Errorf("%s: Mask %q has no binary form: %v", name, m, err)
		}
		if string(AppendMask([]byte("x"), typ)) != "x"+string(m) {
			t.Errorf("%s: AppendMask does not append", name)
		}
	}
	if got := string(Mask(MustParseType("varchar(2)"))); got != "**" {
		t.Errorf("varchar(2) mask %q, want **", got)
	}
	if got := string(Mask(MustParseType("numeric(6,2)"))); got != "0.00" {
		t.Errorf("numeric(6,2) mask %q, want 0.00", got)
	}
	if got := string(Mask(MustParseType("text"))); got != "****" {
		t.Errorf("text mask %q", got)
	}
}
