package envelope

import "encoding/binary"

// Format constants of envelope v1. The numbers are the on-disk values;
// they never change meaning.
const (
	Magic0 byte = 0xC1 // first magic byte
	Magic1 byte = 0x0A // second magic byte

	// Version1 is the format version byte this package writes.
	Version1 byte = 1

	// FlagBlindIndex (flags bit 0) marks a 16-byte blind index after the
	// key version.
	FlagBlindIndex byte = 0x01

	// BlindIndexSize is the size of the optional blind index.
	BlindIndexSize = 16
	// NonceSize is the size of the random AES-GCM nonce.
	NonceSize = 12
	// TagSize is the size of the AES-GCM authentication tag.
	TagSize = 16
	// KeySize is the size of an AES-256 data-encryption key.
	KeySize = 32

	// fixedHeaderSize is magic, version, algorithm, flags, keyring id and
	// key version.
	fixedHeaderSize = 13
	// MaxHeaderSize is the header size with a blind index.
	MaxHeaderSize = fixedHeaderSize + BlindIndexSize
	// MinSize is the smallest possible envelope: header without blind
	// index, nonce, empty plaintext, tag.
	MinSize = fixedHeaderSize + NonceSize + TagSize
)

// Algorithm is the AEAD named in byte 3. The zero value is invalid.
type Algorithm byte

// AlgAES256GCM is AES-256 in Galois/Counter Mode, 96-bit random nonce,
// 128-bit tag.
const AlgAES256GCM Algorithm = 1

// String returns the algorithm's name.
func (a Algorithm) String() string {
	if a == AlgAES256GCM {
		return "AES-256-GCM"
	}
	return "unknown algorithm"
}

// Header is the parsed, unencrypted part of a v1 envelope. Format version
// and algorithm are not fields: v1 has exactly one algorithm, and a parsed
// Header always describes v1 / AES-256-GCM.
//
// Header is a plain value: it holds no reference to the bytes it was
// parsed from.
type Header struct {
	KeyringID  uint32
	KeyVersion uint32
	// HasBlindIndex says whether BlindIndex is present (flags bit 0).
	HasBlindIndex bool
	BlindIndex    [BlindIndexSize]byte
}

// Len returns the encoded size of h: 13 bytes, or 29 with a blind index.
func (h Header) Len() int {
	if h.HasBlindIndex {
		return MaxHeaderSize
	}
	return fixedHeaderSize
}

// SealedLen returns the size of an envelope with header h around a
// plaintext of n bytes.
func (h Header) SealedLen(n int) int {
	return h.Len() + NonceSize + n + TagSize
}

// AppendHeader appends the v1 / AES-256-GCM encoding of h to dst and
// returns the extended slice.
func AppendHeader(dst []byte, h Header) []byte {
	var flags byte
	if h.HasBlindIndex {
		flags |= FlagBlindIndex
	}
	dst = append(dst, Magic0, Magic1, Version1, byte(AlgAES256GCM), flags)
	dst = binary.BigEndian.AppendUint32(dst, h.KeyringID)
	dst = binary.BigEndian.AppendUint32(dst, h.KeyVersion)
	if h.HasBlindIndex {
		dst = append(dst, h.BlindIndex[:]...)
	}
	return dst
}

// ParseHeader parses the header of the envelope b and checks that b is
// long enough to hold the whole envelope (header, nonce and tag). It reads
// b only within bounds it has checked, never panics, and allocates nothing
// (except for an *UnsupportedError). The returned Header does not refer to
// b.
//
// Errors: *MalformedError (bad magic, any field truncated, reserved flag
// bits set) wrapping ErrMalformed; *UnsupportedError (unknown format
// version or algorithm) wrapping ErrUnsupported.
func ParseHeader(b []byte) (Header, error) {
	h, _, err := parseHeader(b)
	return h, err
}

// parseHeader is ParseHeader that also returns the header length.
func parseHeader(b []byte) (Header, int, error) {
	switch {
	case len(b) < 2 || b[0] != Magic0 || b[1] != Magic1:
		return Header{}, 0, errMagic
	case len(b) < 3:
		return Header{}, 0, errVersion
	case b[2] != Version1:
		return Header{}, 0, &UnsupportedError{Field: "version", Value: b[2]}
	case len(b) < 4:
		return Header{}, 0, errAlgorithm
	case Algorithm(b[3]) != AlgAES256GCM:
		return Header{}, 0, &UnsupportedError{Field: "algorithm", Value: b[3]}
	case len(b) < 5:
		return Header{}, 0, errFlags
	case b[4]&^FlagBlindIndex != 0:
		return Header{}, 0, errFlagBits
	case len(b) < fixedHeaderSize:
		return Header{}, 0, errKeyID
	}
	h := Header{
		KeyringID:     binary.BigEndian.Uint32(b[5:9]),
		KeyVersion:    binary.BigEndian.Uint32(b[9:13]),
		HasBlindIndex: b[4]&FlagBlindIndex != 0,
	}
	n := fixedHeaderSize
	if h.HasBlindIndex {
		if len(b) < MaxHeaderSize {
			return Header{}, 0, errBlindIndex
		}
		copy(h.BlindIndex[:], b[fixedHeaderSize:MaxHeaderSize])
		n = MaxHeaderSize
	}
	switch {
	case len(b)-n < NonceSize:
		return Header{}, 0, errNonce
	case len(b)-n-NonceSize < TagSize:
		return Header{}, 0, errTag
	}
	return h, n, nil
}
