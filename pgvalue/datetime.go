package pgvalue

import (
	"math"
	"strconv"
)

// Dates and timestamps are handled in PostgreSQL's own representation:
// days or microseconds since 2000-01-01 (UTC for timestamptz), proleptic
// Gregorian calendar, astronomical year numbering (1 BC = year 0).
const (
	usPerDay          = 86400 * 1000000
	unixToPGDays      = 10957                // 1970-01-01 → 2000-01-01
	dateMinDays       = -2451545             // 4714-11-24 BC (Julian day 0)
	dateEndDays       = 2147483494 - 2451545 // 5874898-01-01, exclusive
	timestampMin      = -211813488000000000  // MIN_TIMESTAMP
	timestampEnd      = 9223371331200000000  // END_TIMESTAMP, exclusive
	dateInfinity      = math.MaxInt32
	dateNegInfinity   = math.MinInt32
	timestampInfinity = math.MaxInt64
	timestampNegInf   = math.MinInt64
)

func floorDiv(a, b int64) int64 {
	q := a / b
	if (a%b != 0) && ((a < 0) != (b < 0)) {
		q--
	}
	return q
}

// daysFromCivil returns days since 2000-01-01 (Hinnant's algorithm).
func daysFromCivil(y, m, d int64) int64 {
	if m <= 2 {
		y--
	}
	era := floorDiv(y, 400)
	yoe := y - era*400
	mp := (m + 9) % 12
	doy := (153*mp+2)/5 + d - 1
	doe := yoe*365 + yoe/4 - yoe/100 + doy
	return era*146097 + doe - 719468 - unixToPGDays
}

func civilFromDays(days int64) (y, m, d int64) {
	z := days + unixToPGDays + 719468
	era := floorDiv(z, 146097)
	doe := z - era*146097
	yoe := (doe - doe/1460 + doe/36524 - doe/146096) / 365
	y = yoe + era*400
	doy := doe - (365*yoe + yoe/4 - yoe/100)
	mp := (5*doy + 2) / 153
	d = doy - (153*mp+2)/5 + 1
	if mp < 10 {
		m = mp + 3
	} else {
		m = mp - 9
	}
	if m <= 2 {
		y++
	}
	return y, m, d
}

func daysInMonth(y, m int64) int64 {
	switch m {
	case 2:
		if y%4 == 0 && (y%100 != 0 || y%400 == 0) {
			return 29
		}
		return 28
	case 4, 6, 9, 11:
		return 30
	}
	return 31
}

func errDatetime(t Type) error {
	return errCode(CodeDatetimeFormat, "invalid input syntax for type "+t.sqlName())
}

func errFieldRange() error {
	return errCode(CodeDatetimeOverflow, "date/time field value out of range")
}

func errTimestampRange(t Type) error {
	if t.Kind == KindDate {
		return errCode(CodeDatetimeOverflow, "date out of range")
	}
	return errCode(CodeDatetimeOverflow, "timestamp out of range")
}

// readDigits reads up to max decimal digits; n is how many were read.
func readDigits(s []byte, max int) (v int64, n int) {
	for n < len(s) && n < max && s[n] >= '0' && s[n] <= '9' {
		v = v*10 + int64(s[n]-'0')
		n++
	}
	return v, n
}

func skipSpaces(s []byte) []byte {
	for len(s) > 0 && isSpace(s[0]) {
		s = s[1:]
	}
	return s
}

