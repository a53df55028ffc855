package proxy

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/pgcloak/pgcloak/crypto/envelope"
	"github.com/pgcloak/pgcloak/pgvalue"
	"github.com/pgcloak/pgcloak/rewrite"
)

// cloakDown is the server→client filter: it rewrites descriptions back to
// the logical types and decrypts the values of encrypted columns.
type cloakDown struct {
	c *cloak

	// cur is the description of the current simple-protocol result.
	cur *rowDesc
	// stmtIdx counts the completed statements of the current Query, to
	// find the statement of its plan a result belongs to.
	stmtIdx int
	// rows counts the rows of the current result (for the audit).
	rows int64
	// muted: pgcloak failed the current cycle (a value could not be
	// decrypted) and drops the server's answers until ReadyForQuery.
	muted bool

	env, plain []byte // scratch
}

var _ frameFilter = (*cloakDown)(nil)

func newCloakDown(c *cloak) *cloakDown { return &cloakDown{c: c} }

func (d *cloakDown) wants(typ byte) bool {
	switch typ {
	case '1', '2', '3', 't', 'T', 'n', 'D', 'C', 's', 'I', 'E', 'Z':
		return true
	}
	return false
}

func (d *cloakDown) filter(frame, out []byte) ([]byte, error) {
	typ := frame[0]
	e, ok := d.c.q.peek()
	if !ok {
		// Nothing is owed: an unsolicited message (e.g. a FATAL error
		// before the server closes the connection).
		return out, errKeep
	}
	hide := e.internal || d.muted
	switch typ {
	case 'Z':
		return d.ready(frame, out), nil
	case 'E':
		return d.serverError(frame, out, e), nil
	case '1', '2', '3':
		if e.kind != answeredBy(typ) {
			return out, d.confused(typ, e)
		}
		if typ == '1' && e.st != nil {
			e.st.state.CompareAndSwap(stmtPending, stmtOK)
		}
		d.c.q.pop()
	case 't':
		if e.kind != pendDescribeStmt {
			return out, d.confused(typ, e)
		}
		if !hide {
			return d.paramDescription(frame, out, e.st)
		}
		return out, nil
	case 'T':
		desc, rewritten, err := d.rowDescription(frame)
		if err != nil {
			return out, err
		}
		switch e.kind {
		case pendDescribeStmt:
			if e.st != nil {
				e.st.fields = desc
			}
			d.c.q.pop()
		case pendDescribePortal:
			e.p.fields = desc
			d.c.q.pop()
		case pendQuery:
			d.cur, d.rows = desc, 0
		default:
			return out, d.confused(typ, e)
		}
		if hide {
			return out, nil
		}
		if desc.denied != "" && e.kind != pendDescribeStmt {
			return d.fail(out, sqlstateInsufficientPriv, "pgcloak: permission denied for plaintext of encrypted column "+desc.denied), nil
		}
		if &rewritten[0] == &frame[0] {
			return out, errKeep
		}
		return append(out, rewritten...), nil
	case 'n':
		switch e.kind {
		case pendDescribeStmt:
			if e.st != nil {
				e.st.fields = &rowDesc{}
			}
		case pendDescribePortal:
			e.p.fields = &rowDesc{}
		default:
			return out, d.confused(typ, e)
		}
		d.c.q.pop()
	case 'D':
		var desc *rowDesc
		switch e.kind {
		case pendExecute:
			desc = d.portalDesc(e.p)
		case pendQuery:
			desc = d.cur
		default:
			return out, d.confused(typ, e)
		}
		if hide {
			return out, nil
		}
		if desc == nil || !desc.active {
			if desc != nil && len(desc.audited) > 0 {
				d.rows++
			}
			return out, errKeep
		}
		d.rows++
		return d.dataRow(frame, out, desc)
	case 'C', 's', 'I':
		if typ == 'C' {
			d.noticeDDL(frame)
		}
		switch e.kind {
		case pendExecute:
			if typ != 's' {
				var plan *rewrite.Plan
				if e.p.st != nil {
					plan = e.p.st.plan
				}
				d.audit(frame, d.portalDesc(e.p), plan, 0)
			}
			d.c.q.pop()
		case pendQuery:
			d.audit(frame, d.cur, e.plan, d.stmtIdx)
			d.stmtIdx++
			d.cur = nil
		default:
			if e.kind != pendRefusal {
				return out, d.confused(typ, e)
			}
			d.c.q.pop()
		}
	}
	if hide {
		return out, nil
	}
	return append(out, frame...), nil
}

