package proxy

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"math/rand/v2"
	"sync/atomic"
	"testing"
	"testing/iotest"

	"github.com/jackc/pgx/v5/pgproto3"
)

func newTestPump(src io.Reader, dst io.Writer, f frameFilter, bufSize, maxLen int) *pump {
	var counter atomic.Uint64
	return newPump(newFrameBuf(newBufPool(bufSize, 1)), src, dst, f, true, maxLen, &counter)
}

// countingWriter records every Write separately.
type countingWriter struct {
	bytes.Buffer
	writes int
}

func (w *countingWriter) Write(p []byte) (int, error) {
	w.writes++
	return w.Buffer.Write(p)
}

func frames(t testing.TB, msgs ...pgproto3.Message) []byte {
	var b []byte
	for _, m := range msgs {
		var err error
		if b, err = m.Encode(b); err != nil {
			t.Fatal(err)
		}
	}
	return b
}

func TestPumpOneByteReads(t *testing.T) {
	in := frames(t, &pgproto3.Query{String: "select 1"}, &pgproto3.Sync{},
		&pgproto3.Parse{Name: "s", Query: "select $1"}, &pgproto3.Query{String: string(make([]byte, 300))})
	var out countingWriter
	p := newTestPump(iotest.OneByteReader(bytes.NewReader(in)), &out, nil, 16, 1<<20)
	err := p.run()
	if !errors.Is(err, io.EOF) || !isReadErr(err) {
		t.Fatalf("run: %v", err)
	}
	if !bytes.Equal(out.Bytes(), in) {
		t.Fatal("output differs from input")
	}
	if len(p.in.buf) != 16 {
		t.Fatalf("buffer grew to %d for pass-through frames", len(p.in.buf))
	}
}

func TestPumpOneWritePerBatch(t *testing.T) {
	in := frames(t, &pgproto3.Parse{Query: "select $1"}, &pgproto3.Bind{}, &pgproto3.Describe{ObjectType: 'P'},
		&pgproto3.Execute{}, &pgproto3.Sync{})
	var out countingWriter
	p := newTestPump(bytes.NewReader(in), &out, nil, 1024, 1<<20)
	_ = p.run()
	if out.writes != 1 || !bytes.Equal(out.Bytes(), in) {
		t.Fatalf("%d writes, equal=%v; want 1 write of the whole batch", out.writes, bytes.Equal(out.Bytes(), in))
	}
}

func TestPumpStreamsLargeFramesWithoutGrowing(t *testing.T) {
	big := make([]byte, 100_000)
	for i := range big {
		big[i] = byte(i%250 + 1)
	}
	in := frames(t, &pgproto3.CopyData{Data: big}, &pgproto3.CopyDone{})
	var out countingWriter
	p := newTestPump(bytes.NewReader(in), &out, nil, 4096, 1<<20)
	_ = p.run()
	if !bytes.Equal(out.Bytes(), in) {
		t.Fatal("output differs from input")
	}
	if len(p.in.buf) != 4096 {
		t.Fatalf("buffer is %d bytes, want 4096", len(p.in.buf))
	}
}

// identityFilter holds back nothing and changes nothing, but sees 'Q' whole.
type identityFilter struct{ seen *int }

func (identityFilter) wants(typ byte) bool { return typ == 'Q' }
func (f identityFilter) filter(frame, out []byte) ([]byte, error) {
	if f.seen != nil {
		*f.seen++
	}
	return append(out, frame...), nil
}

func TestPumpGrowsForFilteredFramesAndShrinksBack(t *testing.T) {
	long := string(bytes.Repeat([]byte("x"), 10_000))
	in := frames(t, &pgproto3.Query{String: long}, &pgproto3.Sync{})
	var out countingWriter
	seen := 0
	r := &stepReader{data: in, step: 700}
	p := newTestPump(r, &out, identityFilter{&seen}, 1024, 1<<20)
	maxBuf := 0
	r.onRead = func() { maxBuf = max(maxBuf, len(p.in.buf)) }
	_ = p.run()
	if !bytes.Equal(out.Bytes(), in) || seen != 1 {
		t.Fatalf("equal=%v seen=%d", bytes.Equal(out.Bytes(), in), seen)
	}
	if maxBuf < 10_005 {
		t.Fatalf("buffer never held the whole frame (max %d)", maxBuf)
	}
	p.in.makeRoom()
	if len(p.in.buf) != 1024 {
		t.Fatalf("buffer did not shrink back: %d", len(p.in.buf))
	}
}

// stepReader returns at most step bytes per Read.
type stepReader struct {
	data   []byte
	step   int
	onRead func()
}

func (r *stepReader) Read(p []byte) (int, error) {
	if r.onRead != nil {
		r.onRead()
	}
	if len(r.data) == 0 {
		return 0, io.EOF
	}
	n := copy(p[:min(len(p), r.step)], r.data)
	r.data = r.data[n:]
	return n, nil
}

func TestPumpRejectsBadLengths(t *testing.T) {
	good := frames(t, &pgproto3.Sync{})
	for _, l := range []uint32{0, 3, 1 << 20, 1<<31 + 5, 0xffffffff} {
		hdr := []byte{'Q', 0, 0, 0, 0}
		binary.BigEndian.PutUint32(hdr[1:], l)
		var out bytes.Buffer
		p := newTestPump(bytes.NewReader(append(append([]byte(nil), good...), hdr...)), &out, nil, 64, 1000)
		err := p.run()
		if !errors.Is(err, ErrProtocolViolation) {
			t.Fatalf("length %d: err %v", l, err)
		}
		if !bytes.Equal(out.Bytes(), good) {
			t.Fatalf("length %d: frames before the bad one not forwarded", l)
		}
		if !p.atBoundary() {
			t.Fatalf("length %d: not at a boundary", l)
		}
	}
}

