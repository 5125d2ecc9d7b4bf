package chunk

import (
	"bytes"
	"errors"
	"strings"
	"testing"

	"github.com/skiff-fs/skiff/fsclient/slice"
)

func mustTransform(tb testing.TB, comp string, key []byte, version int) *transform {
	tb.Helper()
	tf, err := newTransform(comp, key, version)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(tf.close)
	return tf
}

// TestBlockFormatRoundTrip: every codec, with and without encryption,
// at sizes around the piece boundaries, decodes (copying or in place) to
// what was encoded, and an uncompressed, unencrypted block is laid out
// as documented (a sum before each piece).
func TestBlockFormatRoundTrip(t *testing.T) {
	for _, comp := range []string{"none", "lz4", "zstd"} {
		for _, key := range [][]byte{nil, testKey()} {
			tf := mustTransform(t, comp, key, 2)
			for _, n := range []int{0, 1, pieceSize - 1, pieceSize, pieceSize + 1, 3*pieceSize + 17, 4 << 20} {
				for _, compressible := range []bool{true, false} {
					plain := blockData(n, compressible)
					k := slice.BlockKey(42, 1, uint32(n))
					stored := tf.encode(k, plain)
					if stored[0]>>4 != 2 {
						t.Fatalf("header %#x: want format 2", stored[0])
					}
					if cap(stored) <= tf.encodeBound(n) && len(stored) > tf.encodeBound(n) {
						t.Fatalf("stored %d bytes beyond encodeBound %d", len(stored), tf.encodeBound(n))
					}
					if comp == "none" && key == nil && len(stored) != headerSize+piecedLen(n) {
						t.Fatalf("n=%d: stored %d bytes, want %d", n, len(stored), headerSize+piecedLen(n))
					}
					got, err := tf.decode(k, stored, uint32(n))
					if err != nil || !bytes.Equal(got, plain) {
						t.Fatalf("%s key=%v n=%d: decode: %v, equal %v", comp, key != nil, n, err, bytes.Equal(got, plain))
					}
					got, err = tf.decodeOwned(k, bytes.Clone(stored), uint32(n))
					if err != nil || !bytes.Equal(got, plain) {
						t.Fatalf("%s key=%v n=%d: decodeOwned: %v, equal %v", comp, key != nil, n, err, bytes.Equal(got, plain))
					}
				}
			}
		}
	}
}

// TestBlockFlippedByte: a byte flipped anywhere in a format 2 block (its
// header, a sum, its data) fails with ErrCorrupt naming the key, for
// every codec; a format 1 block without encryption accepts most such
// flips (that was the hole).
func TestBlockFlippedByte(t *testing.T) {
	for _, comp := range []string{"none", "lz4", "zstd"} {
		tf := mustTransform(t, comp, nil, 2)
		n := 3*pieceSize + 100
		plain := blockData(n, true)
		k := slice.BlockKey(7, 2, uint32(n))
		stored := tf.encode(k, plain)
		for _, at := range []int{0, 1, 4, 5, len(stored) / 3, len(stored) / 2, len(stored) - 1} {
			bad := bytes.Clone(stored)
			bad[at] ^= 0x10
			got, err := tf.decode(k, bad, uint32(n))
			if !errors.Is(err, ErrCorrupt) {
				t.Errorf("%s: byte %d of %d flipped: decode gave %v (equal %v), want ErrCorrupt", comp, at, len(stored), err, bytes.Equal(got, plain))
				continue
			}
			if !strings.Contains(err.Error(), k) {
				t.Errorf("%s: error %q does not name the key %s", comp, err, k)
			}
		}
	}
}

