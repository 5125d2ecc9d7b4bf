package slice

import (
	"bytes"
	"encoding/binary"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestValid(t *testing.T) {
	for _, tc := range []struct {
		s  Slice
		ok bool
	}{
		{Slice{Pos: 0, ID: 1, Size: 10, Off: 0, Len: 10}, true},
		{Slice{Pos: ChunkSize - 1, ID: 1, Size: 1, Len: 1}, true},
		{Slice{Pos: 5, Len: 100}, true}, // hole: Size/Off not checked
		{Slice{ID: 1, Size: 10}, false}, // zero length
		{Slice{Pos: ChunkSize - 1, ID: 1, Size: 2, Len: 2}, false},
		{Slice{Pos: 0xFFFFFFFF, ID: 1, Size: 2, Len: 2}, false}, // overflow
		{Slice{ID: 1, Size: 10, Off: 5, Len: 6}, false},
		{Slice{ID: 1, Size: 10, Off: 0xFFFFFFFF, Len: 6}, false}, // overflow
		{Slice{ID: 1, Size: ChunkSize + 1, Len: 1}, false},
	} {
		if err := tc.s.Valid(); (err == nil) != tc.ok {
			t.Errorf("%+v: Valid() = %v, want ok=%v", tc.s, err, tc.ok)
		}
	}
}

func TestEncodeDecode(t *testing.T) {
	ss := []Slice{{Pos: 1, ID: 2, Size: 30, Off: 4, Len: 5}, {Pos: 100, Len: 7}}
	b := Encode(ss)
	if len(b) != 2*RecordSize {
		t.Fatalf("encoded %d bytes", len(b))
	}
	got, err := Decode(b)
	if err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff(ss, got); d != "" {
		t.Fatal(d)
	}
	if _, err := Decode(b[:RecordSize+1]); err == nil {
		t.Error("truncated list decoded")
	}
	bad := Encode([]Slice{{ID: 1, Size: 10, Off: 8, Len: 5}})
	if _, err := Decode(bad); err == nil {
		t.Error("invalid record decoded")
	}
	if got, err := Decode(nil); err != nil || len(got) != 0 {
		t.Errorf("Decode(nil) = %v, %v", got, err)
	}
}

func TestResolve(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   []Slice
		want []Slice
	}{
		{"empty", nil, []Slice{}},
		{"one", []Slice{{Pos: 0, ID: 1, Size: 10, Len: 10}}, []Slice{{Pos: 0, ID: 1, Size: 10, Len: 10}}},
		{"leading hole", []Slice{{Pos: 5, ID: 1, Size: 10, Len: 10}},
			[]Slice{{Pos: 0, Len: 5}, {Pos: 5, ID: 1, Size: 10, Len: 10}}},
		{"later wins in the middle",
			[]Slice{{Pos: 0, ID: 1, Size: 10, Len: 10}, {Pos: 3, ID: 2, Size: 4, Len: 4}},
			[]Slice{{Pos: 0, ID: 1, Size: 10, Len: 3}, {Pos: 3, ID: 2, Size: 4, Len: 4}, {Pos: 7, ID: 1, Size: 10, Off: 7, Len: 3}}},
		{"earlier does not win",
			[]Slice{{Pos: 3, ID: 2, Size: 4, Len: 4}, {Pos: 0, ID: 1, Size: 10, Len: 10}},
			[]Slice{{Pos: 0, ID: 1, Size: 10, Len: 10}}},
		{"hole record over data, holes merged",
			[]Slice{{Pos: 0, ID: 1, Size: 10, Len: 10}, {Pos: 4, Len: 6}, {Pos: 12, ID: 3, Size: 9, Off: 2, Len: 3}},
			[]Slice{{Pos: 0, ID: 1, Size: 10, Len: 4}, {Pos: 4, Len: 8}, {Pos: 12, ID: 3, Size: 9, Off: 2, Len: 3}}},
		{"gap between", []Slice{{Pos: 0, ID: 1, Size: 2, Len: 2}, {Pos: 4, ID: 2, Size: 2, Len: 2}},
			[]Slice{{Pos: 0, ID: 1, Size: 2, Len: 2}, {Pos: 2, Len: 2}, {Pos: 4, ID: 2, Size: 2, Len: 2}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if d := cmp.Diff(tc.want, Resolve(tc.in)); d != "" {
				t.Error(d)
			}
		})
	}
}