// answeredBy returns the pending kind that a completion message answers.
func answeredBy(typ byte) uint8 {
	switch typ {
	case '1':
		return pendParse
	case '2':
		return pendBind
	}
	return pendClose
}

// confused ends the session when the server's answers do not match what
// pgcloak forwarded: from here on it could not tell what a value is.
func (d *cloakDown) confused(typ byte, e pending) error {
	return newError(ErrProtocolViolation, "", fmt.Errorf("server sent %q while pgcloak expected the answer to pending kind %d", typ, e.kind))
}

// ready handles ReadyForQuery: the end of a cycle.
func (d *cloakDown) ready(frame, out []byte) []byte {
	internal := false
	for {
		e, ok := d.c.q.peek()
		if !ok {
			break
		}
		d.c.q.pop()
		if e.kind == pendSync || e.kind == pendQuery {
			internal = e.internal
			break
		}
	}
	d.cur, d.stmtIdx, d.rows = nil, 0, 0
	if d.muted {
		d.muted = false
		if len(frame) == 6 && frame[5] == 'T' {
			// The server completed what pgcloak failed: tell the client the
			// transaction failed, and make the server's fail too.
			d.c.poison.Store(true)
			return append(out, 'Z', 0, 0, 0, 5, 'E')
		}
	}
	if internal {
		return out
	}
	return append(out, frame...)
}

// serverError handles an ErrorResponse from the server.
func (d *cloakDown) serverError(frame, out []byte, e pending) []byte {
	hide := e.internal || d.muted
	switch e.kind {
	case pendQuery:
		d.cur = nil // the rest of the Query is skipped; ReadyForQuery follows
	case pendSync:
		// e.g. a deferred constraint failing at the implicit commit
	default:
		// The server now skips everything until Sync.
		for {
			e, ok := d.c.q.peek()
			if !ok || e.kind == pendSync || e.kind == pendQuery {
				break
			}
			if e.kind == pendParse && e.st != nil {
				e.st.state.CompareAndSwap(stmtPending, stmtFailed)
			}
			d.c.q.pop()
		}
		hide = d.muted // an error of an injected message concerns the client too
	}
	if hide {
		return out
	}
	return append(out, frame...)
}

// fail sends the client an ERROR in place of the current message and
// drops the server's answers until ReadyForQuery.
func (d *cloakDown) fail(out []byte, code, msg string) []byte {
	d.muted = true
	d.c.s.log.Warn().Str("sqlstate", code).Str("error", msg).Msg("result refused")
	return appendErrorResponse(out, code, msg, "")
}

// portalDesc returns the description of a portal's rows, nil if unknown.
func (d *cloakDown) portalDesc(p *portalInfo) *rowDesc {
	if p.fields == nil && p.st != nil && p.st.fields != nil {
		p.fields = p.st.fields.withFormats(p.resultFormats)
	}
	return p.fields
}

// paramDescription rewrites the types of encrypted parameters from bytea
// back to what the client declared, or to the column's logical type.
func (d *cloakDown) paramDescription(frame, out []byte, st *stmtInfo) ([]byte, error) {
	if st == nil || !st.encrypts {
		return append(out, frame...), nil
	}
	body := frame[5:]
	if len(body) < 2 || len(body) != 2+4*int(binary.BigEndian.Uint16(body)) {
		return out, errBadMessage
	}
	at := len(out)
	out = append(out, frame...)
	for i, ci := range st.params {
		if ci == nil || 2+4*i+4 > len(body) {
			continue
		}
		oid := ci.typ.OID()
		if i < len(st.clientOIDs) && st.clientOIDs[i] != 0 {
			oid = st.clientOIDs[i]
		}
		binary.BigEndian.PutUint32(out[at+5+2+4*i:], oid)
	}
	return out, nil
}

