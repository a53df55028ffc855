package pgvalue

// Mask returns the placeholder shown instead of a value to a role that is
// not allowed plaintext when on_denied = "mask". It is a canonical
// plaintext of t (so Output can render it in either format) that no real
// value is likely to be mistaken for:
//
//	text, varchar(n)          "****" (cut to n characters)
//	int2/4/8, float4/8        "0"
//	numeric(p,s)              "0" with s fraction digits ("0.00")
//	bool                      "f"
//	date                      "1970-01-01"
//	timestamp / timestamptz   "1970-01-01 00:00:00" / "…+00"
//	uuid                      "00000000-0000-0000-0000-000000000000"
//	json, jsonb               "{}"
//	bytea                     "\x" (empty)
//
// The mask does not depend on the value: not its length, not its sign.
// The result is newly allocated.
func Mask(t Type) []byte { return AppendMask(nil, t) }

// AppendMask appends Mask(t) to dst.
func AppendMask(dst []byte, t Type) []byte {
	switch t.Kind {
	case KindText, KindVarchar:
		n := 4
		if t.Kind == KindVarchar && t.Len > 0 && int(t.Len) < n {
			n = int(t.Len)
		}
		return append(dst, "****"[:n]...)
	case KindInt2, KindInt4, KindInt8, KindFloat4, KindFloat8:
		return append(dst, '0')
	case KindNumeric:
		dst = append(dst, '0')
		if t.HasPrecision && t.Scale > 0 {
			dst = append(dst, '.')
			for i := int32(0); i < t.Scale; i++ {
				dst = append(dst, '0')
			}
		}
		return dst
	case KindBool:
		return append(dst, 'f')
	case KindDate:
		return append(dst, "1970-01-01"...)
	case KindTimestamp:
		return append(dst, "1970-01-01 00:00:00"...)
	case KindTimestamptz:
		return append(dst, "1970-01-01 00:00:00+00"...)
	case KindUUID:
		return append(dst, "00000000-0000-0000-0000-000000000000"...)
	case KindJSON, KindJSONB:
		return append(dst, "{}"...)
	case KindBytea:
		return append(dst, '\\', 'x')
	}
	return dst
}
