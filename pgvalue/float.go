package pgvalue

import (
	"math"
	"math/bits"
	"strconv"
)

// PostgreSQL's NaN bit patterns (get_float8_nan, get_float4_nan); Go's
// math.NaN differs in the low bit.
const (
	nan64 = 0x7ff8000000000000
	nan32 = 0x7fc00000
)

// parseFloatText follows PostgreSQL's float4in/float8in for decimal input:
// optional spaces, NaN/Infinity/inf words, a decimal number with optional
// exponent, optional spaces. Hexadecimal floats (accepted by strtod) are
// refused.
func parseFloatText(t Type, src []byte, bits int) (float64, error) {
	s := trimSpace(src)
	if len(s) == 0 {
		return 0, errSyntax(t)
	}
	body, neg := s, false
	if body[0] == '+' || body[0] == '-' {
		neg = body[0] == '-'
		body = body[1:]
	}
	switch {
	case equalFold(body, "nan"):
		return math.Float64frombits(nan64), nil
	case equalFold(body, "infinity"), equalFold(body, "inf"):
		if neg {
			return math.Inf(-1), nil
		}
		return math.Inf(1), nil
	}
	sawDigit, nonZero, i := false, false, 0
	for ; i < len(body) && (body[i] >= '0' && body[i] <= '9'); i++ {
		sawDigit = true
		nonZero = nonZero || body[i] != '0'
	}
	if i < len(body) && body[i] == '.' {
		for i++; i < len(body) && (body[i] >= '0' && body[i] <= '9'); i++ {
			sawDigit = true
			nonZero = nonZero || body[i] != '0'
		}
	}
	if !sawDigit {
		return 0, errSyntax(t)
	}
	if i < len(body) && (body[i] == 'e' || body[i] == 'E') {
		i++
		if i < len(body) && (body[i] == '+' || body[i] == '-') {
			i++
		}
		if i == len(body) || body[i] < '0' || body[i] > '9' {
			return 0, errSyntax(t)
		}
		for ; i < len(body) && body[i] >= '0' && body[i] <= '9'; i++ {
		}
	}
	if i != len(body) {
		return 0, errSyntax(t)
	}
	f, err := strconv.ParseFloat(string(s), bits)
	if err != nil || math.IsInf(f, 0) || (f == 0 && nonZero) {
		return 0, errRange(t)
	}
	return f, nil
}

// appendFloat prints f as PostgreSQL 12+ float4out/float8out with
// extra_float_digits ≥ 1: the shortest decimal that reads back exactly,
// positional for decimal exponents in [-4, 15) (float8) or [-4, 6)
// (float4), otherwise d.ddde±XX.
func appendFloat(dst []byte, f float64, bits int) []byte {
	switch {
	case math.IsNaN(f):
		return append(dst, "NaN"...)
	case math.IsInf(f, 1):
		return append(dst, "Infinity"...)
	case math.IsInf(f, -1):
		return append(dst, "-Infinity"...)
	case f == 0:
		if math.Signbit(f) {
			return append(dst, "-0"...)
		}
		return append(dst, '0')
	}
	var buf [32]byte
	e := strconv.AppendFloat(buf[:0], f, 'e', -1, bits) // -d.ddde±XX
	maxDigits := 17
	if bits == 32 {
		maxDigits = 9
	}
	// Go accepts a decimal exactly halfway between two floats when
	// round-half-even reads it back; PostgreSQL's Ryu never prints one.
	// Use more digits until the representation is strictly closest.
	for p := countDigits(e); p < maxDigits && isTie(e, f, bits); p++ {
		e = strconv.AppendFloat(buf[:0], f, 'e', p, bits) // p+1 digits
	}
	neg := e[0] == '-'
	if neg {
		e = e[1:]
		dst = append(dst, '-')
	}
	ePos := 0
	for ePos < len(e) && e[ePos] != 'e' {
		ePos++
	}
	mant, expPart := e[:ePos], e[ePos+1:]
	if len(mant) > 2 { // strip trailing zeros a longer precision may leave
		for mant[len(mant)-1] == '0' {
			mant = mant[:len(mant)-1]
		}
		if mant[len(mant)-1] == '.' {
			mant = mant[:len(mant)-1]
		}
	}
	x, _ := strconv.Atoi(string(expPart))
	var digs [24]byte
	d := append(digs[:0], mant[0])
	if len(mant) > 2 {
		d = append(d, mant[2:]...)
	}
	hi := 15
	if bits == 32 {
		hi = 6
	}
	if x < -4 || x >= hi {
		dst = append(dst, mant...)
		dst = append(dst, 'e')
		if x < 0 {
			dst = append(dst, '-')
			x = -x
		} else {
			dst = append(dst, '+')
		}
		if x < 10 {
			dst = append(dst, '0')
		}
		return strconv.AppendInt(dst, int64(x), 10)
	}
	if x < 0 {
		dst = append(dst, '0', '.')
		for i := 0; i < -x-1; i++ {
			dst = append(dst, '0')
		}
		return append(dst, d...)
	}
	for i := 0; i <= x; i++ {
		if i < len(d) {
			dst = append(dst, d[i])
		} else {
			dst = append(dst, '0')
		}
	}
	if len(d) > x+1 {
		dst = append(dst, '.')
		dst = append(dst, d[x+1:]...)
	}
	return dst
}

