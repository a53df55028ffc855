package proxy

import (
	"encoding/binary"
	"fmt"
	"io"
)

// headerLen is the size of a regular message header: type byte + int32
// length. The length counts itself but not the type byte.
const headerLen = 5

// frameBuf holds the bytes read from one socket that have not been consumed
// yet: buf[r:w]. It serves both the handshake (one frame at a time, see
// next) and the relay (batches, see pump). Bytes read ahead during the
// handshake stay here and are the first thing the relay forwards.
//
// The buffer has a base size; it grows only when a whole frame larger than
// the buffer must be held (a frame a filter wants to see), and shrinks back
// to the base size once it is empty again. A frameBuf is owned by one
// goroutine at a time.
type frameBuf struct {
	buf  []byte
	r, w int
	need int // bytes from r the caller needs contiguous before it can go on; 0 = any progress
	pool *bufPool
}

func newFrameBuf(pool *bufPool) *frameBuf {
	return &frameBuf{buf: pool.get(), pool: pool}
}

// buffered returns the unconsumed bytes. Valid until the next call that
// reads or consumes.
func (b *frameBuf) buffered() []byte { return b.buf[b.r:b.w] }

// release returns the base buffer to the pool. The frameBuf is unusable
// afterwards.
func (b *frameBuf) release() {
	if b.buf != nil && len(b.buf) == b.pool.size {
		b.pool.put(b.buf)
	}
	b.buf = nil
	b.r, b.w = 0, 0
}

// fill reads once from src into the free space, making room first (see
// makeRoom). It returns the number of bytes read and src's error.
func (b *frameBuf) fill(src io.Reader) (int, error) {
	b.makeRoom()
	n, err := src.Read(b.buf[b.w:])
	b.w += n
	return n, err
}

// makeRoom prepares the free tail for a read: an empty buffer is reset (and
// shrunk back to its base size when it had grown); leftovers move to the
// front when the tail is short or a pending frame would not fit; and a full
// buffer grows, at most doubling per read, while a pending frame (b.need) is
// larger than it. Growth thus follows the bytes that actually arrive: a
// hostile length field alone never allocates its length.
func (b *frameBuf) makeRoom() {
	if b.r == b.w {
		b.r, b.w = 0, 0
		if len(b.buf) != b.pool.size && b.need <= b.pool.size {
			b.buf = b.pool.get()
		}
	}
	if b.r > 0 && (len(b.buf)-b.w < len(b.buf)/4 || b.r+b.need > len(b.buf)) {
		b.w = copy(b.buf, b.buf[b.r:b.w])
		b.r = 0
	}
	if b.need > len(b.buf) && b.w == len(b.buf) {
		grown := make([]byte, min(growSize(b.need, b.pool.size), 2*len(b.buf)))
		b.w = copy(grown, b.buf[b.r:b.w])
		b.r = 0
		if len(b.buf) == b.pool.size {
			b.pool.put(b.buf)
		}
		b.buf = grown
	}
}

// growSize rounds n up to a multiple of base, so that a growing frame
// allocates rarely and a buffer never exceeds what the frame needs by more
// than one base size.
func growSize(n, base int) int {
	return (n + base - 1) / base * base
}

// next returns the next complete frame (header included), reading from src
// as needed. The frame must not exceed maxLen (length field, as in
// MaxMessageLen). The result is valid until the next call on b. Used during
// the handshake only; the relay walks batches instead.
func (b *frameBuf) next(src io.Reader, maxLen int) ([]byte, error) {
	for {
		if n := b.w - b.r; n >= headerLen {
			total, err := frameTotal(b.buf[b.r:], maxLen)
			if err != nil {
				return nil, err
			}
			if n >= total {
				f := b.buf[b.r : b.r+total : b.r+total]
				b.r += total
				b.need = 0
				return f, nil
			}
			b.need = total
		} else {
			b.need = headerLen
		}
		if _, err := b.fill(src); err != nil {
			if b.w-b.r >= b.need {
				continue // got enough despite the error; report it next time
			}
			return nil, err
		}
	}
}

// hasFrame reports whether a complete frame is buffered (a bad header counts:
// next will report it without reading).
func (b *frameBuf) hasFrame(maxLen int) bool {
	if b.w-b.r < headerLen {
		return false
	}
	total, err := frameTotal(b.buf[b.r:], maxLen)
	return err != nil || b.w-b.r >= total
}

// frameTotal validates the header at the start of p (at least headerLen
// bytes) and returns the frame's total size including the type byte.
func frameTotal(p []byte, maxLen int) (int, error) {
	l := binary.BigEndian.Uint32(p[1:5])
	if l < 4 || uint64(l) > uint64(maxLen) {
		return 0, badLength(p[0], l)
	}
	return int(l) + 1, nil
}

// badLength is the protocol violation for a hostile or corrupt length field.
func badLength(typ byte, l uint32) error {
	return newError(ErrProtocolViolation, "invalid message length",
		fmt.Errorf("message type %q with length %d", typ, l))
}

// bufPool recycles base-size relay buffers between sessions. Only the base
// size is pooled; grown buffers are left to the garbage collector.
type bufPool struct {
	size int
	free chan []byte
}

func newBufPool(size, keep int) *bufPool {
	return &bufPool{size: size, free: make(chan []byte, keep)}
}

func (p *bufPool) get() []byte {
	select {
	case b := <-p.free:
		return b
	default:
		return make([]byte, p.size)
	}
}

func (p *bufPool) put(b []byte) {
	if len(b) != p.size {
		return
	}
	select {
	case p.free <- b:
	default:
	}
}
