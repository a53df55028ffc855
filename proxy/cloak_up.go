package proxy

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"strings"

	"github.com/pgcloak/pgcloak/pgvalue"
	"github.com/pgcloak/pgcloak/rewrite"
)

// cloakUp is the client→server filter: it plans statements that mention
// configured tables, encrypts literals and bind values, and records what
// the server will answer.
type cloakUp struct {
	c       *cloak
	stmts   map[string]*stmtInfo
	portals map[string]*portalInfo

	// skipping: pgcloak refused a message of the current extended-protocol
	// cycle, so the server skips everything until Sync; pgcloak drops
	// those messages itself, so that no value of a refused statement
	// reaches the server.
	skipping bool
	// describeDue is a statement whose result description pgcloak needs
	// and the client has not asked for (yet): a Describe is injected before
	// the next message unless that message is the client's own Describe.
	describeDue *stmtInfo

	plain, sealed []byte // scratch
}

var _ frameFilter = (*cloakUp)(nil)

func newCloakUp(c *cloak) *cloakUp {
	return &cloakUp{c: c, stmts: map[string]*stmtInfo{}, portals: map[string]*portalInfo{}}
}

func (u *cloakUp) wants(typ byte) bool {
	switch typ {
	case 'Q', 'P', 'B', 'D', 'E', 'C', 'S', 'F', 'H':
		return true
	}
	return false
}

// refusal is a statement pgcloak will not send as it is.
type refusal struct {
	code, msg, hint string
}

func (r *refusal) Error() string { return r.code + ": " + r.msg }

func refusalOf(err error) *refusal {
	var rf *refusal
	if errors.As(err, &rf) {
		return rf
	}
	var rr *rewrite.Refusal
	if errors.As(err, &rr) {
		return &refusal{code: sqlstateFeatureUnsupported,
			msg:  fmt.Sprintf("pgcloak: %s is not supported on encrypted column %s", rr.Construct, rr.Column),
			hint: "Encrypted columns can be stored, returned, tested with IS NULL and counted; the server cannot compare, sort or compute on them."}
	}
	var ve *pgvalue.Error
	if errors.As(err, &ve) {
		return &refusal{code: ve.SQLState, msg: "pgcloak: " + ve.Msg}
	}
	return &refusal{code: sqlstateInternalError, msg: "pgcloak: internal error while planning the statement"}
}

func (u *cloakUp) filter(frame, out []byte) ([]byte, error) {
	n0 := len(out)
	out, err := u.filter1(frame, out)
	if err == nil && len(out) == n0+len(frame) && len(frame) > 0 && &out[n0] == &frame[0] {
		return out[:n0], errKeep
	}
	return out, err
}

// forward is what the handlers return to pass a frame on unchanged.
func forward(out, frame []byte) ([]byte, error) {
	if len(out) == 0 {
		return frame, nil // recognised by filter as "unchanged"
	}
	return append(out, frame...), nil
}

func (u *cloakUp) filter1(frame, out []byte) ([]byte, error) {
	typ := frame[0]
	body := frame[5:]
	if u.c.poison.Swap(false) {
		out = appendQuery(out, raiseSQL("25P02", "current transaction is aborted, commands ignored until end of transaction block", ""))
		u.c.q.push(pending{kind: pendQuery, internal: true})
	}
	if u.describeDue != nil && !(typ == 'D' && len(body) > 1 && body[0] == 'S' && u.stmts[string(body[1:len(body)-1])] == u.describeDue) {
		out = appendDescribe(out, 'S', u.describeDue.name)
		u.c.q.push(pending{kind: pendDescribeStmt, internal: true, st: u.describeDue})
		u.describeDue = nil
	}
	if u.skipping && typ != 'S' {
		if typ == 'H' {
			return forward(out, frame)
		}
		return out, nil
	}
	switch typ {
	case 'Q':
		return u.query(frame, body, out)
	case 'P':
		return u.parse(frame, body, out)
	case 'B':
		return u.bind(frame, body, out)
	case 'D':
		return u.describe(frame, body, out)
	case 'E':
		return u.execute(frame, body, out)
	case 'C':
		return u.close(frame, body, out)
	case 'S':
		u.skipping = false
		u.c.q.push(pending{kind: pendSync})
	case 'F':
		u.c.q.push(pending{kind: pendQuery})
	}
	return forward(out, frame)
}

