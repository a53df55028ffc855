package pgvalue

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/pgcloak/pgcloak/internal/pgtest"
)

// serverCases are inputs whose canonical form is checked against a real
// PostgreSQL: each is inserted into a column of the type (assignment, as
// through the proxy) and read back as text and as binary.
var serverCases = map[string][]string{
	"text":           {"\xff", "a\x00b", "\xc3", "", "hello", " padded ", "ünïcødé ☃ 𝄞", "back\\slash", "tab\there", "line\nbreak"},
	"varchar(5)":     {"", "abc", "abcde", "abcdef", "abc      ", "abcde   x", "ééééé", "éééééé", "ééééé  "},
	"int2":           {" +7 ", "- 1", "1e2", "0", "-0", "+5", " 42 ", "007", "32767", "-32768", "32768", "-32769", "", "1.0", "4 2", "0x10", "1_000", "\t-1\n"},
	"int4":           {"\xff", "１２", "0", "2147483647", "-2147483648", "2147483648", "-2147483649", " 42", "42 ", "+", "-", "abc", "99999999999999999999"},
	"int8":           {"9223372036854775807", "-9223372036854775808", "9223372036854775808", "-9223372036854775809", "000000000000000000000001"},
	"numeric":        {"1e1000", "1e-1000", "1e131072", "1e-16384", "1e-16383", "-1e3", "9.99e2", "0e5", "0.0e-3", "0", "-0", "0.00", "-0.00", "1.50", "1e3", "1.5e-3", "1E+2", "-12.3400", ".5", "5.", "  7  ", "NaN", "nan", "Infinity", "-inf", "+inf", "+NaN", "1e-20", "00012.000", "abc", "1e", "1.2.3", "", "123456789012345678901234567890.123456789"},
	"numeric(5,2)":   {"1", "1.005", "1.004", "-1.005", "999.99", "999.995", "-999.995", "0.001", "-0.001", "NaN", "Infinity", "12345", "1e2"},
	"numeric(3)":     {"1.5", "2.5", "-2.5", "999.4", "999.5"},
	"numeric(3,-2)":  {"12345", "149", "150", "-150", "99949", "99950"},
	"numeric(4,4)":   {"0.12345", "0.99995", "0.5"},
	"float4":         {"1e-40", "16777217", "3.14159", "1.17549435e-38", "-1.5e-7", "100000", "999999.94", "1e-38", "33554432", "0", "-0", "1", "1.5", "0.1", "3.4028235e38", "3.5e38", "1e-45", "1e-50", "1e6", "123456", "1234567", "0.0001", "0.00001", "NaN", "infinity", "-Infinity", "inf", " 2.5 ", "1e", "abc", "0x10"},
	"float8":         {"1e-310", "0.30000000000000004", "1e22", "-123.456e-300", "2.2250738585072014e-308", "1e-5", "123.456", ".5", "5.", "-.5e1", "1e+", "Infinit", "NaNx", "0", "-0", "1", "0.1", "1e15", "1e14", "123456789012345", "1234567890123456", "0.0001", "0.00001", "1e-400", "1e400", "5e-324", "1.7976931348623157e308", "NaN", "-inf", "+Infinity", "1.000000000000000000001", " 3 ", "1,5", ""},
	"bool":           {"t", "true", "TRUE", "tr", "y", "yes", "on", "1", "f", "false", "n", "no", "off", "of", "0", " t ", "o", "2", "", "truex"},
	"date":           {"2024-02-29 BC", "2025-02-29 BC", "2024-01-31 BC", "20240131", "2024/01/31", "Jan 31 2024", " 2024-01-31 ", "2024-01-32", "2024-01-31", "2024-02-29", "2023-02-29", "2024-13-01", "2024-1-5", "infinity", "-infinity", "epoch", "0044-03-15 BC", "10000-01-01", "4714-11-24 BC", "4714-11-23 BC", "2024-01-31 23:59:59", "2024-01-31T10:00:00+05", "5874897-12-31", "0000-01-01", "garbage", ""},
	"timestamp":      {"2024-01-31 12:34", "2024-01-31 12:34:5", "2024-01-31  12:34:56", "2024-01-31T12:34", "2024-01-31 12:34:56.", "2024-01-31 1:02:03", "2024-01-31 12:34:56 BC", "2024-01-31 12:34:56Z", "2024-01-31 12:34:56 America/New_York", "2024-01-31 12:34:56.999999999", "2024-01-31 12:34:56", "2024-01-31T12:34:56.123456", "2024-01-31 12:34:56.1234565", "2024-01-31 12:34:56.000", "2024-01-31", "2024-01-31 24:00:00", "2024-01-31 23:59:60", "2024-01-31 12:00:00+05", "infinity", "-infinity", "epoch", "1999-12-31 23:59:59.999999", "0044-03-15 12:00:00 BC", "294276-12-31 23:59:59", "294277-01-01 00:00:00", "2024-01-31 25:00:00", "2024-01-31 12:60:00"},
	"timestamp(0)":   {"2024-01-31 12:34:56.5", "2024-01-31 12:34:56.4", "1969-12-31 23:59:59.5"},
	"timestamp(3)":   {"2024-01-31 12:34:56.1235", "1999-12-31 23:59:59.9995"},
	"timestamptz":    {"2024-01-31 12:34:56+05:30:15", "2024-01-31 12:34:56.5-00:30", "2024-01-31 00:00:00+14", "1999-12-31 23:00:00-01", "2024-01-31 12:34:56+16", "2024-01-31 12:34:56 +0530", "2024-01-31 12:34:56 gmt", "2024-01-31 12:34:56+5", "2024-01-31 12:34:56+05:3", "294276-12-31 23:59:59+00", "294276-12-31 23:59:59-01", "4714-11-24 00:00:00+00 BC", "4714-11-24 00:00:00+01 BC", "2024-01-31 12:34:56+00", "2024-01-31 12:34:56Z", "2024-01-31 12:34:56+05:30", "2024-01-31 12:34:56-0800", "2024-01-31 12:34:56 -08", "2024-01-31 12:34:56", "2024-01-31T12:34:56.5z", "2024-01-31 12:34:56 UTC", "2024-01-31 12:34:56+15:59", "infinity", "epoch", "0044-03-15 12:00:00+00 BC"},
	"timestamptz(2)": {"2024-01-31 12:34:56.125+00", "2024-01-31 12:34:56.999+01"},
	"uuid":           {"A0EEBC99-9C0B4EF8-BB6D6BB9-BD380A11", "", "{}", "A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11", "{a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11}", "a0eebc999c0b4ef8bb6d6bb9bd380a11", "a0ee-bc99-9c0b-4ef8-bb6d-6bb9-bd38-0a11", "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a1", "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11-", " a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11", "{a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11", "g0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"},
	"json":           {strings.Repeat(`{"a":[`, 5000) + strings.Repeat("]}", 5000), "  {}  ", "[1, 2] x", `"\x"`, "1e", "-01", "truex", "[1e400]", `{"a":"\u00zz"}`, "[[[[[[[[[[1]]]]]]]]]]", `{"b":1, "a" : [1,2 ,3]}`, ` [1] `, `"x"`, `1e5`, `null`, `{"a":1,"a":2}`, `"\u00e9\n"`, `"\u0000"`, `{"a":}`, `[1,]`, `01`, `-`, `1.`, `tru`, `"\ud83d\ude00"`, `"\ud83d"`, ``, `{"a" 1}`, "\"tab\tinside\""},
	"jsonb":          {strings.Repeat("[", 10000) + strings.Repeat("]", 10000), `[1e-16384]`, `[0.1e-16383]`, `{"a":"\ud800"}`, `{"a":1e400}`, "[1e400]", "[1e-5]", "-0.0", ` {"a" : {"b":1}, "a":2} `, `"\u001f\u007f"`, `"\u00E9"`, `{"b":1,"aa":2,"a":3,"ab":4}`, `"a\"b\\c/d"`, `["\ud83d\ude00"]`, `[1,]`, "nul", "[truex]", "1.0e+2", `{"":1}`, `{"b":1, "a" : [1,2 ,3]}`, `{"aa":1,"b":2,"a":3}`, `{"a":1,"a":2}`, `[1.50, 1e2, -0, 0.0, 1E-2]`, `"\u00e9\n\u0001\/"`, `"\u0000"`, `{"nested":{"z":null,"y":[true,false]}}`, `[]`, `{}`, ` 3 `, `"\ud83d\ude00"`, `{"é":1,"e":2}`, `"\ud83d"`, `"\ude00"`, `"\ud83dx"`},
	"bytea":          {"\xff", "a\x00", "é", "\\x DE AD", "\\X00", "\\\\x00", "\\xa b", `\x`, `\xDEADbeef`, `\xde ad`, `\xdea`, `\xzz`, `abc`, `a\\b`, `\001\377`, `\8`, `\`, ``, "\\x0a\n0b"},
}

func TestAgainstServer(t *testing.T) {
	c := pgtest.New(t, pgtest.Opts{})
	if c == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	conn, err := pgconn.Connect(ctx, c.SuperDSN())
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	defer conn.Close(context.Background())
	if err := conn.Exec(ctx, "SET TimeZone = 'UTC'; SET DateStyle = 'ISO, MDY'; SET extra_float_digits = 1").Close(); err != nil {
		t.Fatalf("set: %v", err)
	}
	t.Run("cases", func(t *testing.T) { checkCases(t, ctx, conn) })
	t.Run("random", func(t *testing.T) { checkRandom(t, ctx, conn) })
}

// checkCases compares serverCases, one statement each.
func checkCases(t *testing.T, ctx context.Context, conn *pgconn.PgConn) {
	n := 0
	for typ, inputs := range serverCases {
		pt := MustParseType(typ)
		table := fmt.Sprintf("t%d", n)
		n++
		if err := conn.Exec(ctx, fmt.Sprintf("CREATE TEMP TABLE %s (v %s)", table, typ)).Close(); err != nil {
			t.Fatalf("create %s: %v", typ, err)
		}
		sql := fmt.Sprintf("INSERT INTO %s VALUES ($1) RETURNING v, v", table)
		for _, in := range inputs {
			res := conn.ExecParams(ctx, sql, [][]byte{[]byte(in)}, nil, []int16{0}, []int16{0, 1}).Read()
			got, gerr := Canonical(pt, TextFormat, []byte(in))
			if res.Err != nil {
				var pgErr *pgconn.PgError
				if !errors.As(res.Err, &pgErr) {
					t.Fatalf("%s %q: %v", typ, in, res.Err)
				}
				if gerr == nil {
					t.Errorf("%s %q: server rejects (%s %s), Canonical accepts %q", typ, in, pgErr.Code, pgErr.Message, got)
					continue
				}
				var e *Error
				if !errors.As(gerr, &e) || e.Code() != pgErr.Code {
					t.Errorf("%s %q: server SQLSTATE %s (%s), Canonical %v", typ, in, pgErr.Code, pgErr.Message, gerr)
				}
				continue
			}
			want, wantBin := res.Rows[0][0], res.Rows[0][1]
			if gerr != nil {
				if !knownRefusal(pt, in) {
					t.Errorf("%s %q: server gives %q, Canonical refuses: %v", typ, in, want, gerr)
				}
				continue
			}
			if !bytes.Equal(got, want) {
				t.Errorf("%s %q: Canonical %q, server %q", typ, in, got, want)
				continue
			}
			bin, err := Output(pt, BinaryFormat, got, nil)
			if err != nil || !bytes.Equal(bin, wantBin) {
				t.Errorf("%s %q: Output binary %x (%v), server %x", typ, in, bin, err, wantBin)
			}
			fromBin, err := Canonical(pt, BinaryFormat, wantBin)
			if err != nil || !bytes.Equal(fromBin, want) {
				t.Errorf("%s %q: Canonical(binary from server) %q (%v), want %q", typ, in, fromBin, err, want)
			}
		}
	}
}

// refusedDatetime are date/time spellings PostgreSQL accepts that
// Canonical refuses on purpose (only ISO 8601 forms; see Canonical).
var refusedDatetime = map[string]bool{
	"20240131": true, "2024/01/31": true, "Jan 31 2024": true,
	"2024-01-31 12:34:56 America/New_York": true,
}

// knownRefusal lists inputs PostgreSQL accepts that Canonical refuses on
// purpose (documented on Canonical).
func knownRefusal(t Type, in string) bool {
	switch t.Kind {
	case KindDate, KindTimestamp, KindTimestamptz:
		return refusedDatetime[in]
	case KindFloat4, KindFloat8:
		return strings.Contains(strings.ToLower(in), "0x") // strtod's hexadecimal floats
	}
	return false
}
