package pgvalue

import (
	"bytes"
	"math"
	"math/big"
	"reflect"
	"testing"

	"github.com/jackc/pgx/v5/pgtype"
)

// roundTripInputs gathers every accepted input of the test tables, per type.
func roundTripInputs() map[string][]string {
	in := map[string][]string{}
	for typ, list := range serverCases {
		in[typ] = append(in[typ], list...)
	}
	for _, c := range canonCases {
		in[c.typ] = append(in[c.typ], c.in)
	}
	return in
}

// TestRoundTrip: client text → Canonical → Output text and binary →
// decoded by pgtype (an independent implementation) to equal values; and
// pgtype's binary encoding of that value → Canonical(binary) → the same
// canonical text.
func TestRoundTrip(t *testing.T) {
	m := pgtype.NewMap()
	seen := map[Kind]int{}
	for typ, inputs := range roundTripInputs() {
		pt := MustParseType(typ)
		oid := pt.OID()
		for _, in := range inputs {
			canon, err := Canonical(pt, TextFormat, []byte(in))
			if err != nil {
				continue
			}
			seen[pt.Kind]++
			text, err := Output(pt, TextFormat, canon, []byte{}) // non-nil: empty is not NULL
			if err != nil || !bytes.Equal(text, canon) {
				t.Errorf("%s %q: Output text %q, %v", typ, in, text, err)
				continue
			}
			bin, err := Output(pt, BinaryFormat, canon, []byte{})
			if err != nil {
				t.Errorf("%s %q: Output binary: %v", typ, in, err)
				continue
			}
			fromText, fromBin := newTarget(pt.Kind), newTarget(pt.Kind)
			if err := m.Scan(oid, TextFormat, text, fromText); err != nil {
				t.Errorf("%s %q: pgtype cannot decode text %q: %v", typ, in, text, err)
				continue
			}
			if err := m.Scan(oid, BinaryFormat, bin, fromBin); err != nil {
				t.Errorf("%s %q: pgtype cannot decode binary %x: %v", typ, in, bin, err)
				continue
			}
			fromText, fromBin = reflect.ValueOf(fromText).Elem().Interface(), reflect.ValueOf(fromBin).Elem().Interface()
			if !sameValue(fromText, fromBin) {
				t.Errorf("%s %q: text decodes to %#v, binary to %#v", typ, in, fromText, fromBin)
			}
			// Binary input, as a pgx client would send it.
			if pt.Kind == KindNumeric && isZeroNumeric(fromText) {
				continue // pgtype drops the display scale of zero
			}
			clientBin, err := m.Encode(oid, BinaryFormat, fromText, nil)
			if err != nil {
				t.Errorf("%s %q: pgtype cannot encode %#v: %v", typ, in, fromText, err)
				continue
			}
			back, err := Canonical(pt, BinaryFormat, clientBin)
			if err != nil || !bytes.Equal(back, canon) {
				t.Errorf("%s %q: Canonical(binary %x) = %q, %v; want %q", typ, in, clientBin, back, err, canon)
			}
		}
	}
	for k := KindText; k.valid(); k++ {
		if seen[k] < 3 {
			t.Errorf("only %d accepted inputs for %v", seen[k], k)
		}
	}
}

// newTarget returns a pointer to the Go type a pgx client would scan into.
func newTarget(k Kind) any {
	switch k {
	case KindText, KindVarchar, KindJSON, KindJSONB:
		return new(string)
	case KindBytea:
		return new([]byte)
	case KindInt2:
		return new(int16)
	case KindInt4:
		return new(int32)
	case KindInt8:
		return new(int64)
	case KindFloat4:
		return new(float32)
	case KindFloat8:
		return new(float64)
	case KindBool:
		return new(bool)
	case KindDate:
		return new(pgtype.Date)
	case KindTimestamp:
		return new(pgtype.Timestamp)
	case KindTimestamptz:
		return new(pgtype.Timestamptz)
	case KindUUID:
		return new(pgtype.UUID)
	case KindNumeric:
		return new(pgtype.Numeric)
	}
	panic("no target for " + k.String())
}

func isZeroNumeric(v any) bool {
	n, ok := v.(pgtype.Numeric)
	return ok && !n.NaN && n.InfinityModifier == pgtype.Finite && n.Int != nil && n.Int.Sign() == 0
}

func sameValue(a, b any) bool {
	switch x := a.(type) {
	case pgtype.Numeric:
		y, ok := b.(pgtype.Numeric)
		if !ok || x.NaN != y.NaN || x.InfinityModifier != y.InfinityModifier || x.Valid != y.Valid {
			return false
		}
		if x.Int == nil || y.Int == nil {
			return x.Int == y.Int
		}
		return scaled(x).Cmp(scaled(y)) == 0 && (x.Exp == y.Exp || x.Int.Sign() == 0)
	case float64:
		y, ok := b.(float64)
		return ok && (x == y && math.Signbit(x) == math.Signbit(y) || math.IsNaN(x) && math.IsNaN(y))
	case float32:
		y, ok := b.(float32)
		return ok && (x == y && math.Signbit(float64(x)) == math.Signbit(float64(y)) || x != x && y != y)
	case pgtype.Timestamp:
		y, ok := b.(pgtype.Timestamp)
		return ok && x.Time.Equal(y.Time) && x.InfinityModifier == y.InfinityModifier && x.Valid == y.Valid
	case pgtype.Timestamptz:
		y, ok := b.(pgtype.Timestamptz)
		return ok && x.Time.Equal(y.Time) && x.InfinityModifier == y.InfinityModifier && x.Valid == y.Valid
	case pgtype.Date:
		y, ok := b.(pgtype.Date)
		return ok && x.Time.Equal(y.Time) && x.InfinityModifier == y.InfinityModifier && x.Valid == y.Valid
	case []byte:
		y, ok := b.([]byte)
		return ok && bytes.Equal(x, y)
	}
	return reflect.DeepEqual(a, b)
}

// scaled returns Int × 10^(Exp+1000) for comparison.
func scaled(n pgtype.Numeric) *big.Int {
	p := new(big.Int).Exp(big.NewInt(10), big.NewInt(int64(n.Exp)+1000), nil)
	return p.Mul(p, n.Int)
}