func appendFloatText(dst []byte, t Type, src []byte, bits int) ([]byte, error) {
	f, err := parseFloatText(t, src, bits)
	if err != nil {
		return dst, err
	}
	return appendFloat(dst, f, bits), nil
}

// countDigits counts the mantissa digits of strconv's 'e' format.
func countDigits(e []byte) int {
	n := 0
	for _, c := range e {
		if c == 'e' {
			break
		}
		if c >= '0' && c <= '9' {
			n++
		}
	}
	return n
}

var pow5 = func() (p [28]uint64) {
	p[0] = 1
	for i := 1; i < len(p); i++ {
		p[i] = p[i-1] * 5
	}
	return p
}()

// isTie reports whether the decimal e (strconv 'e' format of f) lies
// exactly halfway between f and one of its neighbours.
func isTie(e []byte, f float64, width int) bool {
	var d uint64
	x, i := 0, 0
	for ; i < len(e) && e[i] != 'e'; i++ {
		if c := e[i]; c >= '0' && c <= '9' {
			d = d*10 + uint64(c-'0')
			x--
		}
	}
	x++ // the first digit is before the point
	exp, err := strconv.Atoi(string(e[i+1:]))
	if err != nil || d == 0 {
		return false
	}
	x += exp // value = d × 10^x
	for d%10 == 0 {
		d /= 10
		x++
	}
	// d × 10^x = odd × 2^twos
	var odd uint64
	var twos int
	switch {
	case x >= 0:
		if x >= len(pow5) {
			return false
		}
		hi, lo := bits.Mul64(d, pow5[x])
		if hi != 0 {
			return false // odd part wider than any midpoint's
		}
		odd, twos = lo, x
	default:
		if -x >= len(pow5) || d%pow5[-x] != 0 {
			return false
		}
		odd, twos = d/pow5[-x], x
	}
	for odd&1 == 0 {
		odd >>= 1
		twos++
	}
	// f = m × 2^k
	var m uint64
	var k, minExp int
	var minNormal uint64
	if width == 32 {
		b := math.Float32bits(float32(math.Abs(f)))
		m, k = uint64(b&(1<<23-1)), int(b>>23)
		minNormal, minExp = 1<<23, -149
	} else {
		b := math.Float64bits(math.Abs(f))
		m, k = b&(1<<52-1), int(b>>52)
		minNormal, minExp = 1<<52, -1074
	}
	if k == 0 {
		k = minExp
	} else {
		m |= minNormal
		k += minExp - 1
	}
	if odd == 2*m+1 && twos == k-1 {
		return true
	}
	if m == minNormal && k > minExp {
		return odd == 4*m-1 && twos == k-2
	}
	return odd == 2*m-1 && twos == k-1
}