func TestBlocks(t *testing.T) {
	for _, tc := range []struct {
		size, bs uint32
		want     []Block
	}{
		{0, 4, []Block{}},
		{4, 4, []Block{{0, 0, 4}}},
		{9, 4, []Block{{0, 0, 4}, {1, 4, 4}, {2, 8, 1}}},
		{ChunkSize, MaxBlockSize, []Block{{0, 0, MaxBlockSize}, {1, MaxBlockSize, MaxBlockSize}, {2, 2 * MaxBlockSize, MaxBlockSize}, {3, 3 * MaxBlockSize, MaxBlockSize}}},
	} {
		if d := cmp.Diff(tc.want, Blocks(tc.size, tc.bs)); d != "" {
			t.Errorf("Blocks(%d, %d): %s", tc.size, tc.bs, d)
		}
	}
}

func TestBlockKey(t *testing.T) {
	for _, tc := range []struct {
		id    uint64
		index int
		len   uint32
		want  string
	}{
		{1, 0, 4096, "chunks/0/0/1_0_4096"},
		{1234567, 3, 10, "chunks/1/1234/1234567_3_10"},
	} {
		k := BlockKey(tc.id, tc.index, tc.len)
		if k != tc.want {
			t.Errorf("BlockKey = %q, want %q", k, tc.want)
		}
		id, idx, l, err := ParseBlockKey(k)
		if err != nil || id != tc.id || idx != tc.index || l != tc.len {
			t.Errorf("ParseBlockKey(%q) = %d %d %d %v", k, id, idx, l, err)
		}
	}
	for _, bad := range []string{"", "chunks/0/0/1_0", "chunks/1/0/1_0_4", "chunks/0/0/01_0_4", "chunks/0/0/1_-1_4", "x/0/0/1_0_4"} {
		if _, _, _, err := ParseBlockKey(bad); err == nil {
			t.Errorf("ParseBlockKey(%q) accepted", bad)
		}
	}
}

func TestSplit(t *testing.T) {
	for _, tc := range []struct {
		off, n int64
		want   []Range
		err    bool
	}{
		{0, 0, nil, false},
		{10, 5, []Range{{0, 10, 5, 0}}, false},
		{ChunkSize - 2, 5, []Range{{0, ChunkSize - 2, 2, 0}, {1, 0, 3, 2}}, false},
		{ChunkSize, ChunkSize, []Range{{1, 0, ChunkSize, 0}}, false},
		{1, 2 * ChunkSize, []Range{{0, 1, ChunkSize - 1, 0}, {1, 0, ChunkSize, ChunkSize - 1}, {2, 0, 1, 2*ChunkSize - 1}}, false},
		{-1, 1, nil, true},
		{0, -1, nil, true},
		{ChunkSize << 32, 1, nil, true}, // past the largest chunk index
		{ChunkSize<<32 - 1, 1, []Range{{1<<32 - 1, ChunkSize - 1, 1, 0}}, false},
		{1 << 62, 1 << 62, nil, true},
	} {
		got, err := Split(tc.off, tc.n)
		if (err != nil) != tc.err {
			t.Errorf("Split(%d, %d) error %v, want error=%v", tc.off, tc.n, err, tc.err)
			continue
		}
		if d := cmp.Diff(tc.want, got); d != "" {
			t.Errorf("Split(%d, %d): %s", tc.off, tc.n, d)
		}
	}
}

// FuzzDecode: decoding never panics; what decodes re-encodes to the same
// bytes and is valid; valid lists built from the input round-trip.
func FuzzDecode(f *testing.F) {
	f.Add(Encode([]Slice{{Pos: 1, ID: 2, Size: 30, Off: 4, Len: 5}, {Pos: 100, Len: 7}}))
	f.Add([]byte{})
	f.Add(make([]byte, RecordSize))
	f.Add(bytes.Repeat([]byte{0xFF}, 2*RecordSize))
	f.Fuzz(func(t *testing.T, b []byte) {
		ss, err := Decode(b)
		if err == nil {
			for _, s := range ss {
				if s.Valid() != nil {
					t.Fatalf("decoded invalid record %+v", s)
				}
			}
			if !bytes.Equal(Encode(ss), b) {
				t.Fatal("Encode(Decode(b)) != b")
			}
		}
		// Build valid records from the bytes and round-trip them.
		var valid []Slice
		for ; len(b) >= 16; b = b[16:] {
			u := func(i int) uint32 { return binary.LittleEndian.Uint32(b[i:]) }
			s := Slice{Pos: u(0) % ChunkSize, ID: uint64(u(4) % 3), Len: 1 + u(8)%(1<<20)}
			s.Len = min(s.Len, ChunkSize-s.Pos)
			if s.ID != 0 {
				s.Off = u(12) % (1 << 20)
				s.Size = min(s.Off+s.Len+u(12)%7, ChunkSize)
				if s.Off+s.Len > s.Size {
					s.Off = s.Size - s.Len
				}
			}
			if err := s.Valid(); err != nil {
				t.Fatalf("built an invalid record: %v", err)
			}
			valid = append(valid, s)
		}
		got, err := Decode(Encode(valid))
		if err != nil {
			t.Fatal(err)
		}
		if d := cmp.Diff(valid, got, cmpEmpty); d != "" {
			t.Fatal(d)
		}
	})
}

