package meta

import (
	"errors"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestAttrRoundTrip(t *testing.T) {
	a := Attr{Typ: TypeDir, Mode: 0o2755, Uid: 1, Gid: 2, Nlink: 3, Size: 4096, Rdev: 5,
		Atime: -6, Mtime: 7, Ctime: 1 << 40, Atimensec: 9, Mtimensec: 999999999, Ctimensec: 11, Parent: 12}
	got, err := decodeAttr(encodeAttr(&a))
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(a, got); diff != "" {
		t.Fatal(diff)
	}
	for _, b := range [][]byte{nil, {1}, {2}, encodeAttr(&a)[:attrLen-1], append(encodeAttr(&a), 0)} {
		if _, err := decodeAttr(b); !errors.Is(err, errCorrupt) {
			t.Errorf("decodeAttr(%x) = %v, want errCorrupt", b, err)
		}
	}
	typ, ino, err := decodeDentry(encodeDentry(TypeSymlink, 77))
	if err != nil || typ != TypeSymlink || ino != 77 {
		t.Fatalf("dentry round trip: %d %d %v", typ, ino, err)
	}
	for _, b := range [][]byte{nil, make([]byte, 9), {9, 0, 0, 0, 0, 0, 0, 0, 1}, {1, 2}} {
		if _, _, err := decodeDentry(b); !errors.Is(err, errCorrupt) {
			t.Errorf("decodeDentry(%x) = %v, want errCorrupt", b, err)
		}
	}
}

func FuzzDecodeAttr(f *testing.F) {
	a := Attr{Typ: TypeFile, Mode: 0o644, Nlink: 1, Size: 123}
	f.Add(encodeAttr(&a))
	d := Attr{Typ: TypeDir, Mode: 0o755, Nlink: 2, Parent: 1}
	f.Add(encodeAttr(&d))
	f.Add([]byte{})
	f.Add([]byte{1, 2, 3})
	f.Fuzz(func(t *testing.T, b []byte) {
		a, err := decodeAttr(b)
		if err != nil {
			if !errors.Is(err, errCorrupt) {
				t.Fatalf("error does not wrap errCorrupt: %v", err)
			}
			return
		}
		// What decodes re-encodes to the same bytes.
		if got := encodeAttr(&a); string(got) != string(b) {
			t.Fatalf("re-encoding differs:\n%x\n%x", b, got)
		}
	})
}

func FuzzDecodeDentry(f *testing.F) {
	f.Add(encodeDentry(TypeFile, 2))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		typ, ino, err := decodeDentry(b)
		if err != nil {
			return
		}
		if got := encodeDentry(typ, ino); string(got) != string(b) {
			t.Fatalf("re-encoding differs")
		}
	})
}

func TestKeys(t *testing.T) {
	if ino, chunk, ok := parseChunkKey(chunkKey(12, 3)); !ok || ino != 12 || chunk != 3 {
		t.Fatalf("parseChunkKey = %d %d %v", ino, chunk, ok)
	}
	for _, k := range []string{"c", "c1", "c_1", "c01_1", "c1_01", "c0_1", "cx_1", "c1_99999999999"} {
		if _, _, ok := parseChunkKey(k); ok {
			t.Errorf("parseChunkKey(%q) accepted", k)
		}
	}
	if ino, ok := parseInoKey("i42", "i"); !ok || ino != 42 {
		t.Fatal("parseInoKey")
	}
	for _, k := range []string{"i", "i0", "i01", "ix", "i-1"} {
		if _, ok := parseInoKey(k, "i"); ok {
			t.Errorf("parseInoKey(%q) accepted", k)
		}
	}
}