// TestBlockWrongKey: a format 2 block read under another key (a block
// swapped with another of the same length, or a piece moved) fails.
func TestBlockWrongKey(t *testing.T) {
	for _, comp := range []string{"none", "lz4", "zstd"} {
		tf := mustTransform(t, comp, nil, 2)
		n := 2 * pieceSize
		plain := blockData(n, true)
		k, other := slice.BlockKey(7, 0, uint32(n)), slice.BlockKey(8, 0, uint32(n))
		if _, err := tf.decode(other, tf.encode(k, plain), uint32(n)); !errors.Is(err, ErrCorrupt) {
			t.Errorf("%s: block of %s decoded as %s: %v, want ErrCorrupt", comp, k, other, err)
		}
	}
	// Two pieces swapped inside a block, sums and all.
	tf := mustTransform(t, "none", nil, 2)
	n := 2 * pieceSize
	k := slice.BlockKey(7, 0, uint32(n))
	stored := tf.encode(k, blockData(n, false))
	sw := bytes.Clone(stored)
	a, b := sw[headerSize:headerSize+pieceSize+sumSize], sw[headerSize+pieceSize+sumSize:]
	tmp := bytes.Clone(a)
	copy(a, b)
	copy(b, tmp)
	if _, err := tf.decode(k, sw, uint32(n)); !errors.Is(err, ErrCorrupt) {
		t.Errorf("pieces swapped: %v, want ErrCorrupt", err)
	}
}

// TestV1BlocksStillRead: blocks written in format 1 (older clients, or a
// volume still at version 1) decode with a format 2 transform, and a
// format 1 transform reads format 2 blocks too (a volume moved to 2 keeps
// both).
func TestV1BlocksStillRead(t *testing.T) {
	for _, comp := range []string{"none", "lz4", "zstd"} {
		for _, key := range [][]byte{nil, testKey()} {
			v1, v2 := mustTransform(t, comp, key, 1), mustTransform(t, comp, key, 2)
			for _, n := range []int{1, pieceSize + 1, 1 << 20} {
				plain := blockData(n, true)
				k := slice.BlockKey(3, 0, uint32(n))
				old := v1.encode(k, plain)
				if old[0]>>4 != 1 {
					t.Fatalf("format 1 transform wrote header %#x", old[0])
				}
				if comp == "none" && key == nil && !bytes.Equal(old[headerSize:], plain) {
					t.Fatal("format 1 layout changed: plain bytes behind a header")
				}
				for _, tc := range []struct {
					name   string
					tf     *transform
					stored []byte
				}{{"v1 by v2", v2, old}, {"v2 by v1", v1, v2.encode(k, plain)}} {
					got, err := tc.tf.decode(k, tc.stored, uint32(n))
					if err != nil || !bytes.Equal(got, plain) {
						t.Fatalf("%s %s key=%v n=%d: %v", tc.name, comp, key != nil, n, err)
					}
				}
			}
		}
	}
}

// TestCheckSpan: a range of an uncompressed block needs only the pieces
// holding it: pieceSpan names exactly those, checkSpan verifies them and
// copies the range, and damage outside the span goes unnoticed while
// damage inside it is ErrCorrupt.
func TestCheckSpan(t *testing.T) {
	tf := mustTransform(t, "none", nil, 2)
	n := uint32(4*pieceSize + 1000)
	plain := blockData(int(n), false)
	k := slice.BlockKey(5, 1, n)
	stored := tf.encode(k, plain)
	for _, r := range []struct{ off, n uint32 }{
		{0, 1}, {0, pieceSize}, {pieceSize - 1, 2}, {pieceSize, pieceSize}, {100, 3 * pieceSize},
		{4 * pieceSize, 1000}, {4*pieceSize + 999, 1}, {0, n},
	} {
		first, start, end := pieceSpan(n, r.off, r.n)
		last := (r.off + r.n - 1) / pieceSize
		if first != r.off/pieceSize || start != headerSize+int64(first)*(pieceSize+sumSize) ||
			end != min(headerSize+int64(last+1)*(pieceSize+sumSize), int64(len(stored))) {
			t.Fatalf("pieceSpan(%d, %d, %d) = %d, %d, %d", n, r.off, r.n, first, start, end)
		}
		dst := make([]byte, r.n)
		if err := checkSpan(k, stored[start:end], n, r.off, dst); err != nil || !bytes.Equal(dst, plain[r.off:r.off+r.n]) {
			t.Fatalf("range %d+%d: %v", r.off, r.n, err)
		}
		// Damage in a piece outside the span is not read, so not seen;
		// damage inside is.
		bad := bytes.Clone(stored)
		outside := int64(len(bad) - 1)
		if end == int64(len(bad)) {
			outside = headerSize + sumSize
		}
		if outside < start || outside >= end {
			bad[outside] ^= 1
			if err := checkSpan(k, bad[start:end], n, r.off, dst); err != nil {
				t.Fatalf("range %d+%d: damage outside the span failed it: %v", r.off, r.n, err)
			}
		}
		bad = bytes.Clone(stored)
		bad[end-1] ^= 1
		if err := checkSpan(k, bad[start:end], n, r.off, dst); !errors.Is(err, ErrCorrupt) {
			t.Fatalf("range %d+%d: damage inside the span: %v, want ErrCorrupt", r.off, r.n, err)
		}
		if err := checkSpan(k, stored[start:end-1], n, r.off, dst); !errors.Is(err, ErrCorrupt) {
			t.Fatalf("range %d+%d: short span: %v, want ErrCorrupt", r.off, r.n, err)
		}
	}
}

