package pgvalue

import (
	"encoding/binary"
	"math"
	"strconv"
)

// Binary formats are PostgreSQL's send/recv formats. Fixed-width types are
// read directly (big-endian integers and IEEE floats, days or microseconds
// since 2000-01-01, 16 raw uuid bytes); numeric is converted digit group
// by digit group. pgtype is not used here: a pgtype.Map is not safe for
// concurrent use and plans per call, and pgtype.Numeric loses the display
// scale of zero ("0.00" reads back as "0"), which would change the
// canonical plaintext. The tests check every binary form against the
// server's bytes and against a pgtype.Map.

func errBinary(t Type) error {
	return errCode(CodeInvalidBinary, "incorrect binary data format for type "+t.sqlName())
}

func appendCanonicalBinary(dst []byte, t Type, src []byte) ([]byte, error) {
	fixed := func(n int) error {
		if len(src) != n {
			return errBinary(t)
		}
		return nil
	}
	switch t.Kind {
	case KindText, KindVarchar, KindJSON, KindJSONB:
		if t.Kind == KindJSONB {
			if len(src) == 0 || src[0] != 1 {
				return dst, errCode(CodeInvalidBinary, "unsupported jsonb version number")
			}
			src = src[1:]
		}
		if err := checkText(src); err != nil { // textrecv and json_recv check too
			return dst, err
		}
		if t.Kind == KindText || t.Kind == KindVarchar {
			return appendText(dst, t, src)
		}
		return appendJSONText(dst, t, src)
	case KindBytea:
		return appendByteaHex(dst, src), nil
	case KindInt2:
		if err := fixed(2); err != nil {
			return dst, err
		}
		return strconv.AppendInt(dst, int64(int16(binary.BigEndian.Uint16(src))), 10), nil
	case KindInt4:
		if err := fixed(4); err != nil {
			return dst, err
		}
		return strconv.AppendInt(dst, int64(int32(binary.BigEndian.Uint32(src))), 10), nil
	case KindInt8:
		if err := fixed(8); err != nil {
			return dst, err
		}
		return strconv.AppendInt(dst, int64(binary.BigEndian.Uint64(src)), 10), nil
	case KindFloat4:
		if err := fixed(4); err != nil {
			return dst, err
		}
		return appendFloat(dst, float64(math.Float32frombits(binary.BigEndian.Uint32(src))), 32), nil
	case KindFloat8:
		if err := fixed(8); err != nil {
			return dst, err
		}
		return appendFloat(dst, math.Float64frombits(binary.BigEndian.Uint64(src)), 64), nil
	case KindBool:
		if err := fixed(1); err != nil {
			return dst, err
		}
		if src[0] != 0 {
			return append(dst, 't'), nil
		}
		return append(dst, 'f'), nil
	case KindUUID:
		if err := fixed(16); err != nil {
			return dst, err
		}
		return appendUUID(dst, [16]byte(src)), nil
	case KindDate:
		if err := fixed(4); err != nil {
			return dst, err
		}
		switch days := int32(binary.BigEndian.Uint32(src)); {
		case days == dateInfinity:
			return appendDatetime(dst, t, 0, 1)
		case days == dateNegInfinity:
			return appendDatetime(dst, t, 0, -1)
		case days < dateMinDays || days >= dateEndDays:
			return dst, errTimestampRange(t)
		default:
			return appendDatetime(dst, t, int64(days), 0)
		}
	case KindTimestamp, KindTimestamptz:
		if err := fixed(8); err != nil {
			return dst, err
		}
		switch us := int64(binary.BigEndian.Uint64(src)); us {
		case timestampInfinity:
			return appendDatetime(dst, t, 0, 1)
		case timestampNegInf:
			return appendDatetime(dst, t, 0, -1)
		default:
			return appendDatetime(dst, t, us, 0)
		}
	case KindNumeric:
		var buf [64]byte
		d, err := parseNumericBinary(t, src, buf[:0])
		if err != nil {
			return dst, err
		}
		return finishNumeric(dst, t, &d)
	}
	return dst, errCode(CodeFeature, "unsupported type "+t.Kind.String())
}

