package pgvalue

import (
	"fmt"
	"strconv"
	"strings"
)

// Kind is a supported logical type without its modifier. The zero value is
// invalid.
type Kind uint8

// Kinds. The numbers are not persisted anywhere but are written out anyway.
const (
	KindInvalid     Kind = 0
	KindText        Kind = 1
	KindVarchar     Kind = 2
	KindInt2        Kind = 3
	KindInt4        Kind = 4
	KindInt8        Kind = 5
	KindNumeric     Kind = 6
	KindFloat4      Kind = 7
	KindFloat8      Kind = 8
	KindBool        Kind = 9
	KindDate        Kind = 10
	KindTimestamp   Kind = 11
	KindTimestamptz Kind = 12
	KindUUID        Kind = 13
	KindJSON        Kind = 14
	KindJSONB       Kind = 15
	KindBytea       Kind = 16
)

type kindInfo struct {
	name string // canonical name (config.ParseType spelling)
	sql  string // name PostgreSQL uses in error messages
	oid  uint32
	size int16 // typlen: -1 varlena
}

var kinds = [...]kindInfo{
	KindText:        {"text", "text", 25, -1},
	KindVarchar:     {"varchar", "character varying", 1043, -1},
	KindInt2:        {"int2", "smallint", 21, 2},
	KindInt4:        {"int4", "integer", 23, 4},
	KindInt8:        {"int8", "bigint", 20, 8},
	KindNumeric:     {"numeric", "numeric", 1700, -1},
	KindFloat4:      {"float4", "real", 700, 4},
	KindFloat8:      {"float8", "double precision", 701, 8},
	KindBool:        {"bool", "boolean", 16, 1},
	KindDate:        {"date", "date", 1082, 4},
	KindTimestamp:   {"timestamp", "timestamp without time zone", 1114, 8},
	KindTimestamptz: {"timestamptz", "timestamp with time zone", 1184, 8},
	KindUUID:        {"uuid", "uuid", 2950, 16},
	KindJSON:        {"json", "json", 114, -1},
	KindJSONB:       {"jsonb", "jsonb", 3802, -1},
	KindBytea:       {"bytea", "bytea", 17, -1},
}

func (k Kind) valid() bool { return k > KindInvalid && int(k) < len(kinds) }

// String returns the canonical type name ("int4"), or "invalid".
func (k Kind) String() string {
	if !k.valid() {
		return "invalid"
	}
	return kinds[k].name
}

// Type is a logical type with its modifier, as the application sees it.
// It is a small comparable value, safe to copy and to share.
type Type struct {
	Kind Kind
	// Len is n of varchar(n); 0 means unlimited.
	Len int32
	// Precision and Scale of numeric(p,s); HasPrecision false means plain
	// numeric. numeric(p) has Scale 0. Scale may be negative (PostgreSQL 15).
	Precision, Scale int32
	HasPrecision     bool
	// FracDigits is p of timestamp(p)/timestamptz(p), 0..6, when
	// HasFracDigits; otherwise microseconds are kept.
	FracDigits    int32
	HasFracDigits bool
}

// ParseType parses a canonical type name as config.ParseType produces it
// ("int8", "varchar(40)", "numeric(12,2)", "timestamptz(3)"). Aliases
// ("integer") and spaces are not accepted: normalise with config first.
func ParseType(s string) (Type, error) {
	name, mods, hasMods := s, "", false
	if i := strings.IndexByte(s, '('); i >= 0 {
		if !strings.HasSuffix(s, ")") {
			return Type{}, fmt.Errorf("pgvalue: type %q: missing ')'", s)
		}
		name, mods, hasMods = s[:i], s[i+1:len(s)-1], true
	}
	var t Type
	for k := KindText; k.valid(); k++ {
		if kinds[k].name == name {
			t.Kind = k
		}
	}
	if t.Kind == KindInvalid {
		return Type{}, fmt.Errorf("pgvalue: unsupported type %q", s)
	}
	if !hasMods {
		return t, nil
	}
	var nums []int64
	for _, p := range strings.Split(mods, ",") {
		n, err := strconv.ParseInt(p, 10, 32)
		if err != nil {
			return Type{}, fmt.Errorf("pgvalue: type %q: bad modifier", s)
		}
		nums = append(nums, n)
	}
	switch {
	case t.Kind == KindVarchar && len(nums) == 1 && nums[0] >= 1 && nums[0] <= 10485760:
		t.Len = int32(nums[0])
	case t.Kind == KindNumeric && len(nums) <= 2 && nums[0] >= 1 && nums[0] <= 1000:
		t.HasPrecision, t.Precision = true, int32(nums[0])
		if len(nums) == 2 {
			if nums[1] < -1000 || nums[1] > 1000 {
				return Type{}, fmt.Errorf("pgvalue: type %q: scale out of range", s)
			}
			t.Scale = int32(nums[1])
		}
	case (t.Kind == KindTimestamp || t.Kind == KindTimestamptz) && len(nums) == 1 && nums[0] >= 0 && nums[0] <= 6:
		t.HasFracDigits, t.FracDigits = true, int32(nums[0])
	default:
		return Type{}, fmt.Errorf("pgvalue: type %q: invalid modifier", s)
	}
	return t, nil
}

// MustParseType is ParseType for constants in tests and tables; it panics
// on error.
func MustParseType(s string) Type {
	t, err := ParseType(s)
	if err != nil {
		panic(err)
	}
	return t
}

// String returns the canonical name with its modifier, the inverse of
// ParseType.
func (t Type) String() string {
	switch {
	case t.Kind == KindVarchar && t.Len > 0:
		return fmt.Sprintf("varchar(%d)", t.Len)
	case t.Kind == KindNumeric && t.HasPrecision:
		return fmt.Sprintf("numeric(%d,%d)", t.Precision, t.Scale)
	case (t.Kind == KindTimestamp || t.Kind == KindTimestamptz) && t.HasFracDigits:
		return fmt.Sprintf("%s(%d)", t.Kind, t.FracDigits)
	}
	return t.Kind.String()
}

// OID is the PostgreSQL type OID (pg_type.oid) of the logical type.
func (t Type) OID() uint32 {
	if !t.Kind.valid() {
		return 0
	}
	return kinds[t.Kind].oid
}

// Size is the data type size (pg_type.typlen) as RowDescription reports it:
// -1 for variable-length types.
func (t Type) Size() int16 {
	if !t.Kind.valid() {
		return 0
	}
	return kinds[t.Kind].size
}

// Modifier is the type modifier (atttypmod) as RowDescription and
// ParameterDescription report it: varchar(n) n+4, numeric(p,s)
// ((p<<16)|s)+4 with s as a 16-bit field, timestamp(p) p, otherwise -1.
func (t Type) Modifier() int32 {
	switch {
	case t.Kind == KindVarchar && t.Len > 0:
		return t.Len + 4
	case t.Kind == KindNumeric && t.HasPrecision:
		return (t.Precision<<16 | t.Scale&0x7ff) + 4
	case (t.Kind == KindTimestamp || t.Kind == KindTimestamptz) && t.HasFracDigits:
		return t.FracDigits
	}
	return -1
}

func (t Type) sqlName() string {
	if !t.Kind.valid() {
		return "invalid"
	}
	return kinds[t.Kind].sql
}
