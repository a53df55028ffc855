package pgvalue

import (
	"bytes"
	"sort"
	"unicode/utf16"
	"unicode/utf8"
)

// maxJSONDepth bounds nesting so hostile input cannot exhaust the stack.
// PostgreSQL 15 with the default max_stack_depth accepts 10000 levels and
// fails (54001) somewhere below 50000.
const maxJSONDepth = 10000

type jsonKind uint8

const (
	jsonNull   jsonKind = 1
	jsonTrue   jsonKind = 2
	jsonFalse  jsonKind = 3
	jsonNumber jsonKind = 4
	jsonString jsonKind = 5
	jsonArray  jsonKind = 6
	jsonObject jsonKind = 7
)

// jsonValue is a parsed JSON value, built only for jsonb.
type jsonValue struct {
	kind  jsonKind
	str   []byte      // decoded string, or the number's text
	elems []jsonValue // array elements, or object values
	keys  [][]byte    // object keys (decoded), parallel to elems
}

type jsonParser struct {
	t     Type
	s     []byte
	i     int
	build bool // jsonb: build values and decode strings
	depth int
}

func (p *jsonParser) ws() {
	for p.i < len(p.s) {
		switch p.s[p.i] {
		case ' ', '\t', '\n', '\r':
			p.i++
		default:
			return
		}
	}
}

func (p *jsonParser) syntax() error { return errSyntax(p.t) }

func (p *jsonParser) value(v *jsonValue) error {
	p.ws()
	if p.i >= len(p.s) {
		return p.syntax()
	}
	switch c := p.s[p.i]; {
	case c == '{':
		return p.object(v)
	case c == '[':
		return p.array(v)
	case c == '"':
		v.kind = jsonString
		var err error
		v.str, err = p.str()
		return err
	case c == '-' || (c >= '0' && c <= '9'):
		v.kind = jsonNumber
		return p.number(v)
	case bytes.HasPrefix(p.s[p.i:], []byte("true")):
		v.kind, p.i = jsonTrue, p.i+4
	case bytes.HasPrefix(p.s[p.i:], []byte("false")):
		v.kind, p.i = jsonFalse, p.i+5
	case bytes.HasPrefix(p.s[p.i:], []byte("null")):
		v.kind, p.i = jsonNull, p.i+4
	default:
		return p.syntax()
	}
	// a keyword must not run into more identifier characters ("truex")
	if p.i < len(p.s) && (isLetter(p.s[p.i]) || (p.s[p.i] >= '0' && p.s[p.i] <= '9') || p.s[p.i] == '_') {
		return p.syntax()
	}
	return nil
}

func (p *jsonParser) number(v *jsonValue) error {
	start := p.i
	if p.s[p.i] == '-' {
		p.i++
	}
	digits := func() int {
		n := 0
		for p.i < len(p.s) && p.s[p.i] >= '0' && p.s[p.i] <= '9' {
			p.i++
			n++
		}
		return n
	}
	if p.i < len(p.s) && p.s[p.i] == '0' {
		p.i++
	} else if digits() == 0 {
		return p.syntax()
	}
	if p.i < len(p.s) && p.s[p.i] == '.' {
		p.i++
		if digits() == 0 {
			return p.syntax()
		}
	}
	if p.i < len(p.s) && (p.s[p.i] == 'e' || p.s[p.i] == 'E') {
		p.i++
		if p.i < len(p.s) && (p.s[p.i] == '+' || p.s[p.i] == '-') {
			p.i++
		}
		if digits() == 0 {
			return p.syntax()
		}
	}
	if p.i < len(p.s) && (isLetter(p.s[p.i]) || (p.s[p.i] >= '0' && p.s[p.i] <= '9') || p.s[p.i] == '_' || p.s[p.i] == '.') {
		return p.syntax()
	}
	v.str = p.s[start:p.i]
	return nil
}

