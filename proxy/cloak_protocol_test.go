package proxy

import (
	"encoding/binary"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgproto3"
)

// rawConn is a protocol-level client through the proxy (trust auth).
type rawConn struct {
	t  *testing.T
	fe *pgproto3.Frontend
	nc net.Conn
}

func (e *cloakEnv) raw(user string) *rawConn {
	e.t.Helper()
	nc, err := net.Dial("tcp", e.proxy.addr)
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { _ = nc.Close() })
	_ = nc.SetDeadline(time.Now().Add(30 * time.Second))
	c := &rawConn{t: e.t, fe: pgproto3.NewFrontend(nc, nc), nc: nc}
	c.fe.Send(&pgproto3.StartupMessage{ProtocolVersion: pgproto3.ProtocolVersionNumber, Parameters: map[string]string{"user": user, "database": "postgres"}})
	c.flush()
	c.until('Z')
	return c
}

func (c *rawConn) flush() {
	c.t.Helper()
	if err := c.fe.Flush(); err != nil {
		c.t.Fatal(err)
	}
}

// until reads messages up to and including one of type typ and returns
// them (copied).
func (c *rawConn) until(typ byte) []pgproto3.BackendMessage {
	c.t.Helper()
	var out []pgproto3.BackendMessage
	for {
		m, err := c.fe.Receive()
		if err != nil {
			c.t.Fatal(err)
		}
		buf, err := m.Encode(nil)
		if err != nil {
			c.t.Fatal(err)
		}
		out = append(out, m)
		if buf[0] == typ {
			return out
		}
		// Copy: pgproto3 reuses message structs between Receives.
		out[len(out)-1] = copyMsg(c.t, buf)
	}
}

func copyMsg(t *testing.T, buf []byte) pgproto3.BackendMessage {
	var m pgproto3.BackendMessage
	switch buf[0] {
	case 'D':
		m = &pgproto3.DataRow{}
	case 'T':
		m = &pgproto3.RowDescription{}
	case 'E':
		m = &pgproto3.ErrorResponse{}
	case 't':
		m = &pgproto3.ParameterDescription{}
	case 'C':
		m = &pgproto3.CommandComplete{}
	default:
		return typeOnly(buf[0])
	}
	if err := m.Decode(append([]byte(nil), buf[5:]...)); err != nil {
		t.Fatal(err)
	}
	return m
}

// typeOnly stands for a message whose content the tests do not inspect.
type typeOnly byte

func (typeOnly) Backend()                            {}
func (typeOnly) Decode([]byte) error                 { return nil }
func (m typeOnly) Encode(dst []byte) ([]byte, error) { return append(dst, byte(m), 0, 0, 0, 4), nil }

// kinds lists the message types of msgs.
func kinds(msgs []pgproto3.BackendMessage) string {
	var b strings.Builder
	for _, m := range msgs {
		buf, _ := m.Encode(nil)
		b.WriteByte(buf[0])
	}
	return b.String()
}

