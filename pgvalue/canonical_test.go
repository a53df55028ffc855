package pgvalue

import (
	"errors"
	"strings"
	"testing"
)

type canonCase struct {
	typ, in string
	want    string // canonical text when code == ""
	code    string // expected SQLSTATE
}

// canonCases are hermetic expectations (TestAgainstServer checks the same
// ground against a real PostgreSQL).
var canonCases = []canonCase{
	{"text", "", "", ""},
	{"text", "ünïcødé ☃ 𝄞", "ünïcødé ☃ 𝄞", ""},
	{"text", " keep  spaces ", " keep  spaces ", ""},
	{"text", "bad \xff utf8", "", CodeBadEncoding},
	{"text", "nul\x00byte", "", CodeBadEncoding},
	{"varchar(3)", "abc", "abc", ""},
	{"varchar(3)", "ééé", "ééé", ""},
	{"varchar(3)", "abcd", "", CodeStringTooLong},
	{"varchar(3)", "éééé", "", CodeStringTooLong},
	{"varchar(3)", "abc   ", "abc", ""},
	{"varchar(3)", "ab    ", "ab ", ""},
	{"varchar(3)", "abc  x", "", CodeStringTooLong},
	{"varchar", strings.Repeat("x", 100), strings.Repeat("x", 100), ""},
	{"int2", "32767", "32767", ""},
	{"int2", "32768", "", CodeOutOfRange},
	{"int2", "-32768", "-32768", ""},
	{"int4", " 42 ", "42", ""},
	{"int4", "+007", "7", ""},
	{"int4", "-0", "0", ""},
	{"int4", "-2147483648", "-2147483648", ""},
	{"int4", "2147483648", "", CodeOutOfRange},
	{"int4", "4 2", "", CodeInvalidText},
	{"int4", "", "", CodeInvalidText},
	{"int4", "1.0", "", CodeInvalidText},
	{"int8", "-9223372036854775808", "-9223372036854775808", ""},
	{"int8", "9223372036854775808", "", CodeOutOfRange},
	{"int8", "99999999999999999999999", "", CodeOutOfRange},
	{"numeric", "1.50", "1.50", ""},
	{"numeric", "-0.00", "0.00", ""},
	{"numeric", "1e3", "1000", ""},
	{"numeric", "1.5e-3", "0.0015", ""},
	{"numeric", "  -12.3400  ", "-12.3400", ""},
	{"numeric", "nan", "NaN", ""},
	{"numeric", "-inf", "-Infinity", ""},
	{"numeric", "1e-16384", "", CodeOutOfRange},
	{"numeric", "1.2.3", "", CodeInvalidText},
	{"numeric(5,2)", "1.005", "1.01", ""},
	{"numeric(5,2)", "-1.005", "-1.01", ""},
	{"numeric(5,2)", "-0.001", "0.00", ""},
	{"numeric(5,2)", "7", "7.00", ""},
	{"numeric(5,2)", "999.995", "", CodeOutOfRange},
	{"numeric(5,2)", "Infinity", "", CodeOutOfRange},
	{"numeric(5,2)", "NaN", "NaN", ""},
	{"numeric(3,-2)", "12345", "12300", ""},
	{"numeric(3)", "2.5", "3", ""},
	{"float4", "0.1", "0.1", ""},
	{"float4", "1e6", "1e+06", ""},
	{"float4", "123456", "123456", ""},
	{"float4", "3.5e38", "", CodeOutOfRange},
	{"float8", "0.1", "0.1", ""},
	{"float8", "-0", "-0", ""},
	{"float8", "1e15", "1e+15", ""},
	{"float8", "123456789012345", "123456789012345", ""},
	{"float8", "0.0001", "0.0001", ""},
	{"float8", "0.00001", "1e-05", ""},
	{"float8", "NaN", "NaN", ""},
	{"float8", "-Infinity", "-Infinity", ""},
	{"float8", "inf", "Infinity", ""},
	{"float8", "1e-400", "", CodeOutOfRange},
	{"float8", "1e400", "", CodeOutOfRange},
	{"float8", "5e-324", "5e-324", ""},
	{"float8", "0x10", "", CodeInvalidText},
	// decimals exactly halfway between two floats: PostgreSQL (Ryu) prints
	// more digits, strconv's shortest would print the tie
	{"float4", "38317150", "3.8317152e+07", ""},
	{"float8", "24358758e13", "2.4358758000000002e+20", ""},
	{"float8", "65804e17", "6.580400000000001e+21", ""},
	{"float4", "16777217", "1.6777216e+07", ""},
	{"bool", "YES", "t", ""},
	{"bool", " off ", "f", ""},
	{"bool", "o", "", CodeInvalidText},
	{"bool", "", "", CodeInvalidText},
	{"date", "2024-02-29", "2024-02-29", ""},
	{"date", "2023-02-29", "", CodeDatetimeOverflow},
	{"date", "infinity", "infinity", ""},
	{"date", "-infinity", "-infinity", ""},
	{"date", "epoch", "1970-01-01", ""},
	{"date", "0044-03-15 BC", "0044-03-15 BC", ""},
	{"date", "4714-11-23 BC", "", CodeDatetimeOverflow},
	{"date", "Jan 31 2024", "", CodeDatetimeFormat},
	{"timestamp", "2024-01-31T12:34:56.120", "2024-01-31 12:34:56.12", ""},
	{"timestamp", "2024-01-31 12:00:00+05", "2024-01-31 12:00:00", ""},
	{"timestamp", "2024-01-31 24:00:00", "2024-02-01 00:00:00", ""},
	{"timestamp", "294277-01-01 00:00:00", "", CodeDatetimeOverflow},
	{"timestamp(0)", "2024-01-31 12:34:56.5", "2024-01-31 12:34:57", ""},
	{"timestamp(0)", "1969-12-31 23:59:59.5", "1969-12-31 23:59:59", ""}, // half away from 2000-01-01, like PostgreSQL
	{"timestamptz", "2024-01-31 12:34:56+05:30", "2024-01-31 07:04:56+00", ""},
	{"timestamptz", "2024-01-31 12:34:56", "2024-01-31 12:34:56+00", ""}, // no offset: UTC
	{"timestamptz", "2024-01-31T12:34:56.5Z", "2024-01-31 12:34:56.5+00", ""},
	{"timestamptz", "0044-03-15 12:00:00+00 BC", "0044-03-15 12:00:00+00 BC", ""},
	{"timestamptz", "infinity", "infinity", ""},
	{"timestamptz", "2024-01-31 12:34:56 Europe/Paris", "", CodeDatetimeFormat},
	{"timestamptz(2)", "2024-01-31 12:34:56.125+00", "2024-01-31 12:34:56.13+00", ""},
	{"uuid", "{A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11}", "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11", ""},
	{"uuid", "a0eebc999c0b4ef8bb6d6bb9bd380a11", "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11", ""},
	{"uuid", "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a1", "", CodeInvalidText},
	{"json", ` {"b":1, "a" : 2} `, ` {"b":1, "a" : 2} `, ""},
	{"json", `{"a":}`, "", CodeInvalidText},
	{"jsonb", ` {"b":1, "aa":[1.50, 1e2], "a":2, "a":3} `, `{"a": 3, "b": 1, "aa": [1.50, 100]}`, ""},
	{"jsonb", `"\u00e9\n\u0001\/"`, `"é\n\u0001/"`, ""},
	{"jsonb", `"\u0000"`, "", CodeUntranslatable},
	{"jsonb", `[1,]`, "", CodeInvalidText},
	{"jsonb", strings.Repeat("[", 10000) + strings.Repeat("]", 10000), strings.Repeat("[", 10000) + strings.Repeat("]", 10000), ""},
	{"json", strings.Repeat("[", 10001) + strings.Repeat("]", 10001), "", CodeTooDeep},
	{"bytea", `\xDEADbeef`, `\xdeadbeef`, ""},
	{"bytea", `\x`, `\x`, ""},
	{"bytea", `a\\b\001`, `\x615c6201`, ""},
	{"bytea", `\xdea`, "", CodeInvalidParameter},
	{"bytea", `\8`, "", CodeInvalidText},
	{"bytea", ``, `\x`, ""},
}