// rowDescription parses a RowDescription, decides what to do with each
// column, and returns the description and the message for the client
// (rewritten when a column's type changes).
func (d *cloakDown) rowDescription(frame []byte) (*rowDesc, []byte, error) {
	body := frame[5:]
	r := wreader{b: body}
	n := int(uint16(r.int16()))
	if r.bad || n < 0 {
		return nil, nil, errBadMessage
	}
	type field struct{ off, tableOID, attnum, typeOID int }
	fields := make([]field, n)
	for i := range fields {
		r.cstring()
		off := len(body) - len(r.b)
		tableOID := uint32(r.int32())
		attnum := uint16(r.int16())
		typeOID := uint32(r.int32())
		r.bytes(8) // typlen, typmod, format
		if r.bad {
			return nil, nil, errBadMessage
		}
		fields[i] = field{off, int(tableOID), int(attnum), int(typeOID)}
	}
	if len(r.b) != 0 {
		return nil, nil, errBadMessage
	}
	desc := &rowDesc{cols: make([]descCol, n)}
	var v *catView
	refreshed := false
	changed := false
	for i, f := range fields {
		desc.cols[i].format = int16(binary.BigEndian.Uint16(body[f.off+16:]))
		if f.tableOID == 0 || f.typeOID != byteaOID {
			continue
		}
		if v == nil {
			var err error
			if v, err = d.c.downView(); err != nil {
				d.c.s.log.Warn().Err(err).Msg("catalog unavailable; results pass as stored")
				return &rowDesc{cols: desc.cols}, frame, nil
			}
		}
		ci := v.lookup(uint32(f.tableOID), uint16(f.attnum))
		if ci == nil && !refreshed && !v.cat.KnownTable(uint32(f.tableOID)) {
			refreshed = true // a table created after the snapshot?
			if nv, err := d.c.refreshView(); err == nil {
				v = nv
				ci = v.lookup(uint32(f.tableOID), uint16(f.attnum))
			}
		}
		if ci == nil || !ci.encrypted || !ci.bytea || ci.typErr != nil {
			continue
		}
		c := &desc.cols[i]
		c.info = ci
		switch {
		case ci.allowed(d.c.role):
			c.mode = modeDecrypt
			if ci.policy.AuditReads {
				desc.audited = append(desc.audited, ci.name)
			}
		default:
			switch ci.onDenied() {
			case DeniedNull:
				c.mode = modeNull
			case DeniedMask:
				c.mode = modeMask
			case DeniedError:
				c.mode = modeError
				if desc.denied == "" {
					desc.denied = ci.name
				}
			default:
				c.mode = modeCipher
			}
		}
		if c.mode != modeCipher {
			desc.active = true
			changed = true
		}
	}
	if !changed {
		return desc, frame, nil
	}
	out := append([]byte(nil), frame...)
	for i, f := range fields {
		c := desc.cols[i]
		if c.info == nil || c.mode == modeCipher {
			continue
		}
		p := out[5+f.off:]
		binary.BigEndian.PutUint32(p[6:], c.info.typ.OID())
		binary.BigEndian.PutUint16(p[10:], uint16(c.info.typ.Size()))
		binary.BigEndian.PutUint32(p[12:], uint32(c.info.typ.Modifier()))
	}
	return desc, out, nil
}

// dataRow decrypts the encrypted columns of one DataRow.
func (d *cloakDown) dataRow(frame, out []byte, desc *rowDesc) ([]byte, error) {
	body := frame[5:]
	r := wreader{b: body}
	n := int(uint16(r.int16()))
	if r.bad || n != len(desc.cols) {
		return out, newError(ErrProtocolViolation, "", fmt.Errorf("DataRow with %d columns for a description of %d", n, len(desc.cols)))
	}
	start := len(out)
	out, at := startMsg(out, 'D')
	out = appendInt16(out, int16(n))
	for i := 0; i < n; i++ {
		l := int(r.int32())
		var val []byte
		if l >= 0 {
			val = r.bytes(l)
		}
		if r.bad {
			return out[:start], errBadMessage
		}
		c := &desc.cols[i]
		if l < 0 || c.mode == modePlain || c.mode == modeCipher {
			out = appendInt32(out, int32(l))
			out = append(out, val...)
			continue
		}
		switch c.mode {
		case modeNull:
			out = appendInt32(out, -1)
			continue
		case modeError:
			return d.fail(out[:start], sqlstateInsufficientPriv, "pgcloak: permission denied for plaintext of encrypted column "+c.info.name), nil
		}
		lenAt := len(out)
		out = appendInt32(out, 0)
		var err error
		if c.mode == modeMask {
			out, err = pgvalue.Output(c.info.typ, c.format, pgvalue.Mask(c.info.typ), out)
		} else {
			out, err = d.decrypt(out, c, val)
		}
		if err != nil {
			var de *decryptError
			if errors.As(err, &de) {
				d.c.srv.stats.decryptFailures.Add(1)
				return d.fail(out[:start], de.code, de.msg), nil
			}
			return out[:start], err
		}
		binary.BigEndian.PutUint32(out[lenAt:], uint32(len(out)-lenAt-4))
	}
	if len(r.b) != 0 {
		return out[:start], errBadMessage
	}
	return finishMsg(out, at), nil
}

