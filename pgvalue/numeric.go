package pgvalue

// PostgreSQL's numeric limits: NUMERIC_WEIGHT_MAX (0x7FFF base-10000
// digits before the point) and NUMERIC_DSCALE_MAX.
const (
	numericMaxIntDigits = (0x7FFF + 1) * 4
	numericMaxDscale    = 0x3FFF
)

// decimal is a parsed numeric: value = digits × 10^exp, with dscale digits
// to print after the point. digits holds ASCII digits without leading
// zeros ("" is zero).
type decimal struct {
	neg     bool
	special string // "NaN", "Infinity", "-Infinity" or ""
	digits  []byte
	exp     int
	dscale  int
}

func errNumericOverflow() error {
	return errCode(CodeOutOfRange, "value overflows numeric format")
}

// parseDecimal parses PostgreSQL 15 numeric input syntax. digits is
// appended to buf.
func parseDecimal(t Type, src []byte, buf []byte) (decimal, error) {
	var d decimal
	s := trimSpace(src)
	if len(s) > 0 && (s[0] == '+' || s[0] == '-') {
		d.neg = s[0] == '-'
		s = s[1:]
	}
	switch {
	case equalFold(s, "nan"):
		if len(src) > 0 && (trimSpace(src)[0] == '+' || trimSpace(src)[0] == '-') {
			return d, errSyntax(t)
		}
		d.special = "NaN"
		return d, nil
	case equalFold(s, "infinity"), equalFold(s, "inf"):
		d.special = "Infinity"
		if d.neg {
			d.special = "-Infinity"
		}
		return d, nil
	}
	sawDigit, sawPoint, frac := false, false, 0
	digits := buf
	for len(s) > 0 {
		c := s[0]
		switch {
		case c >= '0' && c <= '9':
			sawDigit = true
			if sawPoint {
				frac++
			}
			// Leading zeros are dropped; after the point they still count
			// in frac, so the value keeps its place.
			if c != '0' || len(digits) > len(buf) {
				digits = append(digits, c)
			}
		case c == '.' && !sawPoint:
			sawPoint = true
		default:
			goto rest
		}
		s = s[1:]
	}
rest:
	if !sawDigit {
		return d, errSyntax(t)
	}
	exp := 0
	if len(s) > 0 && (s[0] == 'e' || s[0] == 'E') {
		s = s[1:]
		eneg := false
		if len(s) > 0 && (s[0] == '+' || s[0] == '-') {
			eneg = s[0] == '-'
			s = s[1:]
		}
		if len(s) == 0 || s[0] < '0' || s[0] > '9' {
			return d, errSyntax(t)
		}
		for len(s) > 0 && s[0] >= '0' && s[0] <= '9' {
			exp = exp*10 + int(s[0]-'0')
			if exp > 1<<30 {
				return d, errNumericOverflow()
			}
			s = s[1:]
		}
		if eneg {
			exp = -exp
		}
	}
	if len(s) != 0 {
		return d, errSyntax(t)
	}
	d.digits = digits[len(buf):]
	d.exp = exp - frac
	d.dscale = max(0, frac-exp)
	return d, nil
}

// roundTo rounds d to scale s (half away from zero), as numeric(p,s) does.
// It never grows d.digits, so it cannot allocate.
func (d *decimal) roundTo(s int) {
	if drop := -d.exp - s; drop > 0 {
		n := len(d.digits)
		up := drop <= n && d.digits[n-drop] >= '5'
		d.digits = d.digits[:max(0, n-drop)]
		d.exp = -s
		if up {
			i := len(d.digits) - 1
			for ; i >= 0 && d.digits[i] == '9'; i-- {
				d.digits[i] = '0'
			}
			if i >= 0 {
				d.digits[i]++
			} else {
				// all nines, or nothing kept: 1 × 10^(len+exp)
				d.exp += len(d.digits)
				d.digits = d.digits[:1]
				d.digits[0] = '1'
			}
		}
	}
	for len(d.digits) > 0 && d.digits[0] == '0' {
		d.digits = d.digits[1:]
	}
	d.dscale = max(0, s)
}

// intDigits is the number of digits before the point (0 for |d| < 1).
func (d *decimal) intDigits() int {
	if len(d.digits) == 0 {
		return 0
	}
	return max(0, len(d.digits)+d.exp)
}

// applyTypmod rounds and range-checks d for t (numeric(p,s)).
func (d *decimal) applyTypmod(t Type) error {
	if !t.HasPrecision {
		return nil
	}
	switch d.special {
	case "NaN":
		return nil
	case "Infinity", "-Infinity":
		return errCode(CodeOutOfRange, "numeric field overflow")
	}
	d.roundTo(int(t.Scale))
	if d.intDigits() > int(t.Precision-t.Scale) {
		return errCode(CodeOutOfRange, "numeric field overflow")
	}
	return nil
}

// appendDecimal prints d as numeric_out does.
func appendDecimal(dst []byte, d *decimal) ([]byte, error) {
	if d.special != "" {
		return append(dst, d.special...), nil
	}
	if d.intDigits() > numericMaxIntDigits || d.dscale > numericMaxDscale {
		return dst, errNumericOverflow()
	}
	if len(d.digits) > 0 && d.neg {
		dst = append(dst, '-')
	}
	// Position of the point counted from the end of digits.
	n := len(d.digits)
	pointFromEnd := -d.exp // digits after the point among d.digits (may be <0)
	intLen := n - pointFromEnd
	if n == 0 {
		intLen = 0 // zero: whatever exp says, print "0"
	}
	if intLen <= 0 {
		dst = append(dst, '0')
	} else {
		for i := 0; i < intLen; i++ {
			if i < n {
				dst = append(dst, d.digits[i])
			} else {
				dst = append(dst, '0')
			}
		}
	}
	if d.dscale > 0 {
		dst = append(dst, '.')
		// fractional digit k (0-based) is digit index intLen+k
		for k := 0; k < d.dscale; k++ {
			i := intLen + k
			if i >= 0 && i < n {
				dst = append(dst, d.digits[i])
			} else {
				dst = append(dst, '0')
			}
		}
	}
	return dst, nil
}

func appendNumericText(dst []byte, t Type, src []byte) ([]byte, error) {
	var buf [40]byte
	d, err := parseDecimal(t, src, buf[:0])
	if err != nil {
		return dst, err
	}
	return finishNumeric(dst, t, &d)
}

func finishNumeric(dst []byte, t Type, d *decimal) ([]byte, error) {
	if err := d.applyTypmod(t); err != nil {
		return dst, err
	}
	// A value with more stored fraction digits than dscale cannot come from
	// parseDecimal (dscale = -exp there) nor from roundTo; guard anyway.
	if d.special == "" && -d.exp > d.dscale {
		d.roundTo(d.dscale)
	}
	return appendDecimal(dst, d)
}