// Output appends a value of type t, given as its canonical plaintext (as
// produced by Canonical and recovered by decryption), to dst in the wire
// format the client asked for: format 0 appends the text unchanged, format
// 1 appends PostgreSQL's binary (send) form of the logical type. dst is
// returned with the value appended; plaintext is not retained. An empty
// value appended to a nil dst gives a nil slice: the caller writes length
// 0, not -1 (NULL never reaches this package).
//
// plaintext is trusted to be canonical (it was authenticated by the
// envelope); it is still parsed strictly, and a malformed one is an error.
func Output(t Type, format int16, plaintext []byte, dst []byte) ([]byte, error) {
	switch format {
	case TextFormat:
		return append(dst, plaintext...), nil
	case BinaryFormat:
	default:
		return dst, errCode(CodeInvalidParameter, "unsupported format code "+strconv.Itoa(int(format)))
	}
	out, err := appendBinary(dst, t, plaintext)
	if err != nil {
		return dst, err
	}
	return out, nil
}

func appendBinary(dst []byte, t Type, p []byte) ([]byte, error) {
	switch t.Kind {
	case KindText, KindVarchar, KindJSON:
		return append(dst, p...), nil
	case KindJSONB:
		return append(append(dst, 1), p...), nil
	case KindBytea:
		if len(p) < 2 || p[0] != '\\' || p[1] != 'x' || len(p)%2 != 0 {
			return dst, errSyntax(t)
		}
		for i := 2; i < len(p); i += 2 {
			hi, ok1 := unhex(p[i])
			lo, ok2 := unhex(p[i+1])
			if !ok1 || !ok2 {
				return dst, errSyntax(t)
			}
			dst = append(dst, hi<<4|lo)
		}
		return dst, nil
	case KindInt2, KindInt4, KindInt8:
		bits := 8 * int(t.Size())
		v, err := strconv.ParseInt(string(p), 10, bits)
		if err != nil {
			return dst, errSyntax(t)
		}
		switch bits {
		case 16:
			return binary.BigEndian.AppendUint16(dst, uint16(v)), nil
		case 32:
			return binary.BigEndian.AppendUint32(dst, uint32(v)), nil
		}
		return binary.BigEndian.AppendUint64(dst, uint64(v)), nil
	case KindFloat4:
		f, err := parseFloatText(t, p, 32)
		if err != nil {
			return dst, err
		}
		if math.IsNaN(f) {
			return binary.BigEndian.AppendUint32(dst, nan32), nil
		}
		return binary.BigEndian.AppendUint32(dst, math.Float32bits(float32(f))), nil
	case KindFloat8:
		f, err := parseFloatText(t, p, 64)
		if err != nil {
			return dst, err
		}
		if math.IsNaN(f) {
			return binary.BigEndian.AppendUint64(dst, nan64), nil
		}
		return binary.BigEndian.AppendUint64(dst, math.Float64bits(f)), nil
	case KindBool:
		switch string(p) {
		case "t":
			return append(dst, 1), nil
		case "f":
			return append(dst, 0), nil
		}
		return dst, errSyntax(t)
	case KindUUID:
		u, err := parseUUID(t, p)
		if err != nil {
			return dst, err
		}
		return append(dst, u[:]...), nil
	case KindDate, KindTimestamp, KindTimestamptz:
		v, special, err := parseDatetime(t, p)
		if err != nil {
			return dst, err
		}
		if t.Kind == KindDate {
			switch special {
			case 1:
				v = dateInfinity
			case -1:
				v = dateNegInfinity
			}
			return binary.BigEndian.AppendUint32(dst, uint32(int32(v))), nil
		}
		switch special {
		case 1:
			v = timestampInfinity
		case -1:
			v = timestampNegInf
		default:
			if v, err = adjustTimestamp(t, v); err != nil {
				return dst, err
			}
		}
		return binary.BigEndian.AppendUint64(dst, uint64(v)), nil
	case KindNumeric:
		var buf [40]byte
		d, err := parseDecimal(t, p, buf[:0])
		if err != nil {
			return dst, err
		}
		return appendNumericBinary(dst, &d), nil
	}
	return dst, errCode(CodeFeature, "unsupported type "+t.Kind.String())
}