// decryptError is a value that cannot be delivered; the statement fails.
type decryptError struct{ code, msg string }

func (e *decryptError) Error() string { return e.code + ": " + e.msg }

// decrypt appends the plaintext of one stored value in the client's format.
func (d *cloakDown) decrypt(out []byte, c *descCol, val []byte) ([]byte, error) {
	ci := c.info
	env := val
	if c.format != pgvalue.BinaryFormat {
		var err error
		if d.env, err = decodeByteaText(d.env[:0], val); err != nil {
			return out, &decryptError{sqlstateDataCorrupted, "pgcloak: value of encrypted column " + ci.name + " is not a valid bytea"}
		}
		env = d.env
	}
	h, err := envelope.ParseHeader(env)
	if err != nil {
		return out, &decryptError{sqlstateDataCorrupted, "pgcloak: value of encrypted column " + ci.name + " is not a pgcloak ciphertext"}
	}
	key, err := d.c.srv.enc.Keys.Key(d.c.s.stopCtx, h.KeyringID, h.KeyVersion)
	if err != nil {
		d.c.s.log.Warn().Err(err).Str("column", ci.name).Uint32("keyring", h.KeyringID).Uint32("version", h.KeyVersion).Msg("decryption key unavailable")
		what := "is unavailable"
		if errors.Is(err, ErrKeyDestroyed) {
			what = "was destroyed"
		}
		return out, &decryptError{sqlstateSystemError, fmt.Sprintf("pgcloak: the key of encrypted column %s (key ring %d, version %d) %s", ci.name, h.KeyringID, h.KeyVersion, what)}
	}
	d.plain, err = key.Open(d.plain[:0], env, ci.context)
	if err != nil {
		return out, &decryptError{sqlstateDataCorrupted, fmt.Sprintf("pgcloak: value of encrypted column %s (key ring %d, version %d) failed authentication", ci.name, h.KeyringID, h.KeyVersion)}
	}
	d.c.srv.stats.decrypted.Add(1)
	out, err = pgvalue.Output(ci.typ, c.format, d.plain, out)
	clear(d.plain)
	if err != nil {
		return out, &decryptError{sqlstateDataCorrupted, fmt.Sprintf("pgcloak: decrypted value of column %s (key ring %d, version %d) is not a valid %s", ci.name, h.KeyringID, h.KeyVersion, ci.typ)}
	}
	return out, nil
}

// audit records a completed statement that returned audited columns.
func (d *cloakDown) audit(complete []byte, desc *rowDesc, plan *rewrite.Plan, idx int) {
	rows := d.rows
	d.rows = 0
	if desc == nil || len(desc.audited) == 0 || d.muted {
		return
	}
	a := ReadAudit{Conn: d.c.s.id, Role: d.c.role, Database: d.c.db, Application: d.c.app,
		Columns: desc.audited, Rows: rows}
	if plan != nil && idx < len(plan.Statements) {
		a.Fingerprint = plan.Statements[idx].Fingerprint
	}
	if complete[0] == 'C' {
		tag := complete[5 : len(complete)-1]
		if i := bytes.IndexByte(tag, ' '); i >= 0 {
			tag = tag[:i]
		}
		a.Command = string(tag)
	}
	d.c.srv.enc.Auditor.AuditRead(a)
}

// noticeDDL invalidates the catalog after statements that may move
// configured columns.
func (d *cloakDown) noticeDDL(frame []byte) {
	tag := frame[5:]
	for _, p := range ddlTags {
		if bytes.HasPrefix(tag, p) {
			d.c.srv.enc.Catalogs.Invalidate(d.c.db)
			return
		}
	}
}

var ddlTags = [][]byte{[]byte("CREATE TABLE"), []byte("ALTER TABLE"), []byte("DROP TABLE"),
	[]byte("ALTER SCHEMA"), []byte("DROP SCHEMA"), []byte("CREATE SCHEMA")}