// parseDatetime parses the accepted ISO forms into microseconds since
// 2000-01-01 (local time of the input for timestamp, UTC for timestamptz),
// or for date into days since 2000-01-01 (the time of day is dropped).
// special is +1/-1 for ±infinity.
func parseDatetime(t Type, src []byte) (us int64, special int, err error) {
	s := trimSpace(src)
	switch {
	case equalFold(s, "infinity"), equalFold(s, "+infinity"):
		return 0, 1, nil
	case equalFold(s, "-infinity"):
		return 0, -1, nil
	case equalFold(s, "epoch"):
		if t.Kind == KindDate {
			return -unixToPGDays, 0, nil
		}
		return -unixToPGDays * usPerDay, 0, nil
	}
	year, n := readDigits(s, 9)
	if n < 4 || n > 8 || len(s) < n+1 || s[n] != '-' {
		return 0, 0, errDatetime(t)
	}
	s = s[n+1:]
	month, n := readDigits(s, 2)
	if n == 0 || len(s) < n+1 || s[n] != '-' {
		return 0, 0, errDatetime(t)
	}
	s = s[n+1:]
	day, n := readDigits(s, 2)
	if n == 0 {
		return 0, 0, errDatetime(t)
	}
	s = s[n:]
	var hour, minute, sec, frac int64
	if len(s) > 0 && (s[0] == 'T' || s[0] == 't' || isSpace(s[0])) {
		rest := skipSpaces(s[1:])
		if len(rest) > 0 && rest[0] >= '0' && rest[0] <= '9' {
			if hour, n = readDigits(rest, 2); len(rest) < n+1 || rest[n] != ':' {
				return 0, 0, errDatetime(t)
			}
			rest = rest[n+1:]
			if minute, n = readDigits(rest, 2); n == 0 {
				return 0, 0, errDatetime(t)
			}
			rest = rest[n:]
			if len(rest) > 0 && rest[0] == ':' {
				if sec, n = readDigits(rest[1:], 2); n == 0 {
					return 0, 0, errDatetime(t)
				}
				rest = rest[1+n:]
				if len(rest) > 0 && rest[0] == '.' {
					var nd int
					for nd+1 < len(rest) && rest[nd+1] >= '0' && rest[nd+1] <= '9' {
						if nd < 6 {
							frac = frac*10 + int64(rest[nd+1]-'0')
						}
						nd++
					}
					for i := nd; i < 6; i++ {
						frac *= 10
					}
					if nd > 6 {
						// PostgreSQL: rint(strtod(".ddddddd") * 1e6)
						f, err := strconv.ParseFloat(string(rest[:nd+1]), 64)
						if err != nil {
							return 0, 0, errDatetime(t)
						}
						frac = int64(math.RoundToEven(f * 1000000))
					}
					rest = rest[nd+1:]
				}
			}
			s = rest
		} else if s[0] == 'T' || s[0] == 't' {
			return 0, 0, errDatetime(t)
		}
	}
	// time zone
	s = skipSpaces(s)
	var offset int64 // seconds east of UTC
	switch {
	case len(s) > 0 && (s[0] == '+' || s[0] == '-'):
		neg := s[0] == '-'
		s = s[1:]
		oh, n := readDigits(s, 2)
		if n == 0 {
			return 0, 0, errDatetime(t)
		}
		s = s[n:]
		var om, os int64
		if len(s) > 0 && s[0] == ':' {
			if om, n = readDigits(s[1:], 2); n == 0 {
				return 0, 0, errDatetime(t)
			}
			s = s[1+n:]
			if len(s) > 0 && s[0] == ':' {
				if os, n = readDigits(s[1:], 2); n == 0 {
					return 0, 0, errDatetime(t)
				}
				s = s[1+n:]
			}
		} else if n == 2 {
			if om, n = readDigits(s, 2); n == 2 {
				s = s[2:]
			} else if n != 0 {
				return 0, 0, errDatetime(t)
			}
		}
		if oh > 15 || om > 59 || os > 59 {
			return 0, 0, errCode(CodeTZDisplacement, "time zone displacement out of range")
		}
		offset = oh*3600 + om*60 + os
		if neg {
			offset = -offset
		}
	case len(s) > 0 && (s[0] == 'z' || s[0] == 'Z') && (len(s) == 1 || !isLetter(s[1])):
		s = s[1:]
	case len(s) >= 3 && (equalFold(s[:3], "utc") || equalFold(s[:3], "gmt")) && (len(s) == 3 || !isLetter(s[3])):
		s = s[3:]
	}
	s = skipSpaces(s)
	bc := false
	switch {
	case equalFold(s, "bc"):
		bc, s = true, nil
	case equalFold(s, "ad"):
		s = nil
	}
	if len(s) != 0 {
		return 0, 0, errDatetime(t)
	}
	if year == 0 || month < 1 || month > 12 || day < 1 {
		return 0, 0, errFieldRange()
	}
	if bc {
		year = 1 - year
	}
	if day > daysInMonth(year, month) || hour > 24 || minute > 59 || sec > 60 ||
		(hour == 24 && (minute != 0 || sec != 0 || frac != 0)) {
		return 0, 0, errFieldRange()
	}
	days := daysFromCivil(year, month, day)
	if days < dateMinDays || days >= dateEndDays {
		return 0, 0, errTimestampRange(t)
	}
	if t.Kind == KindDate {
		return days, 0, nil
	}
	if days < timestampMin/usPerDay-1 || days > timestampEnd/usPerDay+1 {
		return 0, 0, errTimestampRange(t)
	}
	us = days*usPerDay + ((hour*60+minute)*60+sec)*1000000 + frac
	if t.Kind == KindTimestamptz {
		us -= offset * 1000000
	}
	return us, 0, nil
}

