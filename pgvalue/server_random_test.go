package pgvalue

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5/pgconn"
)

// randomCase is one generated value: sent to the server as `SELECT $1::sql`
// in format, compared with Canonical(typ, format, value).
type randomCase struct {
	typ    string
	sql    string
	oid    uint32
	format int16
	value  []byte
}

// randomCases generates valid values with a fixed seed (reproducible).
func randomCases(n int) []randomCase {
	r := rand.New(rand.NewPCG(1, 2))
	var cs []randomCase
	add := func(typ, sql string, oid uint32, format int16, v []byte) {
		cs = append(cs, randomCase{typ, sql, oid, format, v})
	}
	digits := func(k int) string {
		var b strings.Builder
		for range k {
			b.WriteByte(byte('0' + r.IntN(10)))
		}
		return b.String()
	}
	for range n {
		add("float8", "float8", 701, 1, binary.BigEndian.AppendUint64(nil, r.Uint64()))
		add("float4", "float4", 700, 1, binary.BigEndian.AppendUint32(nil, r.Uint32()))
		f := fmt.Sprintf("%s%s.%se%d", []string{"", "-"}[r.IntN(2)], digits(1+r.IntN(8)), digits(r.IntN(12)), r.IntN(60)-30)
		add("float8", "float8", 0, 0, []byte(f))
		add("float4", "float4", 0, 0, []byte(f))
		// short decimals just above the exact-integer range: many are ties
		add("float4", "float4", 0, 0, fmt.Appendf(nil, "%d%0*d", 1+r.IntN(99999), r.IntN(6), 0))
		add("float8", "float8", 0, 0, fmt.Appendf(nil, "%de%d", 1+r.IntN(99999), 14+r.IntN(12)))
		// numeric text, plain and with typmods it fits
		num := fmt.Sprintf("%s%s.%s", []string{"", "-", "+"}[r.IntN(3)], digits(r.IntN(25)+1), digits(r.IntN(20)))
		if r.IntN(3) == 0 {
			num += fmt.Sprintf("e%d", r.IntN(40)-20)
		}
		add("numeric", "numeric", 0, 0, []byte(num))
		// binary numeric, not necessarily normalised (zero groups, digits
		// hidden by dscale): numeric_recv's rules
		nb := binary.BigEndian.AppendUint16(nil, uint16(r.IntN(5)))
		nb = binary.BigEndian.AppendUint16(nb, uint16(int16(r.IntN(11)-5)))
		nb = binary.BigEndian.AppendUint16(nb, []uint16{0, 0x4000}[r.IntN(2)])
		nb = binary.BigEndian.AppendUint16(nb, uint16(r.IntN(30)))
		for range binary.BigEndian.Uint16(nb) {
			nb = binary.BigEndian.AppendUint16(nb, uint16([]int{0, r.IntN(10000)}[r.IntN(2)]))
		}
		add("numeric", "numeric", 1700, 1, nb)
		p := 2 + r.IntN(30)
		s := r.IntN(p) - 3
		small := fmt.Sprintf("%s0%s.%s", []string{"", "-"}[r.IntN(2)], digits(r.IntN(max(1, p-s-1))), digits(r.IntN(10)))
		typ := fmt.Sprintf("numeric(%d,%d)", p, s)
		add(typ, "numeric::"+typ, 0, 0, []byte(small))
		// dates and timestamps, binary (whole range) and ISO text
		days := dateMinDays + r.Int64N(dateEndDays-dateMinDays)
		add("date", "date", 1082, 1, binary.BigEndian.AppendUint32(nil, uint32(int32(days))))
		us := timestampMin + int64(r.Uint64N(uint64(timestampEnd)+uint64(-timestampMin)-1e9))
		fd := r.IntN(8) - 1
		for _, k := range []string{"timestamp", "timestamptz"} {
			typ, sql := k, k
			if fd >= 0 && fd <= 6 {
				typ = fmt.Sprintf("%s(%d)", k, fd)
				sql = k + "::" + typ
			}
			add(typ, sql, map[string]uint32{"timestamp": 1114, "timestamptz": 1184}[k], 1, binary.BigEndian.AppendUint64(nil, uint64(us)))
		}
		year, era := 1+r.IntN(9999), []string{"", "", " BC"}[r.IntN(3)]
		if era != "" {
			year = 1 + r.IntN(4700) // 4714-11-24 BC is the lower bound
		}
		ts := fmt.Sprintf("%04d-%02d-%02d %02d:%02d:%02d.%s%s%s", year, 1+r.IntN(12), 1+r.IntN(28),
			r.IntN(24), r.IntN(60), r.IntN(60), digits(1+r.IntN(6)),
			[]string{"", "+05:30", "-08", "Z", " +0100", "-00:45"}[r.IntN(6)], era)
		add("timestamptz", "timestamptz", 0, 0, []byte(ts))
		add("timestamp", "timestamp", 0, 0, []byte(ts))
		add("date", "date", 0, 0, []byte(ts))
		add("jsonb", "jsonb", 0, 0, []byte(randomJSON(r, 3)))
	}
	return cs
}