// TestCloakProtocol drives the extended protocol by hand: named statements
// and portals, Describe of both, Execute with a row limit (PortalSuspended),
// Close, binary results, and an error in the middle of a pipeline.
func TestCloakProtocol(t *testing.T) {
	env := newCloakEnv(t, nil)
	c := env.raw("app")
	// Insert five rows with a named statement, parameters in text format.
	c.fe.Send(&pgproto3.Parse{Name: "ins", Query: `INSERT INTO customers (id, ssn, age) VALUES ($1, $2, $3)`})
	for i := 1; i <= 5; i++ {
		c.fe.Send(&pgproto3.Bind{PreparedStatement: "ins", Parameters: [][]byte{[]byte(fmt.Sprint(i)), []byte(fmt.Sprint("ssn-", i)), []byte(fmt.Sprint(20 + i))}})
		c.fe.Send(&pgproto3.Execute{})
	}
	c.fe.Send(&pgproto3.Sync{})
	c.flush()
	if got := kinds(c.until('Z')); got != "12C2C2C2C2CZ" {
		t.Fatalf("insert pipeline answered %q", got)
	}
	// Describe the statement: parameter and column types are the logical ones.
	c.fe.Send(&pgproto3.Parse{Name: "sel", Query: `SELECT id, ssn, age FROM customers WHERE id >= $1 ORDER BY id`})
	c.fe.Send(&pgproto3.Describe{ObjectType: 'S', Name: "sel"})
	c.fe.Send(&pgproto3.Sync{})
	c.flush()
	msgs := c.until('Z')
	if got := kinds(msgs); got != "1tTZ" {
		t.Fatalf("describe statement answered %q", got)
	}
	rd := msgs[2].(*pgproto3.RowDescription)
	if rd.Fields[1].DataTypeOID != 25 || rd.Fields[2].DataTypeOID != 23 || rd.Fields[2].DataTypeSize != 4 {
		t.Errorf("row description %+v", rd.Fields)
	}
	// A named portal with binary results, fetched two rows at a time.
	c.fe.Send(&pgproto3.Bind{DestinationPortal: "p", PreparedStatement: "sel", Parameters: [][]byte{[]byte("1")}, ResultFormatCodes: []int16{1}})
	c.fe.Send(&pgproto3.Describe{ObjectType: 'P', Name: "p"})
	c.fe.Send(&pgproto3.Execute{Portal: "p", MaxRows: 2})
	c.fe.Send(&pgproto3.Execute{Portal: "p", MaxRows: 2})
	c.fe.Send(&pgproto3.Execute{Portal: "p", MaxRows: 2})
	c.fe.Send(&pgproto3.Close{ObjectType: 'P', Name: "p"})
	c.fe.Send(&pgproto3.Sync{})
	c.flush()
	msgs = c.until('Z')
	if got := kinds(msgs); got != "2TDDsDDsDC3Z" {
		t.Fatalf("portal with row limits answered %q", got)
	}
	id := 0
	for _, m := range msgs {
		if dr, ok := m.(*pgproto3.DataRow); ok {
			id++
			if binary.BigEndian.Uint32(dr.Values[0]) != uint32(id) || string(dr.Values[1]) != fmt.Sprint("ssn-", id) ||
				binary.BigEndian.Uint32(dr.Values[2]) != uint32(20+id) {
				t.Errorf("row %d: %q", id, dr.Values)
			}
		}
	}
	// Execute without any Describe (as pgbench -M prepared does): pgcloak
	// still knows the columns from its own Describe at Parse time.
	c.fe.Send(&pgproto3.Bind{PreparedStatement: "sel", Parameters: [][]byte{[]byte("5")}})
	c.fe.Send(&pgproto3.Execute{})
	c.fe.Send(&pgproto3.Sync{})
	c.flush()
	msgs = c.until('Z')
	if got := kinds(msgs); got != "2DCZ" {
		t.Fatalf("execute without describe answered %q", got)
	}
	if dr := msgs[1].(*pgproto3.DataRow); string(dr.Values[1]) != "ssn-5" || string(dr.Values[2]) != "25" {
		t.Errorf("execute without describe: %q", dr.Values)
	}
	// An error in the middle of a pipeline: the rest is skipped until Sync
	// and the next cycle works.
	c.fe.Send(&pgproto3.Bind{PreparedStatement: "ins", Parameters: [][]byte{[]byte("1"), []byte("dup"), []byte("1")}})
	c.fe.Send(&pgproto3.Execute{})
	c.fe.Send(&pgproto3.Bind{PreparedStatement: "ins", Parameters: [][]byte{[]byte("9"), []byte("skipped"), []byte("9")}})
	c.fe.Send(&pgproto3.Execute{})
	c.fe.Send(&pgproto3.Sync{})
	c.fe.Send(&pgproto3.Close{ObjectType: 'S', Name: "sel"})
	c.fe.Send(&pgproto3.Bind{PreparedStatement: "ins", Parameters: [][]byte{[]byte("9"), []byte("landed"), []byte("9")}})
	c.fe.Send(&pgproto3.Execute{})
	c.fe.Send(&pgproto3.Sync{})
	c.flush()
	if got := kinds(c.until('Z')); got != "2EZ" {
		t.Fatalf("failing pipeline answered %q", got)
	}
	if got := kinds(c.until('Z')); got != "32CZ" {
		t.Fatalf("pipeline after the failure answered %q", got)
	}
	var ssn string
	if err := env.connect("app", pgx.QueryExecModeExec).QueryRow(env.ctx, `SELECT ssn FROM customers WHERE id = 9`).Scan(&ssn); err != nil || ssn != "landed" {
		t.Fatalf("row 9: %q %v", ssn, err)
	}
	// A refusal inside a pipeline: nothing of the cycle reaches the server.
	c.fe.Send(&pgproto3.Bind{PreparedStatement: "ins", Parameters: [][]byte{[]byte("10"), []byte("ten"), []byte("10")}})
	c.fe.Send(&pgproto3.Execute{})
	c.fe.Send(&pgproto3.Parse{Query: `SELECT id FROM customers ORDER BY ssn`})
	c.fe.Send(&pgproto3.Bind{})
	c.fe.Send(&pgproto3.Execute{})
	c.fe.Send(&pgproto3.Bind{PreparedStatement: "ins", Parameters: [][]byte{[]byte("11"), []byte("eleven"), []byte("11")}})
	c.fe.Send(&pgproto3.Execute{})
	c.fe.Send(&pgproto3.Sync{})
	c.flush()
	msgs = c.until('Z')
	if got := kinds(msgs); got != "2CEZ" {
		t.Fatalf("pipeline with a refusal answered %q", got)
	}
	if e := msgs[2].(*pgproto3.ErrorResponse); e.Code != "0A000" || !strings.Contains(e.Message, "public.customers.ssn") {
		t.Errorf("refusal: %+v", e)
	}
	var n int
	if err := env.direct.QueryRow(env.ctx, `SELECT count(*) FROM customers WHERE id IN (10, 11)`).Scan(&n); err != nil || n != 0 {
		t.Errorf("rows of the failed implicit transaction: %d, %v", n, err)
	}
}