// plan returns the plan for sql, nil when it names no configured table.
func (u *cloakUp) plan(sql string) (*rewrite.Plan, *catView, error) {
	v, err := u.c.view()
	if err != nil {
		u.c.s.log.Warn().Err(err).Msg("catalog unavailable")
		return nil, nil, &refusal{code: sqlstateSystemError, msg: "pgcloak: the catalog of encrypted columns is unavailable"}
	}
	if !rewrite.MentionsConfigured(sql, v) {
		return nil, v, nil
	}
	p, err := u.c.srv.plans.Analyze(sql, v, u.c.lastPath)
	if err != nil {
		var pe *rewrite.ParseError
		if errors.As(err, &pe) {
			return nil, v, nil // the server reports the syntax error itself
		}
		return nil, v, err
	}
	if err := u.check(p, v); err != nil {
		return nil, v, err
	}
	return p, v, nil
}

// check applies what the rewriter does not know: blind indexes are not
// implemented yet, and reads by roles whose policy is on_denied = error.
func (u *cloakUp) check(p *rewrite.Plan, v *catView) error {
	for _, pa := range p.Params {
		if pa.Kind == rewrite.KindBlindIndex {
			return &refusal{code: sqlstateFeatureUnsupported, msg: "pgcloak: equality search on encrypted column " + pa.Column.QualifiedName() + " is not implemented yet"}
		}
	}
	for _, la := range p.Literals {
		if la.Kind == rewrite.KindBlindIndex {
			return &refusal{code: sqlstateFeatureUnsupported, msg: "pgcloak: equality search on encrypted column " + la.Column.QualifiedName() + " is not implemented yet"}
		}
	}
	for _, s := range p.Statements {
		for _, rc := range s.Reads {
			ci := v.column(rc)
			if ci != nil && ci.encrypted && !ci.allowed(u.c.role) && ci.onDenied() == DeniedError {
				return deniedRefusal(ci.name)
			}
		}
	}
	return nil
}

func deniedRefusal(col string) *refusal {
	return &refusal{code: sqlstateInsufficientPriv, msg: "pgcloak: permission denied for plaintext of encrypted column " + col}
}

// query handles a simple-protocol Query.
func (u *cloakUp) query(frame, body, out []byte) ([]byte, error) {
	sqlb, ok := bytes.CutSuffix(body, []byte{0})
	if !ok || bytes.IndexByte(sqlb, 0) >= 0 {
		return out, errBadMessage
	}
	sql := string(sqlb)
	p, v, err := u.plan(sql)
	if err == nil && p != nil && len(p.Literals) > 0 {
		var text []byte
		text, err = u.spliceLiterals(sql, p, v)
		if err == nil {
			u.c.q.push(pending{kind: pendQuery, plan: p})
			return appendQuery(out, string(text)), nil
		}
	}
	if err != nil {
		rf := u.refusal(err)
		u.c.q.push(pending{kind: pendQuery})
		return appendQuery(out, raiseSQL(rf.code, rf.msg, rf.hint)), nil
	}
	u.c.q.push(pending{kind: pendQuery, plan: p})
	return forward(out, frame)
}

// spliceLiterals returns sql with every planned literal replaced by the
// bytea expression of its ciphertext.
func (u *cloakUp) spliceLiterals(sql string, p *rewrite.Plan, v *catView) ([]byte, error) {
	text := make([]byte, 0, len(sql)+len(p.Literals)*96)
	last := 0
	for _, la := range p.Literals {
		ci := v.column(la.Column)
		if ci == nil {
			return nil, fmt.Errorf("proxy: planned column %s is not in the catalog", la.Column.QualifiedName())
		}
		env, err := u.seal(ci, pgvalue.TextFormat, []byte(la.Value), 0)
		if err != nil {
			return nil, err
		}
		text = append(text, sql[last:la.Span.Offset]...)
		text = appendByteaLiteral(text, env)
		last = la.Span.End()
	}
	return append(text, sql[last:]...), nil
}

