package proxy

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"strings"

	"github.com/jackc/pgx/v5/pgproto3"
)

// Minimal, allocation-free readers and writers for the protocol messages
// the encryption filters inspect. Frames are complete (type byte, length,
// body); readers get the body and fail with errBadMessage on anything that
// does not fit.

var errBadMessage = newError(ErrProtocolViolation, "", errors.New("malformed message"))

// wreader walks a message body.
type wreader struct {
	b   []byte
	bad bool
}

func (r *wreader) cstring() []byte {
	i := bytes.IndexByte(r.b, 0)
	if i < 0 {
		r.bad = true
		return nil
	}
	s := r.b[:i]
	r.b = r.b[i+1:]
	return s
}

func (r *wreader) int16() int16 {
	if len(r.b) < 2 {
		r.bad = true
		return 0
	}
	v := int16(binary.BigEndian.Uint16(r.b))
	r.b = r.b[2:]
	return v
}

func (r *wreader) int32() int32 {
	if len(r.b) < 4 {
		r.bad = true
		return 0
	}
	v := int32(binary.BigEndian.Uint32(r.b))
	r.b = r.b[4:]
	return v
}

func (r *wreader) bytes(n int) []byte {
	if n < 0 || len(r.b) < n {
		r.bad = true
		return nil
	}
	v := r.b[:n]
	r.b = r.b[n:]
	return v
}

// startMsg appends a message header with a placeholder length and returns
// the offset of the message start, for finishMsg.
func startMsg(dst []byte, typ byte) ([]byte, int) {
	at := len(dst)
	return append(dst, typ, 0, 0, 0, 0), at
}

// finishMsg fills in the length of the message started at at.
func finishMsg(dst []byte, at int) []byte {
	binary.BigEndian.PutUint32(dst[at+1:], uint32(len(dst)-at-1))
	return dst
}

func appendInt16(dst []byte, v int16) []byte { return binary.BigEndian.AppendUint16(dst, uint16(v)) }
func appendInt32(dst []byte, v int32) []byte { return binary.BigEndian.AppendUint32(dst, uint32(v)) }
func appendCString(dst []byte, s string) []byte {
	return append(append(dst, s...), 0)
}

// Messages pgcloak sends to the server on its own.

func appendParse(dst []byte, name, query string, oids []uint32) []byte {
	dst, at := startMsg(dst, 'P')
	dst = appendCString(dst, name)
	dst = appendCString(dst, query)
	dst = appendInt16(dst, int16(len(oids)))
	for _, o := range oids {
		dst = binary.BigEndian.AppendUint32(dst, o)
	}
	return finishMsg(dst, at)
}

// appendBindNoParams binds the unnamed portal to stmt without parameters.
func appendBindNoParams(dst []byte, stmt string) []byte {
	dst, at := startMsg(dst, 'B')
	dst = appendCString(dst, "")
	dst = appendCString(dst, stmt)
	dst = appendInt16(dst, 0)
	dst = appendInt16(dst, 0)
	dst = appendInt16(dst, 0)
	return finishMsg(dst, at)
}

func appendExecute(dst []byte, portal string) []byte {
	dst, at := startMsg(dst, 'E')
	dst = appendCString(dst, portal)
	dst = appendInt32(dst, 0)
	return finishMsg(dst, at)
}

func appendDescribe(dst []byte, kind byte, name string) []byte {
	dst, at := startMsg(dst, 'D')
	dst = append(dst, kind)
	dst = appendCString(dst, name)
	return finishMsg(dst, at)
}

func appendQuery(dst []byte, sql string) []byte {
	dst, at := startMsg(dst, 'Q')
	dst = appendCString(dst, sql)
	return finishMsg(dst, at)
}

// appendErrorResponse appends an ERROR for err (one of the sentinels of
// errors.go, possibly with a client message) to a client.
func appendErrorResponse(dst []byte, code, msg, detail string) []byte {
	out, err := (&pgproto3.ErrorResponse{
		Severity:            "ERROR",
		SeverityUnlocalized: "ERROR",
		Code:                code,
		Message:             strings.ReplaceAll(msg, "\x00", ""),
		Detail:              strings.ReplaceAll(detail, "\x00", ""),
	}).Encode(dst)
	if err != nil {
		return dst
	}
	return out
}