func TestPumpStopsAfterTerminate(t *testing.T) {
	head := frames(t, &pgproto3.Query{String: "q"}, &pgproto3.Terminate{})
	in := append(append([]byte(nil), head...), frames(t, &pgproto3.Query{String: "after"})...)
	var out bytes.Buffer
	p := newTestPump(bytes.NewReader(in), &out, nil, 64, 1000)
	if err := p.run(); !errors.Is(err, errTerminate) {
		t.Fatalf("run: %v", err)
	}
	if !bytes.Equal(out.Bytes(), head) {
		t.Fatal("bytes after Terminate were forwarded")
	}
}

// loopReader serves the same batch on every Read, forever.
type loopReader struct{ batch []byte }

func (r *loopReader) Read(p []byte) (int, error) { return copy(p, r.batch), nil }

func TestPumpForwardAllocatesNothing(t *testing.T) {
	batch := frames(t, &pgproto3.Bind{Parameters: [][]byte{[]byte("42")}}, &pgproto3.Execute{}, &pgproto3.Sync{},
		&pgproto3.DataRow{Values: [][]byte{[]byte("value")}})
	p := newTestPump(&loopReader{batch}, io.Discard, nil, 64<<10, 1<<30)
	allocs := testing.AllocsPerRun(1000, func() {
		if _, err := p.in.fill(p.src); err != nil {
			t.Fatal(err)
		}
		if err := p.forward(); err != nil {
			t.Fatal(err)
		}
	})
	if allocs != 0 {
		t.Fatalf("%v allocations per batch, want 0", allocs)
	}
}

// referenceForward is the specification of a pump over a complete input:
// what it must have written, and whether it must report a bad length.
func referenceForward(in []byte, maxLen int, filtered func(byte) bool) (out []byte, bad bool) {
	pos := 0
	for {
		if len(in)-pos < headerLen {
			return in[:pos], false
		}
		l := binary.BigEndian.Uint32(in[pos+1:])
		if l < 4 || uint64(l) > uint64(maxLen) {
			return in[:pos], true
		}
		end := pos + 1 + int(l)
		if end > len(in) {
			if filtered(in[pos]) || in[pos] == 'X' {
				return in[:pos], false
			}
			return in, false
		}
		if in[pos] == 'X' {
			return in[:end], false
		}
		pos = end
	}
}

func FuzzPump(f *testing.F) {
	f.Add(frames(f, &pgproto3.Query{String: "select 1"}, &pgproto3.Sync{}), uint64(1), false)
	f.Add(frames(f, &pgproto3.Query{String: "select 1"}, &pgproto3.Terminate{}), uint64(7), true)
	f.Add([]byte{'Q', 0xff, 0xff, 0xff, 0xff}, uint64(3), false)
	f.Add([]byte{'d', 0, 0, 0, 200, 1, 2, 3}, uint64(2), true)
	f.Fuzz(func(t *testing.T, in []byte, seed uint64, withFilter bool) {
		const maxLen = 512
		var filter frameFilter
		isFiltered := func(byte) bool { return false }
		if withFilter {
			filter = identityFilter{}
			isFiltered = func(b byte) bool { return b == 'Q' }
		}
		want, bad := referenceForward(in, maxLen, isFiltered)
		rng := rand.New(rand.NewPCG(seed, seed>>7))
		r := &randomChunkReader{data: in, rng: rng}
		var out bytes.Buffer
		p := newTestPump(r, &out, filter, 16, maxLen)
		err := p.run()
		switch {
		case bad && !errors.Is(err, ErrProtocolViolation):
			t.Fatalf("want protocol violation, got %v", err)
		case !bad && !errors.Is(err, io.EOF) && !errors.Is(err, errTerminate):
			t.Fatalf("unexpected error %v", err)
		}
		if !bytes.Equal(out.Bytes(), want) {
			t.Fatalf("output %x, want %x", out.Bytes(), want)
		}
	})
}

// randomChunkReader returns the data in random-sized pieces.
type randomChunkReader struct {
	data []byte
	rng  *rand.Rand
}

func (r *randomChunkReader) Read(p []byte) (int, error) {
	if len(r.data) == 0 {
		return 0, io.EOF
	}
	n := copy(p[:min(len(p), 1+r.rng.IntN(40))], r.data)
	r.data = r.data[n:]
	return n, nil
}

func TestPumpHostileLengthDoesNotAllocate(t *testing.T) {
	in := []byte{'Q', 0x20, 0, 0, 0} // 512 MiB announced, within maxLen
	in = append(in, make([]byte, 300)...)
	var out bytes.Buffer
	p := newTestPump(&stepReader{data: in, step: 50}, &out, identityFilter{}, 64, 1<<30)
	if err := p.run(); !errors.Is(err, io.EOF) {
		t.Fatalf("run: %v", err)
	}
	if n := len(p.in.buf); n > 2*len(in) {
		t.Fatalf("buffer grew to %d bytes for %d received", n, len(in))
	}
	if out.Len() != 0 {
		t.Fatal("incomplete filtered frame was forwarded")
	}
}