var cmpEmpty = cmp.FilterValues(func(a, b []Slice) bool { return len(a) == 0 && len(b) == 0 }, cmp.Comparer(func(a, b []Slice) bool { return true }))

// FuzzResolve checks Resolve against a byte map: apply records in order,
// each byte remembering which slice byte covers it.
func FuzzResolve(f *testing.F) {
	f.Add([]byte{0, 10, 1, 0, 3, 4, 2, 0})
	f.Add([]byte{5, 1, 1, 0, 5, 1, 0, 0, 0, 255, 2, 9})
	f.Add(bytes.Repeat([]byte{1, 2, 3, 4}, 20))
	f.Fuzz(func(t *testing.T, b []byte) {
		const span = 800 // chunk bytes the records fall in
		var recs []Slice
		for ; len(b) >= 4; b = b[4:] {
			s := Slice{Pos: uint32(b[0]) * 2, Len: uint32(b[1]) + 1, ID: uint64(b[2] % 4)}
			if s.ID != 0 {
				s.Off = uint32(b[3])
				s.Size = s.Off + s.Len + uint32(b[3]%5)
			}
			recs = append(recs, s)
		}
		type owner struct {
			id  uint64
			off uint32
		}
		var model [span]owner
		var end uint32
		for _, r := range recs {
			for i := r.Pos; i < r.End(); i++ {
				model[i] = owner{r.ID, r.Off + i - r.Pos}
				if r.ID == 0 {
					model[i].off = 0
				}
			}
			end = max(end, r.End())
		}
		got := Resolve(recs)
		var at uint32
		for i, p := range got {
			if p.Pos != at || p.Len == 0 {
				t.Fatalf("piece %d %+v: want Pos %d and Len > 0 (sorted, contiguous from 0): %+v", i, p, at, got)
			}
			if p.ID == 0 && (p.Size != 0 || p.Off != 0) {
				t.Fatalf("hole piece %+v keeps Size/Off", p)
			}
			if p.ID == 0 && i > 0 && got[i-1].ID == 0 {
				t.Fatalf("adjacent holes not merged: %+v", got)
			}
			if p.ID != 0 && p.Off+p.Len > p.Size {
				t.Fatalf("piece %+v reads past its slice", p)
			}
			for x := p.Pos; x < p.End(); x++ {
				want := model[x]
				have := owner{p.ID, 0}
				if p.ID != 0 {
					have.off = p.Off + x - p.Pos
				}
				if have != want {
					t.Fatalf("byte %d: Resolve says %+v, model %+v; records %+v, resolved %+v", x, have, want, recs, got)
				}
			}
			at = p.End()
		}
		if at != end {
			t.Fatalf("resolved up to %d, records end at %d", at, end)
		}
	})
}

// FuzzSplit: pieces are contiguous, inside their chunk, non-empty, and
// add up to n; invalid ranges are errors, never panics.
func FuzzSplit(f *testing.F) {
	f.Add(int64(0), int64(0))
	f.Add(int64(ChunkSize-1), int64(2))
	f.Add(int64(-5), int64(10))
	f.Add(int64(1<<62), int64(1<<62))
	f.Add(int64(ChunkSize<<32-1), int64(1))
	f.Fuzz(func(t *testing.T, off, n int64) {
		if n > 8*ChunkSize && n < 1<<40 {
			n %= 8 * ChunkSize // keep piece lists short, but try huge n too
		}
		// Valid: not negative, no overflow, and (if not empty) ending by
		// the end of the largest chunk index.
		valid := off >= 0 && n >= 0 && off <= 1<<62 && n <= 1<<62-off &&
			(n == 0 || uint64(off)+uint64(n) <= uint64(ChunkSize)<<32)
		rs, err := Split(off, n)
		if (err == nil) != valid {
			t.Fatalf("Split(%d, %d) error %v, want valid=%v", off, n, err, valid)
		}
		if err != nil {
			return
		}
		var sum int64
		for i, r := range rs {
			if r.Len == 0 || uint64(r.Off)+uint64(r.Len) > ChunkSize {
				t.Fatalf("piece %d %+v is empty or crosses its chunk", i, r)
			}
			if r.Buf != sum || int64(r.Chunk)*ChunkSize+int64(r.Off) != off+sum {
				t.Fatalf("piece %d %+v is not contiguous (want Buf %d at file offset %d)", i, r, sum, off+sum)
			}
			if i > 0 && r.Off != 0 {
				t.Fatalf("piece %d %+v does not start its chunk", i, r)
			}
			sum += int64(r.Len)
		}
		if sum != n {
			t.Fatalf("pieces sum to %d, want %d", sum, n)
		}
	})
}