func TestCanonicalText(t *testing.T) {
	for _, tt := range canonCases {
		typ := MustParseType(tt.typ)
		got, err := Canonical(typ, TextFormat, []byte(tt.in))
		if tt.code != "" {
			var e *Error
			if !errors.As(err, &e) || e.Code() != tt.code || !errors.Is(err, ErrInvalid) {
				t.Errorf("%s %q: got %q, %v; want SQLSTATE %s", tt.typ, tt.in, got, err, tt.code)
			}
			continue
		}
		if err != nil || string(got) != tt.want {
			t.Errorf("%s %q: got %q, %v; want %q", tt.typ, tt.in, got, err, tt.want)
			continue
		}
		// The canonical form is a fixed point.
		again, err := Canonical(typ, TextFormat, got)
		if err != nil || string(again) != string(got) {
			t.Errorf("%s %q: canonical %q is not a fixed point: %q, %v", tt.typ, tt.in, got, again, err)
		}
	}
}

func TestAppendCanonicalKeepsPrefix(t *testing.T) {
	buf := []byte("prefix:")
	out, err := AppendCanonical(buf, MustParseType("int4"), TextFormat, []byte(" 12 "))
	if err != nil || string(out) != "prefix:12" {
		t.Fatalf("got %q, %v", out, err)
	}
	out, err = AppendCanonical(buf, MustParseType("int4"), TextFormat, []byte("x"))
	if err == nil || string(out) != "prefix:" {
		t.Fatalf("on error got %q, %v; want the prefix back", out, err)
	}
	if _, err := Canonical(MustParseType("int4"), 2, []byte("1")); err == nil {
		t.Fatal("format 2 accepted")
	}
	if _, err := Output(MustParseType("int4"), 2, []byte("1"), nil); err == nil {
		t.Fatal("Output format 2 accepted")
	}
}