// raiseSQL is a statement that fails on the server with code and msg.
// pgcloak refuses statements this way instead of answering the client
// itself, so that the server's own state (an aborted transaction block,
// the skipping of the rest of an extended-protocol pipeline until Sync) is
// exactly what the client expects after an error. msg must not contain
// values of encrypted columns; it names columns and constructs only.
func raiseSQL(code, msg, hint string) string {
	var b strings.Builder
	b.WriteString("DO $pgcloak$BEGIN RAISE EXCEPTION USING ERRCODE = '")
	b.WriteString(code)
	b.WriteString("', MESSAGE = ")
	writeELiteral(&b, msg)
	if hint != "" {
		b.WriteString(", HINT = ")
		writeELiteral(&b, hint)
	}
	b.WriteString("; END$pgcloak$")
	return b.String()
}

// writeELiteral writes s as an E'…' string literal (independent of
// standard_conforming_strings), with anything that could end the dollar
// quote of raiseSQL defused.
func writeELiteral(b *strings.Builder, s string) {
	b.WriteString("E'")
	for i := 0; i < len(s); i++ {
		switch c := s[i]; c {
		case '\'':
			b.WriteString("''")
		case '\\':
			b.WriteString(`\\`)
		case '$':
			b.WriteString(`\x24`)
		case 0:
		default:
			b.WriteByte(c)
		}
	}
	b.WriteByte('\'')
}

// appendByteaText appends the hex text form of a bytea value (\x…).
func appendByteaText(dst, v []byte) []byte {
	dst = append(dst, '\\', 'x')
	n := len(dst)
	dst = append(dst, make([]byte, hex.EncodedLen(len(v)))...)
	hex.Encode(dst[n:], v)
	return dst
}

// appendByteaLiteral appends a SQL expression for the bytea value v that
// means the same under any standard_conforming_strings and search_path.
func appendByteaLiteral(dst, v []byte) []byte {
	dst = append(dst, "pg_catalog.decode('"...)
	n := len(dst)
	dst = append(dst, make([]byte, hex.EncodedLen(len(v)))...)
	hex.Encode(dst[n:], v)
	return append(dst, "', 'hex')"...)
}

// decodeByteaText decodes bytea in its text output form: hex (\x…, the
// default) or escape (bytea_output = 'escape'). It appends to dst.
func decodeByteaText(dst, src []byte) ([]byte, error) {
	if len(src) >= 2 && src[0] == '\\' && src[1] == 'x' {
		src = src[2:]
		if len(src)%2 != 0 {
			return dst, errBadBytea
		}
		n := len(dst)
		dst = append(dst, make([]byte, len(src)/2)...)
		if _, err := hex.Decode(dst[n:], src); err != nil {
			return dst[:n], errBadBytea
		}
		return dst, nil
	}
	for i := 0; i < len(src); i++ {
		c := src[i]
		if c != '\\' {
			dst = append(dst, c)
			continue
		}
		switch {
		case i+1 < len(src) && src[i+1] == '\\':
			dst = append(dst, '\\')
			i++
		case i+3 < len(src) && isOctal(src[i+1]) && isOctal(src[i+2]) && isOctal(src[i+3]):
			dst = append(dst, (src[i+1]-'0')<<6|(src[i+2]-'0')<<3|(src[i+3]-'0'))
			i += 3
		default:
			return dst, errBadBytea
		}
	}
	return dst, nil
}

var errBadBytea = errors.New("invalid bytea text")

func isOctal(c byte) bool { return c >= '0' && c <= '7' }

// formatOf returns the format code of item i given a message's format
// list: none means text, one applies to all, otherwise one per item.
func formatOf(formats []int16, i int) int16 {
	switch len(formats) {
	case 0:
		return 0
	case 1:
		return formats[0]
	}
	if i < len(formats) {
		return formats[i]
	}
	return 0
}
