package proxy

import (
	"context"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pgcloak/pgcloak/catalog"
	"github.com/pgcloak/pgcloak/pgvalue"
	"github.com/pgcloak/pgcloak/rewrite"
)

// The encryption layer ("cloak"): a pair of frame filters per session that
// apply rewrite plans on the way to the server and decrypt on the way back.
//
// The two directions share a FIFO of the responses the server owes
// (pending): the client→server filter appends one entry per message that
// the server answers (Parse, Bind, Describe, Execute, Close, Sync, Query,
// FunctionCall, and the messages pgcloak injects itself); the server→client
// filter consumes them as the answers arrive, which tells it what each
// RowDescription, ParameterDescription and DataRow belongs to. Statement
// and portal records are created by the client→server side and handed over
// through the queue; their immutable parts are read by both sides, the
// result descriptions only by the server→client side.

// cloakServer is the server-wide state of the encryption layer.
type cloakServer struct {
	enc        *Encryption
	plans      *rewrite.Cache
	keyTimeout time.Duration
	roles      map[string]map[string]bool // classification → roles allowed plaintext
	stats      *counters                  // the Server's

	mu    sync.Mutex
	views map[string]*catView // database → view of its newest catalog snapshot
}

func newCloakServer(enc *Encryption) (*cloakServer, error) {
	if err := enc.validate(); err != nil {
		return nil, err
	}
	size := enc.PlanCacheSize
	if size == 0 {
		size = DefaultPlanCacheSize
	}
	plans, err := rewrite.NewCache(size)
	if err != nil {
		return nil, err
	}
	c := &cloakServer{enc: enc, plans: plans, keyTimeout: enc.KeyTimeout, roles: map[string]map[string]bool{}, views: map[string]*catView{}, stats: &counters{}}
	if c.keyTimeout <= 0 {
		c.keyTimeout = 10 * time.Second
	}
	for name, p := range enc.Policies {
		set := map[string]bool{}
		for _, r := range p.PlaintextRoles {
			set[r] = true
		}
		c.roles[name] = set
	}
	return c, nil
}

// view returns the view of cat, building it once per snapshot.
func (c *cloakServer) view(db string, cat *catalog.Catalog) *catView {
	c.mu.Lock()
	defer c.mu.Unlock()
	if v := c.views[db]; v != nil && v.cat == cat {
		return v
	}
	v := newCatView(cat, c)
	c.views[db] = v
	return v
}

// colInfo is what the encryption layer needs to know about one configured
// column, precomputed per catalog snapshot.
type colInfo struct {
	entry      *catalog.Entry
	name       string // schema.table.column
	context    string // associated data
	typ        pgvalue.Type
	typErr     error // the configured type is not one pgvalue supports (never for a validated config)
	class      string
	encrypted  bool // classification other than public
	bytea      bool // the column is bytea in the database (holds envelopes)
	policy     Policy
	hasPolicy  bool
	plainRoles map[string]bool
}

// allowed reports whether role may read plaintext of the column.
func (ci *colInfo) allowed(role string) bool { return ci.plainRoles[role] }

// onDenied is the column's rule for roles without plaintext access; a
// classification without a policy delivers ciphertext (fail closed).
func (ci *colInfo) onDenied() OnDenied {
	if !ci.hasPolicy {
		return DeniedCiphertext
	}
	return ci.policy.OnDenied
}

// catView adapts one catalog snapshot to rewrite.Catalog and indexes the
// column infos.
type catView struct {
	cat     *catalog.Catalog
	byName  map[string]*colInfo // schema.table.column
	byEntry map[*catalog.Entry]*colInfo
	tables  map[[2]string][]rewrite.Column
	schemas map[string][]string
	all     []string // every schema with a configured table, in configuration order
}

var _ rewrite.Catalog = (*catView)(nil)

func newCatView(cat *catalog.Catalog, srv *cloakServer) *catView {
	v := &catView{cat: cat, byName: map[string]*colInfo{}, byEntry: map[*catalog.Entry]*colInfo{},
		tables: map[[2]string][]rewrite.Column{}, schemas: map[string][]string{}}
	entries := cat.Entries()
	for i := range entries {
		e := &entries[i]
		ci := &colInfo{entry: e, name: e.QualifiedName(), context: e.ContextString(), class: e.Classification,
			encrypted: e.Classification != "public" && e.Classification != "", bytea: e.Bytea()}
		ci.typ, ci.typErr = pgvalue.ParseType(e.Type)
		ci.policy, ci.hasPolicy = srv.enc.Policies[e.Classification]
		ci.plainRoles = srv.roles[e.Classification]
		v.byName[ci.name] = ci
		v.byEntry[e] = ci
		k := [2]string{e.Schema, e.Table}
		if _, ok := v.tables[k]; !ok {
			v.schemas[e.Table] = append(v.schemas[e.Table], e.Schema)
			if !slices.Contains(v.all, e.Schema) {
				v.all = append(v.all, e.Schema)
			}
		}
		v.tables[k] = append(v.tables[k], rewrite.Column{
			Schema: e.Schema, Table: e.Table, Name: e.Column.Column, Context: e.Context,
			Encrypted: ci.encrypted, Search: e.Search == "equality", LogicalType: e.Type,
		})
	}
	return v
}

