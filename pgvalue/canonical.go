package pgvalue

import (
	"strconv"
	"unicode/utf8"
)

// Wire format codes (PostgreSQL's).
const (
	TextFormat   int16 = 0
	BinaryFormat int16 = 1
)

// Canonical converts one client-supplied value (a Bind parameter in format
// 0 or 1, or a literal's text) of type t into the canonical plaintext that
// is encrypted: the text PostgreSQL's output function prints for the value
// stored in a column of type t (assignment semantics, as an INSERT or
// UPDATE through the proxy would store it), with DateStyle ISO and
// extra_float_digits 1 (the defaults). Two inputs that PostgreSQL would
// store as the same value give the same bytes. Rejections carry
// PostgreSQL's SQLSTATE for the same input (see Error). TestAgainstServer
// checks all of this against a real PostgreSQL 15.
//
// Where PostgreSQL's result depends on session state the proxy does not
// have, or its input syntax is too wide to reproduce, Canonical decides:
//   - timestamptz: a value without an explicit UTC offset is taken as UTC
//     (PostgreSQL would use the session TimeZone, which the proxy does not
//     track yet); the canonical form is always UTC with "+00". Named time
//     zones (Europe/Paris) are refused with 22007; Z, UTC and GMT are
//     accepted.
//   - date/timestamp/timestamptz accept ISO 8601 only: "2024-01-31",
//     "2024-01-31 12:34[:56[.frac]]" or with "T", optional offset (+05,
//     +05:30, +0530, -08:00:00, Z), optional " BC"/" AD", and the words
//     infinity, -infinity, epoch. Years need 4 to 8 digits. Other DateStyle
//     spellings (01/31/2024, Jan 31 2024, 20240131) and now/today/… are
//     refused with 22007: fail closed rather than guess. timestamp ignores
//     an offset and date ignores the time, as PostgreSQL does.
//   - float4/float8 print as PostgreSQL 12+ (Ryu): the shortest decimal
//     that reads back exactly and is not a tie between two floats;
//     positional for decimal exponents in [-4, 15) (float8) or [-4, 6)
//     (float4), else d.ddde±XX. -0, NaN, Infinity, -Infinity as PostgreSQL.
//     Hexadecimal input (accepted by the C library's strtod) is refused.
//   - numeric(p,s) rounds half away from zero to s digits and then checks
//     p (22003), as PostgreSQL does; plain numeric keeps the input's scale.
//   - jsonb is normalised as PostgreSQL stores it (keys sorted by length
//     then bytes, last duplicate wins, ", " and ": " separators, escapes
//     decoded, numbers printed as numeric); json keeps the input bytes.
//     Nesting deeper than 10000 levels is refused with 54001.
//   - varchar(n) behaves like assignment, not an explicit cast: excess
//     trailing spaces are cut, any other excess is 22001.
//   - text input of every type must be valid UTF-8 without NUL bytes
//     (22021), as for a UTF8 database; client_encoding is assumed UTF8.
//   - integer and float text input follows PostgreSQL 15 (no underscores,
//     no 0x prefixes).
//
// The result is newly allocated; AppendCanonical appends to a buffer.
func Canonical(t Type, format int16, src []byte) ([]byte, error) {
	return AppendCanonical(nil, t, format, src)
}

// AppendCanonical is Canonical appending to dst. On error dst is returned
// unchanged (its spare capacity may have been written).
func AppendCanonical(dst []byte, t Type, format int16, src []byte) ([]byte, error) {
	var out []byte
	var err error
	switch format {
	case TextFormat:
		out, err = appendCanonicalText(dst, t, src)
	case BinaryFormat:
		out, err = appendCanonicalBinary(dst, t, src)
	default:
		return dst, errCode(CodeInvalidParameter, "unsupported format code "+strconv.Itoa(int(format)))
	}
	if err != nil {
		return dst, err
	}
	return out, nil
}

