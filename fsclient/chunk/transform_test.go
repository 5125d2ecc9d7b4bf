package chunk

import (
	"bytes"
	"errors"
	"math/rand/v2"
	"testing"

	"github.com/skiff-fs/skiff/fsclient/slice"
)

func testKey() []byte { return bytes.Repeat([]byte{7}, KeySize) }

// blockData returns n bytes that compress well (text-like) or not at all.
func blockData(n int, compressible bool) []byte {
	r := rand.New(rand.NewPCG(1, uint64(n)))
	b := make([]byte, n)
	for i := range b {
		if compressible {
			b[i] = "skiff data path "[r.IntN(16)]
		} else {
			b[i] = byte(r.Uint32())
		}
	}
	return b
}

func TestTransformRoundTrip(t *testing.T) {
	for _, comp := range []string{"none", "lz4", "zstd"} {
		for _, key := range [][]byte{nil, testKey()} {
			tf, err := newTransform(comp, key, 2)
			if err != nil {
				t.Fatal(err)
			}
			for _, n := range []int{1, 100, 64 << 10, 256<<10 + 3} {
				for _, compressible := range []bool{true, false} {
					plain := blockData(n, compressible)
					k := slice.BlockKey(42, 1, uint32(n))
					stored := tf.encode(k, plain)
					if comp != "none" && compressible && n >= 64<<10 && len(stored) >= n {
						t.Errorf("%s: compressible block of %d bytes stored as %d", comp, n, len(stored))
					}
					if key != nil && bytes.Contains(stored, plain[:min(n, 64)]) && n >= 64 {
						t.Errorf("%s encrypted: stored block contains plain text", comp)
					}
					got, err := tf.decode(k, stored, uint32(n))
					if err != nil {
						t.Fatalf("%s key=%v n=%d: %v", comp, key != nil, n, err)
					}
					if !bytes.Equal(got, plain) {
						t.Fatalf("%s key=%v n=%d: round trip changed the data", comp, key != nil, n)
					}
					if _, err := tf.decode(k, stored, uint32(n)+1); !errors.Is(err, ErrCorrupt) {
						t.Errorf("%s key=%v: wrong length decoded with %v, want ErrCorrupt", comp, key != nil, err)
					}
				}
			}
			tf.close()
		}
	}
}

func TestTransformRejects(t *testing.T) {
	plainTF, _ := newTransform("none", nil, 2)
	encTF, _ := newTransform("zstd", testKey(), 2)
	otherKey, _ := newTransform("zstd", bytes.Repeat([]byte{8}, KeySize), 2)
	data := blockData(5000, true)
	k := slice.BlockKey(9, 0, 5000)
	enc := encTF.encode(k, data)
	flipped := append([]byte(nil), enc...)
	flipped[len(flipped)/2] ^= 1
	hdr := append([]byte(nil), enc...)
	hdr[0] &^= codecMask // claim "none": the header is authenticated
	for _, tc := range []struct {
		name   string
		tf     *transform
		key    string
		stored []byte
	}{
		{"empty", plainTF, k, nil},
		{"bad version", plainTF, k, append([]byte{0x30}, data...)},
		{"encrypted block, plain volume", plainTF, k, enc},
		{"plain block, encrypted volume", encTF, k, plainTF.encode(k, data)},
		{"flipped byte", encTF, k, flipped},
		{"changed header", encTF, k, hdr},
		{"other key name", encTF, slice.BlockKey(10, 0, 5000), enc},
		{"other data key", otherKey, k, enc},
		{"short", encTF, k, enc[:20]},
		{"bad codec", plainTF, k, append([]byte{0x17}, data...)},
		{"bad lz4", plainTF, k, append([]byte{0x11}, data...)},
		{"bad zstd", plainTF, k, append([]byte{0x12}, data...)},
	} {
		_, err := tc.tf.decode(tc.key, tc.stored, 5000)
		if !errors.Is(err, ErrCorrupt) {
			t.Errorf("%s: got %v, want ErrCorrupt", tc.name, err)
		}
	}
}

func TestUnknownCompression(t *testing.T) {
	_, err := newTransform("brotli", nil, 2)
	if err == nil || err.Error() != `unknown compression "brotli": use one of none, lz4, zstd` {
		t.Fatalf("got %v", err)
	}
}

// FuzzDecodeBlock: decoding arbitrary bytes never panics, and whatever it
// accepts has the length the key promised.
func FuzzDecodeBlock(f *testing.F) {
	for _, comp := range []string{"none", "lz4", "zstd"} {
		for _, key := range [][]byte{nil, testKey()} {
			tf, err := newTransform(comp, key, 2)
			if err != nil {
				f.Fatal(err)
			}
			for _, n := range []int{1, 300, 4096} {
				k := slice.BlockKey(1, 0, uint32(n))
				f.Add(tf.encode(k, blockData(n, true)), uint32(n), key != nil)
			}
		}
	}
	f.Add([]byte{}, uint32(0), false)
	f.Add([]byte{0x12, 0x28, 0xb5, 0x2f, 0xfd}, uint32(10), false)
	plainTF, _ := newTransform("none", nil, 2)
	encTF, _ := newTransform("none", testKey(), 2)
	f.Fuzz(func(t *testing.T, stored []byte, want uint32, encrypted bool) {
		tf := plainTF
		if encrypted {
			tf = encTF
		}
		want %= 1 << 20
		got, err := tf.decode(slice.BlockKey(1, 0, want), stored, want)
		if err == nil && len(got) != int(want) {
			t.Fatalf("decoded %d bytes, want %d", len(got), want)
		}
		if err != nil && !errors.Is(err, ErrCorrupt) {
			t.Fatalf("error %v does not wrap ErrCorrupt", err)
		}
	})
}