func (v *catView) Columns(schema, table string) []rewrite.Column {
	return v.tables[[2]string{schema, table}]
}
func (v *catView) Schemas(table string) []string { return v.schemas[table] }
func (v *catView) Generation() uint64            { return v.cat.Generation() }

// column returns the info of a planned column.
func (v *catView) column(c rewrite.Column) *colInfo {
	return v.byName[c.QualifiedName()]
}

// lookup returns the info of the column at (table OID, attnum) of a
// RowDescription, or nil.
func (v *catView) lookup(tableOID uint32, attnum uint16) *colInfo {
	e := v.cat.Lookup(tableOID, attnum)
	if e == nil {
		return nil
	}
	return v.byEntry[e]
}

// searchPath is the path the rewriter resolves unqualified table names
// with: the session's own path (from the startup packet, else PostgreSQL's
// default), then every other schema that has a configured table, so that
// an unqualified name is never missed because pgcloak does not know a
// search_path set later in the session (fail closed: a statement planned
// for a configured table that it does not name sends ciphertext, which the
// server rejects for a column that is not bytea).
func (v *catView) searchPath(session []string) []string {
	out := make([]string, 0, len(session)+len(v.all))
	out = append(out, session...)
	for _, s := range v.all {
		if !slices.Contains(out, s) {
			out = append(out, s)
		}
	}
	return out
}

// startupSearchPath extracts search_path from the startup parameters
// (search_path=… or options=-c search_path=…); PostgreSQL's default
// otherwise.
func startupSearchPath(params map[string]string) []string {
	sp, ok := params["search_path"]
	if !ok {
		opts := params["options"]
		for _, f := range strings.Fields(opts) {
			f = strings.TrimPrefix(f, "-c")
			f = strings.TrimPrefix(f, "--")
			if v, found := strings.CutPrefix(f, "search_path="); found {
				sp, ok = v, true
			}
		}
	}
	if !ok {
		return []string{"$user", "public"}
	}
	var out []string
	for _, p := range strings.Split(sp, ",") {
		p = strings.TrimSpace(p)
		if len(p) >= 2 && p[0] == '"' && p[len(p)-1] == '"' {
			p = strings.ReplaceAll(p[1:len(p)-1], `""`, `"`)
		} else {
			p = strings.ToLower(p)
		}
		if p != "" {
			out = append(out, p)
		}
	}
	return out
}

// Kinds of pending responses.
const (
	pendParse          uint8 = iota + 1 // ParseComplete
	pendBind                            // BindComplete
	pendDescribeStmt                    // ParameterDescription, then RowDescription or NoData
	pendDescribePortal                  // RowDescription or NoData
	pendExecute                         // DataRow*, then CommandComplete, PortalSuspended or EmptyQueryResponse
	pendClose                           // CloseComplete
	pendSync                            // ReadyForQuery
	pendQuery                           // anything, until ReadyForQuery (Query, FunctionCall)
	pendRefusal                         // the ErrorResponse of an injected refusal
)

// pending is one response (sequence) the server owes.
type pending struct {
	kind     uint8
	internal bool // injected by pgcloak: the client gets none of it
	st       *stmtInfo
	p        *portalInfo
	plan     *rewrite.Plan // pendQuery: the plan of the text (nil: no configured table named)
}

// pendingQueue is the FIFO between the two directions.
type pendingQueue struct {
	mu   sync.Mutex
	q    []pending
	head int
}

func (q *pendingQueue) push(p pending) {
	q.mu.Lock()
	q.q = append(q.q, p)
	q.mu.Unlock()
}

// peek returns the oldest entry; ok is false when none is pending.
func (q *pendingQueue) peek() (pending, bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.head == len(q.q) {
		return pending{}, false
	}
	return q.q[q.head], true
}

// pop drops the oldest entry.
func (q *pendingQueue) pop() {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.head == len(q.q) {
		return
	}
	q.q[q.head] = pending{}
	q.head++
	if q.head == len(q.q) {
		q.q, q.head = q.q[:0], 0
	} else if q.head > 1024 && q.head*2 > len(q.q) {
		n := copy(q.q, q.q[q.head:])
		clear(q.q[n:])
		q.q, q.head = q.q[:n], 0
	}
}