func appendCanonicalText(dst []byte, t Type, src []byte) ([]byte, error) {
	// PostgreSQL checks the encoding of every text-format parameter before
	// the type's input function sees it.
	if err := checkText(src); err != nil {
		return dst, err
	}
	switch t.Kind {
	case KindText, KindVarchar:
		return appendText(dst, t, src)
	case KindInt2:
		return appendInt(dst, t, src, 16)
	case KindInt4:
		return appendInt(dst, t, src, 32)
	case KindInt8:
		return appendInt(dst, t, src, 64)
	case KindNumeric:
		return appendNumericText(dst, t, src)
	case KindFloat4:
		return appendFloatText(dst, t, src, 32)
	case KindFloat8:
		return appendFloatText(dst, t, src, 64)
	case KindBool:
		return appendBoolText(dst, t, src)
	case KindDate, KindTimestamp, KindTimestamptz:
		return appendDatetimeText(dst, t, src)
	case KindUUID:
		return appendUUIDText(dst, t, src)
	case KindJSON, KindJSONB:
		return appendJSONText(dst, t, src)
	case KindBytea:
		return appendByteaText(dst, t, src)
	}
	return dst, errCode(CodeFeature, "unsupported type "+t.Kind.String())
}

// checkText validates what PostgreSQL's UTF8 encoding check would.
func checkText(src []byte) error {
	for i := 0; i < len(src); {
		c := src[i]
		if c < utf8.RuneSelf {
			if c == 0 {
				return errCode(CodeBadEncoding, `invalid byte sequence for encoding "UTF8"`)
			}
			i++
			continue
		}
		r, n := utf8.DecodeRune(src[i:])
		if r == utf8.RuneError && n <= 1 {
			return errCode(CodeBadEncoding, `invalid byte sequence for encoding "UTF8"`)
		}
		i += n
	}
	return nil
}

// appendText appends a text or varchar value whose encoding the caller
// has checked.
func appendText(dst []byte, t Type, src []byte) ([]byte, error) {
	if t.Kind == KindVarchar && t.Len > 0 && len(src) > int(t.Len) {
		// Byte length bounds the character count from above; only count
		// when it could exceed.
		n, cut := 0, len(src)
		for i := range string(src) {
			if n == int(t.Len) {
				cut = i
				break
			}
			n++
		}
		for _, c := range src[cut:] {
			if c != ' ' {
				return dst, errCode(CodeStringTooLong, "value too long for type character varying("+strconv.Itoa(int(t.Len))+")")
			}
		}
		src = src[:cut]
	}
	return append(dst, src...), nil
}

func isSpace(c byte) bool {
	return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f'
}

func trimSpace(s []byte) []byte {
	for len(s) > 0 && isSpace(s[0]) {
		s = s[1:]
	}
	for len(s) > 0 && isSpace(s[len(s)-1]) {
		s = s[:len(s)-1]
	}
	return s
}

// appendInt follows PostgreSQL 15 pg_strtoint16/32/64: optional spaces,
// optional sign, decimal digits, optional spaces.
func appendInt(dst []byte, t Type, src []byte, bits int) ([]byte, error) {
	s := trimSpace(src)
	neg := false
	if len(s) > 0 && (s[0] == '+' || s[0] == '-') {
		neg = s[0] == '-'
		s = s[1:]
	}
	if len(s) == 0 {
		return dst, errSyntax(t)
	}
	// Accumulate as a negative number so the minimum fits.
	var v int64
	lim := int64(-1) << (bits - 1)
	for _, c := range s {
		if c < '0' || c > '9' {
			return dst, errSyntax(t)
		}
		d := int64(c - '0')
		if v < lim/10 {
			return dst, errRange(t)
		}
		v *= 10
		if v < lim+d {
			return dst, errRange(t)
		}
		v -= d
	}
	if !neg {
		if v == lim {
			return dst, errRange(t)
		}
		v = -v
	}
	return strconv.AppendInt(dst, v, 10), nil
}

func lower(c byte) byte {
	if c >= 'A' && c <= 'Z' {
		return c + 'a' - 'A'
	}
	return c
}

// prefixOf reports whether s is a prefix of word (lower-case ASCII),
// ignoring case, of at least min bytes.
func prefixOf(s []byte, word string, min int) bool {
	if len(s) < min || len(s) > len(word) {
		return false
	}
	for i, c := range s {
		if lower(c) != word[i] {
			return false
		}
	}
	return true
}

// equalFold reports whether s equals word (lower case ASCII) ignoring case.
func equalFold(s []byte, word string) bool {
	return len(s) == len(word) && prefixOf(s, word, 0)
}