// seal encrypts one value of column ci given in format (of the client's
// declared type clientOID, 0 = the column's logical type) and returns the
// envelope (valid until the next call).
func (u *cloakUp) seal(ci *colInfo, format int16, value []byte, clientOID uint32) ([]byte, error) {
	if ci.typErr != nil {
		return nil, ci.typErr
	}
	var err error
	u.plain, err = canonicalFrom(u.plain[:0], ci.typ, format, value, clientOID)
	if err != nil {
		return nil, err
	}
	// The key source bounds its own loads (keycache LoadTimeout); the
	// session's context ends the wait when the session stops. A timer per
	// value would cost more than the sealing (bench: 60 % of the step).
	key, err := u.c.srv.enc.Keys.EncryptionKey(u.c.s.stopCtx, ci.class)
	if err != nil {
		u.c.s.log.Warn().Err(err).Str("classification", ci.class).Msg("no encryption key")
		return nil, &refusal{code: sqlstateSystemError, msg: "pgcloak: the encryption key of classification " + ci.class + " is unavailable"}
	}
	u.sealed, err = key.Seal(u.sealed[:0], nil, ci.context, u.plain)
	clear(u.plain)
	if err != nil {
		return nil, err
	}
	u.c.srv.enc.Keys.Encrypted(key, 1)
	u.c.srv.stats.encrypted.Add(1)
	return u.sealed, nil
}

// canonicalFrom converts a client value to the canonical plaintext of t.
// A value sent as another type than t (the client declared its own
// parameter type) is read as that type first, then assigned to t through
// its text form, as PostgreSQL's assignment does.
func canonicalFrom(dst []byte, t pgvalue.Type, format int16, value []byte, clientOID uint32) ([]byte, error) {
	if clientOID == 0 || clientOID == t.OID() || clientOID == unknownOID {
		return pgvalue.AppendCanonical(dst, t, format, value)
	}
	ct, ok := typeOfOID(clientOID)
	if !ok {
		return dst, &pgvalue.Error{SQLState: "42804", Msg: fmt.Sprintf("parameter of type OID %d cannot be stored in an encrypted column of type %s", clientOID, t)}
	}
	text, err := pgvalue.Canonical(ct, format, value)
	if err != nil {
		return dst, err
	}
	defer clear(text)
	return pgvalue.AppendCanonical(dst, t, pgvalue.TextFormat, text)
}

const unknownOID = 705

// typeOfOID returns the unmodified logical type of a type OID.
func typeOfOID(oid uint32) (pgvalue.Type, bool) {
	name, ok := map[uint32]string{
		16: "bool", 17: "bytea", 20: "int8", 21: "int2", 23: "int4", 25: "text", 114: "json",
		700: "float4", 701: "float8", 1043: "varchar", 1082: "date", 1114: "timestamp",
		1184: "timestamptz", 1700: "numeric", 2950: "uuid", 3802: "jsonb",
	}[oid]
	if !ok {
		return pgvalue.Type{}, false
	}
	t, err := pgvalue.ParseType(name)
	return t, err == nil
}

// refusal turns err into what the client is told, counts it and logs it.
// An internal error's cause is logged too (it names columns and types,
// never values); the client gets XX000 only.
func (u *cloakUp) refusal(err error) *refusal {
	rf := refusalOf(err)
	u.c.srv.stats.refused.Add(1)
	ev := u.c.s.log.Info()
	if rf.code == sqlstateInternalError {
		ev = u.c.s.log.Warn().Err(err)
	}
	ev.Str("sqlstate", rf.code).Str("refusal", rf.msg).Msg("statement refused")
	return rf
}

// refuse replaces the current extended-protocol message with a statement
// that fails on the server with the refusal, and drops the rest of the
// cycle (the server would skip it).
func (u *cloakUp) refuse(out []byte, err error) []byte {
	rf := u.refusal(err)
	out = appendParse(out, "", raiseSQL(rf.code, rf.msg, rf.hint), nil)
	u.c.q.push(pending{kind: pendParse, internal: true})
	out = appendBindNoParams(out, "")
	u.c.q.push(pending{kind: pendBind, internal: true})
	out = appendExecute(out, "")
	u.c.q.push(pending{kind: pendRefusal})
	delete(u.stmts, "")
	delete(u.portals, "")
	u.skipping = true
	return out
}

// parse handles Parse.
func (u *cloakUp) parse(frame, body, out []byte) ([]byte, error) {
	r := wreader{b: body}
	name := string(r.cstring())
	query := r.cstring()
	n := int(uint16(r.int16()))
	if r.bad || n < 0 || len(r.b) != 4*n {
		return out, errBadMessage
	}
	oids := make([]uint32, n)
	for i := range oids {
		oids[i] = binary.BigEndian.Uint32(r.b[4*i:])
	}
	sql := string(query)
	p, v, err := u.plan(sql)
	if err != nil {
		return u.refuse(out, err), nil
	}
	st := &stmtInfo{name: name, plan: p, view: v, clientOIDs: oids}
	if name != "" {
		if old := u.stmts[name]; old != nil {
			switch old.state.Load() {
			case stmtOK:
				// The server will refuse the duplicate name and keep old.
				u.c.q.push(pending{kind: pendParse, st: st})
				return u.forwardParse(frame, out, st, sql)
			case stmtPending:
				st.ambiguous = true // which one the server keeps is not known yet
			}
		}
	}
	u.stmts[name] = st
	if p != nil {
		st.describe = decrypts(p)
	} else {
		st.describe = mayReturnStored(sql)
	}
	u.c.q.push(pending{kind: pendParse, st: st})
	if st.describe {
		u.describeDue = st
	}
	return u.forwardParse(frame, out, st, sql)
}

