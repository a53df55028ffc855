package pgvalue

import "testing"

func benchCanonical(b *testing.B, typ string, format int16, src []byte) {
	t := MustParseType(typ)
	dst := make([]byte, 0, 128)
	b.ReportAllocs()
	b.SetBytes(int64(len(src)))
	for b.Loop() {
		var err error
		if dst, err = AppendCanonical(dst[:0], t, format, src); err != nil {
			b.Fatal(err)
		}
	}
}

func benchOutput(b *testing.B, typ string, format int16, plaintext string) {
	t := MustParseType(typ)
	dst := make([]byte, 0, 128)
	p := []byte(plaintext)
	b.ReportAllocs()
	for b.Loop() {
		var err error
		if dst, err = Output(t, format, p, dst[:0]); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkCanonicalInt4Text(b *testing.B) {
	benchCanonical(b, "int4", TextFormat, []byte("-123456789"))
}
func BenchmarkCanonicalInt4Binary(b *testing.B) {
	benchCanonical(b, "int4", BinaryFormat, []byte{0xf8, 0xa4, 0x32, 0xeb})
}
func BenchmarkCanonicalTextText(b *testing.B) {
	benchCanonical(b, "text", TextFormat, []byte("Jöhn Smith, 42 Example Street, Springfield"))
}
func BenchmarkCanonicalVarcharText(b *testing.B) {
	benchCanonical(b, "varchar(20)", TextFormat, []byte("Jöhn Smith, 42 Example Street"[:20]))
}
func BenchmarkCanonicalTimestamptzText(b *testing.B) {
	benchCanonical(b, "timestamptz", TextFormat, []byte("2024-01-31 12:34:56.123456+05:30"))
}
func BenchmarkCanonicalTimestamptzBinary(b *testing.B) {
	benchCanonical(b, "timestamptz", BinaryFormat, []byte{0, 2, 0xb6, 0x5c, 0x2c, 0x5b, 0x4c, 0x40})
}
func BenchmarkCanonicalNumericText(b *testing.B) {
	benchCanonical(b, "numeric(12,2)", TextFormat, []byte("12345.678"))
}
func BenchmarkCanonicalFloat8Text(b *testing.B) {
	benchCanonical(b, "float8", TextFormat, []byte("3.141592653589793"))
}
func BenchmarkCanonicalJSONBText(b *testing.B) {
	benchCanonical(b, "jsonb", TextFormat, []byte(`{"name": "x", "tags": [1, 2, 3], "a": {"b": null}}`))
}
func BenchmarkOutputInt4Binary(b *testing.B) { benchOutput(b, "int4", BinaryFormat, "-123456789") }
func BenchmarkOutputTimestamptzBinary(b *testing.B) {
	benchOutput(b, "timestamptz", BinaryFormat, "2024-01-31 07:04:56.123456+00")
}
func BenchmarkOutputNumericBinary(b *testing.B) {
	benchOutput(b, "numeric(12,2)", BinaryFormat, "12345.68")
}
func BenchmarkOutputTextText(b *testing.B) {
	benchOutput(b, "text", TextFormat, "Jöhn Smith, 42 Example Street, Springfield")
}
