package pgvalue

import "testing"

func TestParseType(t *testing.T) {
	tests := []struct {
		in         string
		oid        uint32
		size       int16
		mod        int32
		kind       Kind
		roundTrips bool
	}{
		{"text", 25, -1, -1, KindText, true},
		{"varchar", 1043, -1, -1, KindVarchar, true},
		{"varchar(40)", 1043, -1, 44, KindVarchar, true},
		{"int2", 21, 2, -1, KindInt2, true},
		{"int4", 23, 4, -1, KindInt4, true},
		{"int8", 20, 8, -1, KindInt8, true},
		{"numeric", 1700, -1, -1, KindNumeric, true},
		{"numeric(12,2)", 1700, -1, 12<<16 | 2 + 4, KindNumeric, true},
		{"numeric(12)", 1700, -1, 12<<16 + 4, KindNumeric, false}, // prints numeric(12,0)
		{"numeric(3,-2)", 1700, -1, 3<<16 | 0x7fe + 4, KindNumeric, true},
		{"float4", 700, 4, -1, KindFloat4, true},
		{"float8", 701, 8, -1, KindFloat8, true},
		{"bool", 16, 1, -1, KindBool, true},
		{"date", 1082, 4, -1, KindDate, true},
		{"timestamp", 1114, 8, -1, KindTimestamp, true},
		{"timestamp(0)", 1114, 8, 0, KindTimestamp, true},
		{"timestamptz", 1184, 8, -1, KindTimestamptz, true},
		{"timestamptz(3)", 1184, 8, 3, KindTimestamptz, true},
		{"uuid", 2950, 16, -1, KindUUID, true},
		{"json", 114, -1, -1, KindJSON, true},
		{"jsonb", 3802, -1, -1, KindJSONB, true},
		{"bytea", 17, -1, -1, KindBytea, true},
	}
	for _, tt := range tests {
		typ, err := ParseType(tt.in)
		if err != nil {
			t.Errorf("ParseType(%q): %v", tt.in, err)
			continue
		}
		if typ.Kind != tt.kind || typ.OID() != tt.oid || typ.Size() != tt.size || typ.Modifier() != tt.mod {
			t.Errorf("ParseType(%q) = kind %v oid %d size %d mod %d, want %v %d %d %d",
				tt.in, typ.Kind, typ.OID(), typ.Size(), typ.Modifier(), tt.kind, tt.oid, tt.size, tt.mod)
		}
		if tt.roundTrips && typ.String() != tt.in {
			t.Errorf("ParseType(%q).String() = %q", tt.in, typ.String())
		}
		if again, err := ParseType(typ.String()); err != nil || again != typ {
			t.Errorf("ParseType(%q) does not survive String(): %+v %v", tt.in, again, err)
		}
	}
	for _, bad := range []string{"", "integer", "INT4", "int4(3)", "varchar(0)", "varchar(x)", "varchar(3", "numeric(0)",
		"numeric(5,1001)", "timestamp(7)", "float", "text[]", "int4 ", "money", "numeric(1,2,3)"} {
		if typ, err := ParseType(bad); err == nil {
			t.Errorf("ParseType(%q) = %+v, want error", bad, typ)
		}
	}
}

func TestKindString(t *testing.T) {
	var zero Type
	if zero.Kind.String() != "invalid" || zero.OID() != 0 || zero.Size() != 0 {
		t.Errorf("zero Type: %q oid %d size %d", zero.Kind, zero.OID(), zero.Size())
	}
	if Kind(200).String() != "invalid" {
		t.Errorf("Kind(200) = %q", Kind(200))
	}
	seen := map[string]bool{}
	for k := KindText; k.valid(); k++ {
		if seen[k.String()] {
			t.Errorf("duplicate kind name %q", k)
		}
		seen[k.String()] = true
	}
	if len(seen) != 16 {
		t.Errorf("%d kinds, want 16", len(seen))
	}
	if _, err := Canonical(zero, TextFormat, []byte("1")); err == nil {
		t.Error("Canonical with the zero Type succeeded")
	}
}

// A Type built by hand without modifiers means "no modifier", not 0.
func TestZeroModifiers(t *testing.T) {
	for _, tt := range []struct {
		typ     Type
		in, out string
	}{
		{Type{Kind: KindTimestamp}, "2024-01-31 12:34:56.123456", "2024-01-31 12:34:56.123456"},
		{Type{Kind: KindTimestamptz}, "2024-01-31 12:34:56.123456+00", "2024-01-31 12:34:56.123456+00"},
		{Type{Kind: KindNumeric}, "1.23456", "1.23456"},
		{Type{Kind: KindVarchar}, "a long value", "a long value"},
	} {
		got, err := Canonical(tt.typ, TextFormat, []byte(tt.in))
		if err != nil || string(got) != tt.out || tt.typ.Modifier() != -1 {
			t.Errorf("%v %q: %q, %v, modifier %d", tt.typ, tt.in, got, err, tt.typ.Modifier())
		}
	}
}