// forwardParse appends the Parse for st: unchanged when nothing is
// encrypted, else with literals encrypted and encrypted parameters typed
// bytea.
func (u *cloakUp) forwardParse(frame, out []byte, st *stmtInfo, sql string) ([]byte, error) {
	p := st.plan
	if p == nil || (len(p.Params) == 0 && len(p.Literals) == 0) {
		return forward(out, frame)
	}
	if len(p.Literals) > 0 {
		text, err := u.spliceLiterals(sql, p, st.view)
		if err != nil {
			return u.refuse(out, err), nil
		}
		sql = string(text)
	}
	oids := st.clientOIDs
	if len(p.Params) > 0 {
		maxIdx := p.Params[len(p.Params)-1].Index
		st.params = make([]*colInfo, maxIdx)
		if len(oids) < maxIdx {
			oids = append(append([]uint32(nil), oids...), make([]uint32, maxIdx-len(oids))...)
		} else {
			oids = append([]uint32(nil), oids...)
		}
		for _, pa := range p.Params {
			ci := st.view.column(pa.Column)
			if ci == nil || !ci.encrypted {
				continue
			}
			st.params[pa.Index-1] = ci
			st.encrypts = true
			oids[pa.Index-1] = byteaOID
		}
	}
	return appendParse(out, st.name, sql, oids), nil
}

const byteaOID = 17

// decrypts reports whether a plan returns encrypted columns.
func decrypts(p *rewrite.Plan) bool {
	for _, s := range p.Statements {
		if s.Decrypts {
			return true
		}
	}
	return false
}

// mayReturnStored reports whether a statement that names no configured
// table can still return rows of one: FETCH from a cursor and EXECUTE of a
// prepared statement.
func mayReturnStored(sql string) bool {
	i := 0
	for i < len(sql) && (sql[i] == ' ' || sql[i] == '\t' || sql[i] == '\n' || sql[i] == '\r' || sql[i] == '(') {
		i++
	}
	w := sql[i:min(len(sql), i+7)]
	return len(w) >= 5 && (strings.EqualFold(w[:5], "fetch") || (len(w) == 7 && strings.EqualFold(w, "execute")))
}

// ambiguousRefusal refuses a statement name that was prepared twice before
// the server confirmed the first: which one the server keeps is unknown.
func ambiguousRefusal(name string) *refusal {
	return &refusal{code: "26000", msg: "pgcloak: prepared statement \"" + name + "\" was prepared twice in one pipeline; prepare it once"}
}