func appendBoolText(dst []byte, t Type, src []byte) ([]byte, error) {
	s := trimSpace(src)
	switch {
	case prefixOf(s, "true", 1), prefixOf(s, "yes", 1), prefixOf(s, "on", 2), equalFold(s, "1"):
		return append(dst, 't'), nil
	case prefixOf(s, "false", 1), prefixOf(s, "no", 1), prefixOf(s, "off", 2), equalFold(s, "0"):
		return append(dst, 'f'), nil
	}
	return dst, errSyntax(t)
}

func unhex(c byte) (byte, bool) {
	switch {
	case c >= '0' && c <= '9':
		return c - '0', true
	case c >= 'a' && c <= 'f':
		return c - 'a' + 10, true
	case c >= 'A' && c <= 'F':
		return c - 'A' + 10, true
	}
	return 0, false
}

// parseUUID follows PostgreSQL's string_to_uuid: optional braces, 32 hex
// digits, a hyphen allowed after any group of four.
func parseUUID(t Type, s []byte) (u [16]byte, err error) {
	braces := len(s) > 0 && s[0] == '{'
	if braces {
		s = s[1:]
	}
	for i := 0; i < 16; i++ {
		if len(s) < 2 {
			return u, errSyntax(t)
		}
		hi, ok1 := unhex(s[0])
		lo, ok2 := unhex(s[1])
		if !ok1 || !ok2 {
			return u, errSyntax(t)
		}
		u[i] = hi<<4 | lo
		s = s[2:]
		if len(s) > 0 && s[0] == '-' && i%2 == 1 && i < 15 {
			s = s[1:]
		}
	}
	if braces {
		if len(s) == 0 || s[0] != '}' {
			return u, errSyntax(t)
		}
		s = s[1:]
	}
	if len(s) != 0 {
		return u, errSyntax(t)
	}
	return u, nil
}

const hexDigits = "0123456789abcdef"

func appendUUID(dst []byte, u [16]byte) []byte {
	for i, b := range u {
		if i == 4 || i == 6 || i == 8 || i == 10 {
			dst = append(dst, '-')
		}
		dst = append(dst, hexDigits[b>>4], hexDigits[b&15])
	}
	return dst
}

func appendUUIDText(dst []byte, t Type, src []byte) ([]byte, error) {
	u, err := parseUUID(t, src)
	if err != nil {
		return dst, err
	}
	return appendUUID(dst, u), nil
}

func appendByteaHex(dst, raw []byte) []byte {
	dst = append(dst, '\\', 'x')
	for _, b := range raw {
		dst = append(dst, hexDigits[b>>4], hexDigits[b&15])
	}
	return dst
}

// appendByteaText follows PostgreSQL's byteain: "\x" hex (whitespace
// between digit pairs allowed) or the escape format.
func appendByteaText(dst []byte, t Type, src []byte) ([]byte, error) {
	if len(src) >= 2 && src[0] == '\\' && src[1] == 'x' {
		dst = append(dst, '\\', 'x')
		s := src[2:]
		for len(s) > 0 {
			if s[0] == ' ' || s[0] == '\n' || s[0] == '\t' || s[0] == '\r' {
				s = s[1:]
				continue
			}
			if _, ok := unhex(s[0]); !ok {
				return dst, errCode(CodeInvalidParameter, "invalid hexadecimal digit")
			}
			if len(s) < 2 {
				return dst, errCode(CodeInvalidParameter, "invalid hexadecimal data: odd number of digits")
			}
			if _, ok := unhex(s[1]); !ok {
				return dst, errCode(CodeInvalidParameter, "invalid hexadecimal digit")
			}
			dst = append(dst, lower(s[0]), lower(s[1]))
			s = s[2:]
		}
		return dst, nil
	}
	dst = append(dst, '\\', 'x')
	for s := src; len(s) > 0; {
		c := s[0]
		if c != '\\' {
			dst = append(dst, hexDigits[c>>4], hexDigits[c&15])
			s = s[1:]
			continue
		}
		switch {
		case len(s) >= 2 && s[1] == '\\':
			c, s = '\\', s[2:]
		case len(s) >= 4 && s[1] >= '0' && s[1] <= '3' && s[2] >= '0' && s[2] <= '7' && s[3] >= '0' && s[3] <= '7':
			c, s = (s[1]-'0')<<6|(s[2]-'0')<<3|(s[3]-'0'), s[4:]
		default:
			return dst, errSyntax(t)
		}
		dst = append(dst, hexDigits[c>>4], hexDigits[c&15])
	}
	return dst, nil
}