func isLetter(c byte) bool { c = lower(c); return c >= 'a' && c <= 'z' }

var fracScales = [7]int64{1000000, 100000, 10000, 1000, 100, 10, 1}

// adjustTimestamp applies timestamp(p) rounding and the range check, as
// PostgreSQL's AdjustTimestampForTypmod and IS_VALID_TIMESTAMP do.
func adjustTimestamp(t Type, us int64) (int64, error) {
	if t.HasFracDigits && t.FracDigits >= 0 && t.FracDigits < 6 {
		scale := fracScales[t.FracDigits]
		off := scale / 2
		if us >= 0 {
			us = (us + off) / scale * scale
		} else {
			us = -((-us + off) / scale * scale)
		}
	}
	if us < timestampMin || us >= timestampEnd {
		return 0, errTimestampRange(t)
	}
	return us, nil
}

func appendPad(dst []byte, v int64, width int) []byte {
	var buf [20]byte
	b := strconv.AppendInt(buf[:0], v, 10)
	for i := len(b); i < width; i++ {
		dst = append(dst, '0')
	}
	return append(dst, b...)
}

// appendDate prints days since 2000-01-01 as date_out (DateStyle ISO).
func appendDateOut(dst []byte, days int64) []byte {
	y, m, d := civilFromDays(days)
	dst = appendYMD(dst, y, m, d)
	if y <= 0 {
		dst = append(dst, " BC"...)
	}
	return dst
}

func appendYMD(dst []byte, y, m, d int64) []byte {
	if y <= 0 {
		y = 1 - y
	}
	dst = appendPad(dst, y, 4)
	dst = append(dst, '-')
	dst = appendPad(dst, m, 2)
	dst = append(dst, '-')
	return appendPad(dst, d, 2)
}

// appendTimestampOut prints µs since 2000-01-01 as timestamp_out, or
// timestamptz_out with TimeZone UTC when tz is set.
func appendTimestampOut(dst []byte, us int64, tz bool) []byte {
	days := floorDiv(us, usPerDay)
	tod := us - days*usPerDay
	y, m, d := civilFromDays(days)
	dst = appendYMD(dst, y, m, d)
	dst = append(dst, ' ')
	secs, frac := tod/1000000, tod%1000000
	dst = appendPad(dst, secs/3600, 2)
	dst = append(dst, ':')
	dst = appendPad(dst, secs/60%60, 2)
	dst = append(dst, ':')
	dst = appendPad(dst, secs%60, 2)
	if frac != 0 {
		dst = append(dst, '.')
		w := 6
		for frac%10 == 0 {
			frac /= 10
			w--
		}
		dst = appendPad(dst, frac, w)
	}
	if tz {
		dst = append(dst, "+00"...)
	}
	if y <= 0 {
		dst = append(dst, " BC"...)
	}
	return dst
}

func appendDatetimeText(dst []byte, t Type, src []byte) ([]byte, error) {
	us, special, err := parseDatetime(t, src)
	if err != nil {
		return dst, err
	}
	return appendDatetime(dst, t, us, special)
}

func appendDatetime(dst []byte, t Type, us int64, special int) ([]byte, error) {
	switch special {
	case 1:
		return append(dst, "infinity"...), nil
	case -1:
		return append(dst, "-infinity"...), nil
	}
	if t.Kind == KindDate {
		return appendDateOut(dst, us), nil
	}
	us, err := adjustTimestamp(t, us)
	if err != nil {
		return dst, err
	}
	return appendTimestampOut(dst, us, t.Kind == KindTimestamptz), nil
}