// bind handles Bind: encrypted parameters are sealed, in the format the
// client sent them (binary: the envelope's bytes; text: bytea hex).
func (u *cloakUp) bind(frame, body, out []byte) ([]byte, error) {
	r := wreader{b: body}
	portal := r.cstring()
	st := u.stmts[string(r.cstring())]
	if r.bad {
		return out, errBadMessage
	}
	if st != nil && st.ambiguous {
		return u.refuse(out, ambiguousRefusal(st.name)), nil
	}
	if st != nil && !st.encrypts && !st.describe {
		// Nothing to seal, and its results hold no encrypted column: the
		// formats and values need not be read.
		p := &portalInfo{st: st}
		u.portals[string(portal)] = p
		u.c.q.push(pending{kind: pendBind, p: p})
		return forward(out, frame)
	}
	nf := int(uint16(r.int16()))
	if r.bad || nf < 0 || len(r.b) < 2*nf {
		return out, errBadMessage
	}
	formats := make([]int16, nf)
	for i := range formats {
		formats[i] = r.int16()
	}
	paramsStart := len(body) - len(r.b)
	np := int(uint16(r.int16()))
	if r.bad || np < 0 {
		return out, errBadMessage
	}
	type span struct{ off, n int }
	values := make([]span, np)
	for i := range values {
		l := int(r.int32())
		off := len(body) - len(r.b)
		if l >= 0 {
			r.bytes(l)
		}
		values[i] = span{off, l}
	}
	nr := int(uint16(r.int16()))
	if r.bad || nr < 0 || len(r.b) != 2*nr {
		return out, errBadMessage
	}
	p := &portalInfo{st: st, resultFormats: make([]int16, nr)}
	for i := range p.resultFormats {
		p.resultFormats[i] = r.int16()
	}
	u.portals[string(portal)] = p
	if st == nil || !st.encrypts {
		u.c.q.push(pending{kind: pendBind, p: p})
		return forward(out, frame)
	}
	// Rebuild: header up to the parameters unchanged, values re-encoded.
	msg, at := startMsg(out, 'B')
	msg = append(msg, body[:paramsStart]...)
	msg = appendInt16(msg, int16(np))
	for i, v := range values {
		var ci *colInfo
		if i < len(st.params) {
			ci = st.params[i]
		}
		if v.n < 0 || ci == nil {
			msg = appendInt32(msg, int32(v.n))
			if v.n > 0 {
				msg = append(msg, body[v.off:v.off+v.n]...)
			}
			continue
		}
		var clientOID uint32
		if i < len(st.clientOIDs) {
			clientOID = st.clientOIDs[i]
		}
		f := formatOf(formats, i)
		env, err := u.seal(ci, f, body[v.off:v.off+v.n], clientOID)
		if err != nil {
			return u.refuse(out, err), nil
		}
		lenAt := len(msg)
		msg = appendInt32(msg, 0)
		if f == pgvalue.BinaryFormat {
			msg = append(msg, env...)
		} else {
			msg = appendByteaText(msg, env)
		}
		binary.BigEndian.PutUint32(msg[lenAt:], uint32(len(msg)-lenAt-4))
	}
	msg = append(msg, body[len(body)-2-2*nr:]...)
	u.c.q.push(pending{kind: pendBind, p: p})
	return finishMsg(msg, at), nil
}

// describe handles Describe.
func (u *cloakUp) describe(frame, body, out []byte) ([]byte, error) {
	if len(body) < 2 || body[len(body)-1] != 0 {
		return out, errBadMessage
	}
	name := string(body[1 : len(body)-1])
	switch body[0] {
	case 'S':
		st := u.stmts[name]
		if st != nil && st.ambiguous {
			return u.refuse(out, ambiguousRefusal(name)), nil
		}
		if st == nil {
			// Prepared without pgcloak seeing it (SQL PREPARE): the
			// description is still needed to decrypt its results.
			st = &stmtInfo{name: name, describe: true}
			st.state.Store(stmtOK)
			u.stmts[name] = st
		}
		u.c.q.push(pending{kind: pendDescribeStmt, st: st})
	case 'P':
		p := u.portals[name]
		if p == nil {
			p = &portalInfo{}
			u.portals[name] = p
		}
		p.describedUp = true
		u.c.q.push(pending{kind: pendDescribePortal, p: p})
	default:
		return out, errBadMessage
	}
	return forward(out, frame)
}

// execute handles Execute. A portal whose result description pgcloak does
// not know (a cursor opened with DECLARE, a statement prepared with SQL
// PREPARE) is described first.
func (u *cloakUp) execute(frame, body, out []byte) ([]byte, error) {
	i := bytes.IndexByte(body, 0)
	if i < 0 || len(body) != i+5 {
		return out, errBadMessage
	}
	p := u.portals[string(body[:i])]
	if p == nil || (p.st == nil && !p.describedUp) {
		name := string(body[:i])
		if p == nil {
			p = &portalInfo{}
			u.portals[name] = p
		}
		p.describedUp = true
		out = appendDescribe(out, 'P', name)
		u.c.q.push(pending{kind: pendDescribePortal, internal: true, p: p})
	}
	u.c.q.push(pending{kind: pendExecute, p: p})
	return forward(out, frame)
}

// close handles Close.
func (u *cloakUp) close(frame, body, out []byte) ([]byte, error) {
	if len(body) < 2 || body[len(body)-1] != 0 {
		return out, errBadMessage
	}
	name := string(body[1 : len(body)-1])
	switch body[0] {
	case 'S':
		delete(u.stmts, name)
	case 'P':
		delete(u.portals, name)
	default:
		return out, errBadMessage
	}
	u.c.q.push(pending{kind: pendClose})
	return forward(out, frame)
}