func randomJSON(r *rand.Rand, depth int) string {
	k := r.IntN(8)
	if depth == 0 && k >= 6 {
		k = r.IntN(6)
	}
	ws := func() string { return []string{"", " ", "\n\t", "  "}[r.IntN(4)] }
	switch k {
	case 0:
		return "null"
	case 1:
		return []string{"true", "false"}[r.IntN(2)]
	case 2:
		return fmt.Sprintf("%s%d.%0*d", []string{"", "-"}[r.IntN(2)], r.IntN(1000), r.IntN(4), r.IntN(100))
	case 3:
		return fmt.Sprintf("%de%d", r.IntN(100), r.IntN(20)-10)
	case 4, 5:
		return randomJSONString(r)
	case 6:
		var parts []string
		for range r.IntN(5) {
			parts = append(parts, ws()+randomJSON(r, depth-1)+ws())
		}
		return "[" + strings.Join(parts, ",") + "]"
	default:
		var parts []string
		for range r.IntN(6) {
			parts = append(parts, ws()+randomJSONString(r)+ws()+":"+randomJSON(r, depth-1))
		}
		return "{" + strings.Join(parts, ",") + "}"
	}
}

func randomJSONString(r *rand.Rand) string {
	pieces := []string{"a", "b", "ab", "é", "☃", "😀", `\n`, `\u00e9`, `\ud83d\ude00`, `\"`, `\\`, `\/`, `\u001f`, `\t`, " ", "z", "aa"}
	var b strings.Builder
	b.WriteByte('"')
	for range r.IntN(4) {
		b.WriteString(pieces[r.IntN(len(pieces))])
	}
	b.WriteByte('"')
	return b.String()
}

// checkRandom sends every generated value to the server in one batch and
// compares the server's text output with Canonical.
func checkRandom(t *testing.T, ctx context.Context, conn *pgconn.PgConn) {
	cs := randomCases(1000)
	batch := &pgconn.Batch{}
	for _, c := range cs {
		batch.ExecParams("SELECT v, v FROM (SELECT $1::"+c.sql+" AS v) s", [][]byte{c.value}, []uint32{c.oid}, []int16{c.format}, []int16{0, 1})
	}
	results, err := conn.ExecBatch(ctx, batch).ReadAll()
	if err != nil {
		t.Fatalf("batch: %v", err)
	}
	if len(results) != len(cs) {
		t.Fatalf("%d results for %d cases", len(results), len(cs))
	}
	bad := 0
	for i, c := range cs {
		if results[i].Err != nil {
			t.Errorf("%s %q (format %d): server: %v", c.typ, c.value, c.format, results[i].Err)
			continue
		}
		want, wantBin := string(results[i].Rows[0][0]), results[i].Rows[0][1]
		typ := MustParseType(c.typ)
		got, err := Canonical(typ, c.format, c.value)
		if err != nil || string(got) != want {
			bad++
			if bad <= 20 {
				t.Errorf("%s %q (format %d): Canonical %q, %v; server %q", c.typ, c.value, c.format, got, err, want)
			}
			continue
		}
		if want == "NaN" && (typ.Kind == KindFloat4 || typ.Kind == KindFloat8) {
			continue // the server passes NaN payload bits through; the canonical text has none
		}
		if bin, err := Output(typ, BinaryFormat, got, nil); err != nil || !bytes.Equal(bin, wantBin) {
			bad++
			if bad <= 20 {
				t.Errorf("%s %q: Output binary %x, %v; server %x", c.typ, got, bin, err, wantBin)
			}
		}
	}
	t.Logf("%d random values compared", len(cs))
}