func hex4(s []byte) (rune, bool) {
	if len(s) < 4 {
		return 0, false
	}
	var r rune
	for _, c := range s[:4] {
		h, ok := unhex(c)
		if !ok {
			return 0, false
		}
		r = r<<4 | rune(h)
	}
	return r, true
}

// str parses a string at p.i (the opening quote). With build set it
// returns the decoded bytes.
func (p *jsonParser) str() ([]byte, error) {
	p.i++
	var out []byte
	for {
		if p.i >= len(p.s) {
			return nil, p.syntax()
		}
		c := p.s[p.i]
		switch {
		case c == '"':
			p.i++
			if p.build && out == nil {
				out = []byte{}
			}
			return out, nil
		case c < 0x20:
			return nil, p.syntax()
		case c != '\\':
			if p.build {
				out = append(out, c)
			}
			p.i++
			continue
		}
		p.i++
		if p.i >= len(p.s) {
			return nil, p.syntax()
		}
		e := p.s[p.i]
		p.i++
		var b byte
		switch e {
		case '"', '\\', '/':
			b = e
		case 'b':
			b = '\b'
		case 'f':
			b = '\f'
		case 'n':
			b = '\n'
		case 'r':
			b = '\r'
		case 't':
			b = '\t'
		case 'u':
			r, ok := hex4(p.s[p.i:])
			if !ok {
				return nil, p.syntax()
			}
			p.i += 4
			if !p.build {
				continue // json keeps escapes as written; PostgreSQL checks only the hex digits
			}
			if utf16.IsSurrogate(r) {
				if r >= 0xdc00 || p.i+6 > len(p.s) || p.s[p.i] != '\\' || p.s[p.i+1] != 'u' {
					return nil, p.syntax()
				}
				r2, ok := hex4(p.s[p.i+2:])
				if !ok || r2 < 0xdc00 || r2 > 0xdfff {
					return nil, p.syntax()
				}
				p.i += 6
				r = utf16.DecodeRune(r, r2)
			}
			if p.build {
				if r == 0 {
					return nil, errCode(CodeUntranslatable, "unsupported Unicode escape sequence")
				}
				out = utf8.AppendRune(out, r)
			}
			continue
		default:
			return nil, p.syntax()
		}
		if p.build {
			out = append(out, b)
		}
	}
}

func (p *jsonParser) enter() error {
	p.depth++
	if p.depth > maxJSONDepth {
		return errCode(CodeTooDeep, "JSON nesting too deep")
	}
	return nil
}

func (p *jsonParser) array(v *jsonValue) error {
	if err := p.enter(); err != nil {
		return err
	}
	defer func() { p.depth-- }()
	v.kind = jsonArray
	p.i++
	p.ws()
	if p.i < len(p.s) && p.s[p.i] == ']' {
		p.i++
		return nil
	}
	for {
		var e jsonValue
		if err := p.value(&e); err != nil {
			return err
		}
		if p.build {
			v.elems = append(v.elems, e)
		}
		p.ws()
		if p.i >= len(p.s) {
			return p.syntax()
		}
		switch p.s[p.i] {
		case ',':
			p.i++
		case ']':
			p.i++
			return nil
		default:
			return p.syntax()
		}
	}
}

func (p *jsonParser) object(v *jsonValue) error {
	if err := p.enter(); err != nil {
		return err
	}
	defer func() { p.depth-- }()
	v.kind = jsonObject
	p.i++
	p.ws()
	if p.i < len(p.s) && p.s[p.i] == '}' {
		p.i++
		return nil
	}
	for {
		p.ws()
		if p.i >= len(p.s) || p.s[p.i] != '"' {
			return p.syntax()
		}
		k, err := p.str()
		if err != nil {
			return err
		}
		p.ws()
		if p.i >= len(p.s) || p.s[p.i] != ':' {
			return p.syntax()
		}
		p.i++
		var e jsonValue
		if err := p.value(&e); err != nil {
			return err
		}
		if p.build {
			v.keys = append(v.keys, k)
			v.elems = append(v.elems, e)
		}
		p.ws()
		if p.i >= len(p.s) {
			return p.syntax()
		}
		switch p.s[p.i] {
		case ',':
			p.i++
		case '}':
			p.i++
			return nil
		default:
			return p.syntax()
		}
	}
}

