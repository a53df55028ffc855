package envelope

import (
	"bytes"
	"crypto/aes"
	"encoding/binary"
	"testing"

	"github.com/pgcloak/pgcloak/crypto/secret"
)

// Known-answer tests. The AES-256 test cases 13–16 of the GCM specification
// (McGrew & Viega, "The Galois/Counter Mode of Operation", appendix B; the
// same vectors as NIST's GCM validation examples) fix key, IV, plaintext,
// AAD, ciphertext and tag.
//
// Our associated data is always header || context, never the vector's AAD,
// so the tag inside an envelope differs from the vector's tag. The test
// therefore (1) checks a small, independent, bit-by-bit reference GCM
// (refGCM, written from the specification) against the published vectors,
// and (2) checks every envelope byte: the header against a literal, the
// nonce against the vector IV, the ciphertext against the published
// ciphertext (CTR output does not depend on AAD) and the tag against
// refGCM over header || context.
var gcmSpecVectors = []struct {
	name            string
	key, iv, pt, ad string
	ct, tag         string
}{
	{
		name: "test case 13",
		key:  "0000000000000000000000000000000000000000000000000000000000000000",
		iv:   "000000000000000000000000",
		tag:  "530f8afbc74536b9a963b4f1c4cb738b",
	},
	{
		name: "test case 14",
		key:  "0000000000000000000000000000000000000000000000000000000000000000",
		iv:   "000000000000000000000000",
		pt:   "00000000000000000000000000000000",
		ct:   "cea7403d4d606b6e074ec5d3baf39d18",
		tag:  "d0d1c8a799996bf0265b98b5d48ab919",
	},
	{
		name: "test case 15",
		key:  "feffe9928665731c6d6a8f9467308308feffe9928665731c6d6a8f9467308308",
		iv:   "cafebabefacedbaddecaf888",
		pt: "d9313225f88406e5a55909c5aff5269a86a7a9531534f7da2e4c303d8a318a72" +
			"1c3c0c95956809532fcf0e2449a6b525b16aedf5aa0de657ba637b391aafd255",
		ct: "522dc1f099567d07f47f37a32a84427d643a8cdcbfe5c0c97598a2bd2555d1aa" +
			"8cb08e48590dbb3da7b08b1056828838c5f61e6393ba7a0abcc9f662898015ad",
		tag: "b094dac5d93471bdec1a502270e3cc6c",
	},
	{
		name: "test case 16",
		key:  "feffe9928665731c6d6a8f9467308308feffe9928665731c6d6a8f9467308308",
		iv:   "cafebabefacedbaddecaf888",
		pt: "d9313225f88406e5a55909c5aff5269a86a7a9531534f7da2e4c303d8a318a72" +
			"1c3c0c95956809532fcf0e2449a6b525b16aedf5aa0de657ba637b39",
		ad: "feedfacedeadbeeffeedfacedeadbeefabaddad2",
		ct: "522dc1f099567d07f47f37a32a84427d643a8cdcbfe5c0c97598a2bd2555d1aa" +
			"8cb08e48590dbb3da7b08b1056828838c5f61e6393ba7a0abcc9f662",
		tag: "76fc6ece0f4e1768cddf8853bb2d551b",
	},
}

func TestReferenceGCMMatchesSpec(t *testing.T) {
	for _, v := range gcmSpecVectors {
		got := refGCM(mustHex(t, v.key), mustHex(t, v.iv), mustHex(t, v.ad), mustHex(t, v.pt))
		want := mustHex(t, v.ct+v.tag)
		if !bytes.Equal(got, want) {
			t.Fatalf("%s: refGCM = %x, want %x", v.name, got, want)
		}
	}
}