// FuzzDecode: decoding arbitrary bytes as a block of either format never
// panics; whatever it accepts has the promised length, decodes the same
// in place, and (for an unencrypted block) encoding it again gives a
// block that decodes to the same bytes. Range checks of arbitrary spans
// never panic and agree with whole-block decoding.
func FuzzDecode(f *testing.F) {
	for _, v := range []int{1, 2} {
		for _, comp := range []string{"none", "lz4", "zstd"} {
			tf, err := newTransform(comp, nil, v)
			if err != nil {
				f.Fatal(err)
			}
			for _, n := range []int{1, 300, pieceSize + 3} {
				k := slice.BlockKey(1, 0, uint32(n))
				f.Add(tf.encode(k, blockData(n, true)), uint32(n), uint32(0), uint32(n))
				f.Add(tf.encode(k, blockData(n, false)), uint32(n), uint32(n/2), uint32(1))
			}
			tf.close()
		}
	}
	f.Add([]byte{0x20, 0, 0, 0, 0}, uint32(0), uint32(0), uint32(0))
	f.Add([]byte{0x22, 1, 2, 3}, uint32(10), uint32(1), uint32(2))
	tf := mustTransform(f, "zstd", nil, 2)
	f.Fuzz(func(t *testing.T, stored []byte, want, off, n uint32) {
		want %= 1 << 20
		k := slice.BlockKey(1, 0, want)
		got, err := tf.decode(k, stored, want)
		if err != nil {
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("error %v does not wrap ErrCorrupt", err)
			}
		} else {
			if len(got) != int(want) {
				t.Fatalf("decoded %d bytes, want %d", len(got), want)
			}
			again, err := tf.decodeOwned(k, bytes.Clone(stored), want)
			if err != nil || !bytes.Equal(again, got) {
				t.Fatalf("decodeOwned differs from decode: %v", err)
			}
			re, err := tf.decode(k, tf.encode(k, got), want)
			if err != nil || !bytes.Equal(re, got) {
				t.Fatalf("re-encoded block does not round trip: %v", err)
			}
		}
		if want == 0 {
			return
		}
		off %= want
		n = 1 + n%(want-off)
		_, start, end := pieceSpan(want, off, n)
		if int64(len(stored)) < end {
			return
		}
		dst := make([]byte, n)
		err = checkSpan(k, stored[start:end], want, off, dst)
		if err != nil && !errors.Is(err, ErrCorrupt) {
			t.Fatalf("checkSpan error %v does not wrap ErrCorrupt", err)
		}
		if err == nil && stored[0] == 0x20 && len(stored) == headerSize+piecedLen(int(want)) {
			whole, derr := tf.decode(k, stored, want)
			if derr == nil && !bytes.Equal(dst, whole[off:off+n]) {
				t.Fatal("range read differs from the whole block")
			}
		}
	})
}

// BenchmarkDecode decodes a 4 MiB block of each format and codec as a
// read from the object store does (decodeOwned). Format 2 adds the
// checksums: without compression, a CRC-32C pass and a move of the data.
func BenchmarkDecode(b *testing.B) {
	const n = 4 << 20
	for _, comp := range []string{"none", "lz4"} {
		for _, v := range []int{1, 2} {
			tf := mustTransform(b, comp, nil, v)
			plain := blockData(n, comp != "none")
			k := slice.BlockKey(1, 0, n)
			stored := tf.encode(k, plain)
			buf := make([]byte, len(stored))
			b.Run(comp+"/v"+string(rune('0'+v)), func(b *testing.B) {
				b.SetBytes(n)
				for b.Loop() {
					copy(buf, stored) // decodeOwned may move the data in place
					if _, err := tf.decodeOwned(k, buf, n); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}