// normalizeObject sorts keys as jsonb does (length, then bytes) and keeps
// the last of duplicate keys.
func normalizeObject(v *jsonValue) {
	idx := make([]int, len(v.keys))
	for i := range idx {
		idx[i] = i
	}
	sort.SliceStable(idx, func(a, b int) bool {
		ka, kb := v.keys[idx[a]], v.keys[idx[b]]
		if len(ka) != len(kb) {
			return len(ka) < len(kb)
		}
		return bytes.Compare(ka, kb) < 0
	})
	keys := make([][]byte, 0, len(idx))
	elems := make([]jsonValue, 0, len(idx))
	for n, i := range idx {
		if n+1 < len(idx) && bytes.Equal(v.keys[i], v.keys[idx[n+1]]) {
			continue // a later duplicate follows (stable sort keeps input order)
		}
		keys = append(keys, v.keys[i])
		elems = append(elems, v.elems[i])
	}
	v.keys, v.elems = keys, elems
}

func appendJSONString(dst, s []byte) []byte {
	dst = append(dst, '"')
	for _, c := range s {
		switch c {
		case '"':
			dst = append(dst, '\\', '"')
		case '\\':
			dst = append(dst, '\\', '\\')
		case '\b':
			dst = append(dst, '\\', 'b')
		case '\f':
			dst = append(dst, '\\', 'f')
		case '\n':
			dst = append(dst, '\\', 'n')
		case '\r':
			dst = append(dst, '\\', 'r')
		case '\t':
			dst = append(dst, '\\', 't')
		default:
			if c < 0x20 {
				dst = append(dst, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&15])
			} else {
				dst = append(dst, c)
			}
		}
	}
	return append(dst, '"')
}

// appendJSONB prints v as jsonb_out does.
func appendJSONB(dst []byte, t Type, v *jsonValue) ([]byte, error) {
	var err error
	switch v.kind {
	case jsonNull:
		dst = append(dst, "null"...)
	case jsonTrue:
		dst = append(dst, "true"...)
	case jsonFalse:
		dst = append(dst, "false"...)
	case jsonNumber:
		d, perr := parseDecimal(t, v.str, nil)
		if perr != nil {
			return dst, perr
		}
		dst, err = appendDecimal(dst, &d)
	case jsonString:
		dst = appendJSONString(dst, v.str)
	case jsonArray:
		dst = append(dst, '[')
		for i := range v.elems {
			if i > 0 {
				dst = append(dst, ',', ' ')
			}
			if dst, err = appendJSONB(dst, t, &v.elems[i]); err != nil {
				return dst, err
			}
		}
		dst = append(dst, ']')
	case jsonObject:
		normalizeObject(v)
		dst = append(dst, '{')
		for i := range v.elems {
			if i > 0 {
				dst = append(dst, ',', ' ')
			}
			dst = appendJSONString(dst, v.keys[i])
			dst = append(dst, ':', ' ')
			if dst, err = appendJSONB(dst, t, &v.elems[i]); err != nil {
				return dst, err
			}
		}
		dst = append(dst, '}')
	}
	return dst, err
}

// appendJSONText validates src as PostgreSQL's json_in does and appends it
// unchanged (json), or appends its jsonb normal form.
// The caller has checked the encoding.
func appendJSONText(dst []byte, t Type, src []byte) ([]byte, error) {
	p := jsonParser{t: t, s: src, build: t.Kind == KindJSONB}
	var v jsonValue
	if err := p.value(&v); err != nil {
		return dst, err
	}
	p.ws()
	if p.i != len(p.s) {
		return dst, p.syntax()
	}
	if t.Kind == KindJSON {
		return append(dst, src...), nil
	}
	return appendJSONB(dst, t, &v)
}