// Statement states, as far as the server→client side has seen.
const (
	stmtPending int32 = iota
	stmtOK
	stmtFailed
)

// stmtInfo is one prepared statement as the client created it.
type stmtInfo struct {
	name string
	plan *rewrite.Plan // nil: names no configured table
	view *catView      // the catalog the plan was made with
	// params[i] is the encrypted column $i+1 flows into, or nil;
	// encrypts says whether any is not nil.
	params   []*colInfo
	encrypts bool
	// clientOIDs are the parameter types the client declared (0: unspecified).
	clientOIDs []uint32
	// describe says results may hold encrypted columns, so their
	// description must be known before rows arrive.
	describe bool
	// ambiguous: a Parse of this name raced with an unconfirmed one; using
	// it is refused (fail closed).
	ambiguous bool

	state atomic.Int32

	// Set by the server→client side only.
	fields *rowDesc
}

// portalInfo is one portal (Bind).
type portalInfo struct {
	st            *stmtInfo // nil: a statement pgcloak did not see prepared
	resultFormats []int16
	describedUp   bool // a Describe of the portal was sent (client→server side only)

	// Set by the server→client side only.
	fields *rowDesc
}

// Column modes of a result description.
const (
	modePlain   uint8 = iota // not an encrypted column: untouched
	modeDecrypt              // decrypt into the logical type
	modeNull                 // denied: NULL
	modeMask                 // denied: the type's mask
	modeCipher               // denied: the envelope as stored (bytea)
	modeError                // denied: the statement fails with 42501
)

// rowDesc is a result description: per column, what to do.
type rowDesc struct {
	cols    []descCol
	active  bool     // some column is not modePlain/modeCipher
	audited []string // columns whose reads are audited
	denied  string   // first column with modeError
}

type descCol struct {
	info   *colInfo
	mode   uint8
	format int16
}

// withFormats returns d with the result formats of a Bind applied.
func (d *rowDesc) withFormats(formats []int16) *rowDesc {
	out := &rowDesc{cols: make([]descCol, len(d.cols)), active: d.active, audited: d.audited, denied: d.denied}
	for i, c := range d.cols {
		c.format = formatOf(formats, i)
		out.cols[i] = c
	}
	return out
}

// cloak is the per-session state shared by the two filters.
type cloak struct {
	srv        *cloakServer
	s          *session
	role       string
	db, app    string
	searchPath []string
	q          pendingQueue

	// The newest view this session used and its resolved search path;
	// used by the client→server side only.
	lastView *catView
	lastPath []string

	// poison is set by the server→client side after it failed a statement
	// inside a transaction block that the server itself completed: the
	// client→server side then fails the server's transaction too, so both
	// agree that it is aborted.
	poison atomic.Bool
}

func newCloak(srv *cloakServer, s *session, params map[string]string) *cloak {
	return &cloak{srv: srv, s: s, role: s.user, db: s.database, app: s.appName, searchPath: startupSearchPath(params)}
}

// ctx bounds one key or catalog wait of the session.
func (c *cloak) ctx() (context.Context, context.CancelFunc) {
	return context.WithTimeout(c.s.stopCtx, c.srv.keyTimeout)
}

// view returns the view of the database's current catalog snapshot. The
// source bounds its own queries; the session's context ends the wait when
// the session stops.
func (c *cloak) view() (*catView, error) {
	cat, err := c.srv.enc.Catalogs.Catalog(c.s.stopCtx, c.db)
	if err != nil {
		return nil, err
	}
	if c.lastView != nil && c.lastView.cat == cat {
		return c.lastView, nil
	}
	v := c.srv.view(c.db, cat)
	c.lastView, c.lastPath = v, v.searchPath(c.searchPath)
	return v, nil
}

// downView is view for the server→client side (which must not touch the
// client→server side's cache).
func (c *cloak) downView() (*catView, error) {
	cat, err := c.srv.enc.Catalogs.Catalog(c.s.stopCtx, c.db)
	if err != nil {
		return nil, err
	}
	return c.srv.view(c.db, cat), nil
}

// refreshView re-resolves after a lookup miss (rate-limited by the source).
func (c *cloak) refreshView() (*catView, error) {
	ctx, cancel := c.ctx()
	defer cancel()
	cat, err := c.srv.enc.Catalogs.Refresh(ctx, c.db)
	if err != nil {
		return nil, err
	}
	return c.srv.view(c.db, cat), nil
}
