package pgvalue

import "encoding/binary"

// numeric's binary form (numeric_send/numeric_recv): int16 ndigits,
// int16 weight, uint16 sign, uint16 dscale, then ndigits base-10000
// digits, the first worth 10000^weight.
const (
	numericPos  = 0x0000
	numericNeg  = 0x4000
	numericNaN  = 0xC000
	numericPInf = 0xD000
	numericNInf = 0xF000
	// numeric_send reports dscale 32 for ±Infinity: PostgreSQL reads the
	// dscale bits of the special header (0xD000 & 0x1F80) >> 7. Mirrored so
	// the bytes equal the server's.
	numericInfDscale = 0x20
)

// appendNumericBinary appends d in numeric_send's normalised form.
func appendNumericBinary(dst []byte, d *decimal) []byte {
	switch d.special {
	case "NaN":
		return append(dst, 0, 0, 0, 0, 0xC0, 0, 0, 0)
	case "Infinity":
		return append(dst, 0, 0, 0, 0, 0xD0, 0, 0, numericInfDscale)
	case "-Infinity":
		return append(dst, 0, 0, 0, 0, 0xF0, 0, 0, numericInfDscale)
	}
	// Align digits × 10^exp to base-10000 groups: pad right until exp is a
	// multiple of 4, pad left until the length is.
	exp := d.exp
	rpad := int(floorDiv(int64(exp), 4)*4 - int64(exp)) // ≤ 0
	rpad = -rpad
	exp -= rpad
	n := len(d.digits) + rpad
	lpad := (4 - n%4) % 4
	n += lpad
	digit := func(i int) int { // i-th decimal digit of the padded string
		i -= lpad
		if i < 0 || i >= len(d.digits) {
			return 0
		}
		return int(d.digits[i] - '0')
	}
	groups := n / 4
	weight := groups - 1 + exp/4
	first, last := 0, groups-1
	group := func(g int) uint16 {
		return uint16(digit(4*g)*1000 + digit(4*g+1)*100 + digit(4*g+2)*10 + digit(4*g+3))
	}
	for first <= last && group(first) == 0 {
		first++
		weight--
	}
	for last >= first && group(last) == 0 {
		last--
	}
	sign := uint16(numericPos)
	if d.neg {
		sign = numericNeg
	}
	if first > last {
		weight, sign = 0, numericPos
	}
	dst = binary.BigEndian.AppendUint16(dst, uint16(max(0, last-first+1)))
	dst = binary.BigEndian.AppendUint16(dst, uint16(int16(weight)))
	dst = binary.BigEndian.AppendUint16(dst, sign)
	dst = binary.BigEndian.AppendUint16(dst, uint16(d.dscale))
	for g := first; g <= last; g++ {
		dst = binary.BigEndian.AppendUint16(dst, group(g))
	}
	return dst
}

// parseNumericBinary reads numeric_recv's input. Digits hidden by dscale
// are truncated, as numeric_recv does. digits are appended to buf.
func parseNumericBinary(t Type, src, buf []byte) (decimal, error) {
	var d decimal
	if len(src) < 8 {
		return d, errBinary(t)
	}
	ndigits := int(int16(binary.BigEndian.Uint16(src)))
	weight := int(int16(binary.BigEndian.Uint16(src[2:])))
	sign := binary.BigEndian.Uint16(src[4:])
	dscale := int(binary.BigEndian.Uint16(src[6:]))
	src = src[8:]
	if ndigits < 0 || len(src) != 2*ndigits {
		return d, errBinary(t)
	}
	switch sign {
	case numericPos, numericNeg:
	case numericNaN:
		d.special = "NaN"
		return d, nil
	case numericPInf:
		d.special = "Infinity"
		return d, nil
	case numericNInf:
		d.special = "-Infinity"
		return d, nil
	default:
		return d, errCode(CodeInvalidBinary, "invalid sign in external \"numeric\" value")
	}
	if dscale > numericMaxDscale {
		return d, errCode(CodeInvalidBinary, "invalid scale in external \"numeric\" value")
	}
	digits := buf
	for i := 0; i < ndigits; i++ {
		g := binary.BigEndian.Uint16(src[2*i:])
		if g >= 10000 {
			return d, errCode(CodeInvalidBinary, "invalid digit in external \"numeric\" value")
		}
		digits = append(digits, byte('0'+g/1000), byte('0'+g/100%10), byte('0'+g/10%10), byte('0'+g%10))
	}
	d.neg = sign == numericNeg
	d.digits = digits[len(buf):]
	for len(d.digits) > 0 && d.digits[0] == '0' {
		d.digits = d.digits[1:]
	}
	d.exp = (weight - ndigits + 1) * 4
	d.dscale = dscale
	d.truncTo(dscale)
	return d, nil
}

// truncTo drops digits beyond scale s (toward zero) and sets dscale s.
func (d *decimal) truncTo(s int) {
	if drop := -d.exp - s; drop > 0 {
		if drop >= len(d.digits) {
			d.digits = d.digits[:0]
		} else {
			d.digits = d.digits[:len(d.digits)-drop]
		}
		d.exp = -s
	}
	for len(d.digits) > 0 && d.digits[0] == '0' {
		d.digits = d.digits[1:]
	}
	d.dscale = max(0, s)
}