func TestKnownAnswerThroughEnvelope(t *testing.T) {
	const ctx = "public.customers.ssn"
	blind := mustHex(t, "000102030405060708090a0b0c0d0e0f")
	for _, v := range gcmSpecVectors {
		for _, bi := range [][]byte{nil, blind} {
			k := mustKey(t, 0x00010203, 0x7FFFFFFE, secret.New(mustHex(t, v.key)))
			iv, pt := mustHex(t, v.iv), mustHex(t, v.pt)
			env, err := k.seal(nonceReader(iv), nil, bi, ctx, pt)
			if err != nil {
				t.Fatalf("%s: seal: %v", v.name, err)
			}
			header := mustHex(t, "c10a0101"+"00"+"00010203"+"7ffffffe")
			if bi != nil {
				header = mustHex(t, "c10a0101"+"01"+"00010203"+"7ffffffe"+"000102030405060708090a0b0c0d0e0f")
			}
			if !bytes.Equal(env[:len(header)], header) {
				t.Fatalf("%s: header = %x, want %x", v.name, env[:len(header)], header)
			}
			rest := env[len(header):]
			if !bytes.Equal(rest[:NonceSize], iv) {
				t.Fatalf("%s: nonce = %x, want %x", v.name, rest[:NonceSize], iv)
			}
			body := rest[NonceSize:]
			if !bytes.Equal(body[:len(body)-TagSize], mustHex(t, v.ct)) {
				t.Fatalf("%s: ciphertext = %x, want %x", v.name, body[:len(body)-TagSize], v.ct)
			}
			aad := append(bytes.Clone(header), ctx...)
			if want := refGCM(mustHex(t, v.key), iv, aad, pt); !bytes.Equal(body, want) {
				t.Fatalf("%s: body = %x, reference GCM over header||context = %x", v.name, body, want)
			}
			out, err := k.Open(nil, env, ctx)
			if err != nil || !bytes.Equal(out, pt) {
				t.Fatalf("%s: Open = %x, %v", v.name, out, err)
			}
		}
	}
}

// refGCM is GCM-AE from NIST SP 800-38D for a 96-bit IV, written for
// clarity, not speed: CTR mode from inc32(J0) and GHASH by the bit-serial
// multiplication of algorithm 1. It returns ciphertext || 128-bit tag.
func refGCM(key, iv, aad, pt []byte) []byte {
	block, err := aes.NewCipher(key)
	if err != nil || len(iv) != 12 {
		panic("refGCM: bad key or IV")
	}
	var h, j0, ej0 [16]byte
	block.Encrypt(h[:], h[:])
	copy(j0[:], iv)
	j0[15] = 1
	block.Encrypt(ej0[:], j0[:])

	ct := make([]byte, len(pt))
	ctr := j0
	for i := 0; i < len(pt); i += 16 {
		binary.BigEndian.PutUint32(ctr[12:], binary.BigEndian.Uint32(ctr[12:])+1)
		var ks [16]byte
		block.Encrypt(ks[:], ctr[:])
		for j := 0; j < 16 && i+j < len(pt); j++ {
			ct[i+j] = pt[i+j] ^ ks[j]
		}
	}

	var y [16]byte
	absorb := func(data []byte) {
		for i := 0; i < len(data); i += 16 {
			var blk [16]byte
			copy(blk[:], data[i:min(i+16, len(data))])
			for j := range y {
				y[j] ^= blk[j]
			}
			y = gfMul(y, h)
		}
	}
	absorb(aad)
	absorb(ct)
	var lens [16]byte
	binary.BigEndian.PutUint64(lens[:8], uint64(len(aad))*8)
	binary.BigEndian.PutUint64(lens[8:], uint64(len(ct))*8)
	absorb(lens[:])
	for j := range y {
		y[j] ^= ej0[j]
	}
	return append(ct, y[:]...)
}

// gfMul multiplies in GF(2^128) with GCM's bit order (SP 800-38D, 6.3).
func gfMul(x, y [16]byte) [16]byte {
	var z [16]byte
	v := y
	for i := 0; i < 128; i++ {
		if x[i/8]>>(7-i%8)&1 == 1 {
			for j := range z {
				z[j] ^= v[j]
			}
		}
		lsb := v[15] & 1
		for j := 15; j > 0; j-- {
			v[j] = v[j]>>1 | v[j-1]<<7
		}
		v[0] >>= 1
		if lsb == 1 {
			v[0] ^= 0xe1
		}
	}
	return z
}
