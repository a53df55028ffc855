package config

import (
	"strings"
	"testing"
	"time"
)

func TestParseType(t *testing.T) {
	ok := map[string]string{
		"text":                           "text",
		"TEXT":                           "text",
		"varchar":                        "varchar",
		"varchar(40)":                    "varchar(40)",
		"Character Varying ( 40 )":       "varchar(40)",
		"int2":                           "int2",
		"smallint":                       "int2",
		"int":                            "int4",
		"integer":                        "int4",
		"int4":                           "int4",
		"bigint":                         "int8",
		"int8":                           "int8",
		"numeric":                        "numeric",
		"decimal(10)":                    "numeric(10)",
		"numeric(12, 2)":                 "numeric(12,2)",
		"numeric(5,-2)":                  "numeric(5,-2)",
		"real":                           "float4",
		"float4":                         "float4",
		"double  precision":              "float8",
		"float8":                         "float8",
		"float":                          "float8",
		"float(24)":                      "float4",
		"float(25)":                      "float8",
		"bool":                           "bool",
		"boolean":                        "bool",
		"date":                           "date",
		"timestamp":                      "timestamp",
		"timestamp(0)":                   "timestamp(0)",
		"timestamp without time zone":    "timestamp",
		"timestamp(6) without time zone": "timestamp(6)",
		"timestamptz":                    "timestamptz",
		"timestamptz(3)":                 "timestamptz(3)",
		"timestamp with time zone":       "timestamptz",
		"timestamp(3) with time zone":    "timestamptz(3)",
		"uuid":                           "uuid",
		"json":                           "json",
		"jsonb":                          "jsonb",
		"bytea":                          "bytea",
	}
	for in, want := range ok {
		got, err := ParseType(in)
		if err != nil || got != want {
			t.Errorf("ParseType(%q) = %q, %v; want %q", in, got, err, want)
		}
		// Canonical names are fixed points.
		if again, err := ParseType(got); err != nil || again != got {
			t.Errorf("ParseType(%q) = %q, %v; canonical names must parse to themselves", got, again, err)
		}
	}
	bad := map[string]string{
		"":                   "empty type",
		"varchar2":           "unsupported type",
		"text[]":             "arrays are not supported",
		"_int4":              "arrays are not supported",
		"money":              "unsupported type",
		"char(3)":            "unsupported type",
		"varchar(0)":         "length must be",
		"varchar(10485761)":  "length must be",
		"varchar(1,2)":       "length must be",
		"varchar(x)":         `modifier "x" is not an integer`,
		"varchar(10":         "missing ')'",
		"numeric(0)":         "precision must be in 1..1000",
		"numeric(1001,2)":    "precision must be in 1..1000",
		"numeric(10,1001)":   "scale must be in",
		"numeric(1,2,3)":     "precision must be",
		"timestamp(7)":       "precision must be one number in 0..6",
		"timestamptz(-1)":    "precision must be one number in 0..6",
		"float(54)":          "precision must be one number in 1..53",
		"uuid(4)":            "uuid takes no modifier",
		"int8(8)":            "int8 takes no modifier",
		"timestamp(3) zone":  "unsupported type",
		"double":             "unsupported type",
		"timestamp with tz":  "unsupported type",
		"jsonb(1)":           "takes no modifier",
		"bool()":             "takes no modifier",
		"numeric()":          "not an integer",
		"character(varying)": "unsupported type",
	}
	for in, want := range bad {
		got, err := ParseType(in)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("ParseType(%q) = %q, %v; want error containing %q", in, got, err, want)
		}
	}
}

func TestParseQualified(t *testing.T) {
	tests := []struct {
		in    string
		max   int
		want  []string
		error string
	}{
		{"customers", 2, []string{"customers"}, ""},
		{"Public.Customers", 2, []string{"public", "customers"}, ""},
		{`"Public"."My Table"`, 2, []string{"Public", "My Table"}, ""},
		{`"a""b"`, 1, []string{`a"b`}, ""},
		{"t$1", 1, []string{"t$1"}, ""},
		{"a.b.c", 2, nil, `give "schema.table"`},
		{"a.b", 1, nil, "bare column name"},
		{"1abc", 1, nil, "not a valid SQL name"},
		{"a b", 1, nil, "not a valid SQL name"},
		{"a.", 2, nil, "not a valid SQL name"},
		{`"abc`, 1, nil, "unterminated"},
		{`""`, 1, nil, "empty quoted identifier"},
		{strings.Repeat("x", 64), 1, nil, "longer than 63 bytes"},
	}
	for _, tc := range tests {
		got, err := parseQualified(tc.in, tc.max)
		if tc.error != "" {
			if err == nil || !strings.Contains(err.Error(), tc.error) {
				t.Errorf("parseQualified(%q) = %q, %v; want error %q", tc.in, got, err, tc.error)
			}
			continue
		}
		if err != nil || strings.Join(got, "|") != strings.Join(tc.want, "|") {
			t.Errorf("parseQualified(%q) = %q, %v; want %q", tc.in, got, err, tc.want)
		}
	}
}

func TestParseDuration(t *testing.T) {
	ok := map[string]time.Duration{
		"30s":     30 * time.Second,
		"250ms":   250 * time.Millisecond,
		"1h30m":   90 * time.Minute,
		"90d":     90 * 24 * time.Hour,
		"1d12h":   36 * time.Hour,
		"1.5d":    36 * time.Hour,
		" 2d ":    48 * time.Hour,
		"0d1s":    time.Second,
		"100000d": 100000 * 24 * time.Hour,
	}
	for in, want := range ok {
		if got, err := parseDuration(in); err != nil || got != want {
			t.Errorf("parseDuration(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	bad := map[string]string{
		"":        "invalid duration",
		"30":      "invalid duration",
		"d":       "invalid duration",
		"-5s":     "invalid duration",
		"-1d":     "invalid duration",
		"+1d":     "invalid duration",
		"1e3d":    "invalid duration",
		"infd":    "invalid duration",
		"1d-1h":   "invalid duration",
		"5 days":  "invalid duration",
		"0s":      "greater than zero",
		"0d":      "greater than zero",
		"200000d": "too long",
		"1w":      "invalid duration",
		"30 s":    "invalid duration",
		"1d1d":    "invalid duration",
	}
	for in, want := range bad {
		if got, err := parseDuration(in); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("parseDuration(%q) = %v, %v; want error %q", in, got, err, want)
		}
	}
}

func TestParseSize(t *testing.T) {
	ok := map[string]int64{
		"1048576": 1 << 20, "512KiB": 512 << 10, "64MiB": 64 << 20, "1GiB": 1 << 30,
		"64kB": 64000, "10MB": 10e6, "1GB": 1e9, "100B": 100, "2 MiB": 2 << 20,
	}
	for in, want := range ok {
		if got, err := parseSize(in); err != nil || got != want {
			t.Errorf("parseSize(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"", "MiB", "-1", "1.5MiB", "1TiB", "1 G", "9223372036854775807GiB"} {
		if got, err := parseSize(in); err == nil {
			t.Errorf("parseSize(%q) = %d, want an error", in, got)
		}
	}
}
