package slice

import (
	"encoding/binary"
	"fmt"
	"sort"
)

// ChunkSize is the fixed size of a chunk: a file is a sequence of chunks,
// and no slice crosses a chunk boundary.
const ChunkSize = 64 << 20

// Block size bounds accepted at format time.
const (
	MinBlockSize     = 64 << 10
	MaxBlockSize     = 16 << 20
	DefaultBlockSize = 4 << 20
)

// RecordSize is the encoded length of one Slice.
const RecordSize = 24

// Slice is one record of a chunk's slice list: bytes [Off, Off+Len) of the
// stored slice ID (whose stored length is Size) appear at byte Pos of the
// chunk. ID 0 is a hole (reads as zeros; nothing stored).
type Slice struct {
	Pos  uint32
	ID   uint64
	Size uint32
	Off  uint32
	Len  uint32
}

// End is the chunk offset just past the slice.
func (s Slice) End() uint32 { return s.Pos + s.Len }

// Valid reports whether the record is internally consistent.
func (s Slice) Valid() error {
	switch {
	case s.Len == 0:
		return fmt.Errorf("slice %d: zero length", s.ID)
	case uint64(s.Pos)+uint64(s.Len) > ChunkSize:
		return fmt.Errorf("slice %d: pos %d + len %d crosses the chunk end", s.ID, s.Pos, s.Len)
	case s.ID != 0 && uint64(s.Off)+uint64(s.Len) > uint64(s.Size):
		return fmt.Errorf("slice %d: off %d + len %d exceeds stored size %d", s.ID, s.Off, s.Len, s.Size)
	case s.ID != 0 && s.Size > ChunkSize:
		return fmt.Errorf("slice %d: stored size %d exceeds the chunk size", s.ID, s.Size)
	}
	return nil
}

// Append appends the record's encoding (big-endian, RecordSize bytes).
func (s Slice) Append(b []byte) []byte {
	b = binary.BigEndian.AppendUint32(b, s.Pos)
	b = binary.BigEndian.AppendUint64(b, s.ID)
	b = binary.BigEndian.AppendUint32(b, s.Size)
	b = binary.BigEndian.AppendUint32(b, s.Off)
	return binary.BigEndian.AppendUint32(b, s.Len)
}

// Encode encodes a whole list.
func Encode(ss []Slice) []byte {
	b := make([]byte, 0, len(ss)*RecordSize)
	for _, s := range ss {
		b = s.Append(b)
	}
	return b
}

// Decode parses a slice list. It rejects a truncated list and records that
// fail Valid, so corrupt metadata is reported instead of read as data.
func Decode(b []byte) ([]Slice, error) {
	if len(b)%RecordSize != 0 {
		return nil, fmt.Errorf("slice list of %d bytes is not a multiple of %d: metadata is corrupt", len(b), RecordSize)
	}
	ss := make([]Slice, 0, len(b)/RecordSize)
	for ; len(b) > 0; b = b[RecordSize:] {
		s := Slice{
			Pos:  binary.BigEndian.Uint32(b[0:]),
			ID:   binary.BigEndian.Uint64(b[4:]),
			Size: binary.BigEndian.Uint32(b[12:]),
			Off:  binary.BigEndian.Uint32(b[16:]),
			Len:  binary.BigEndian.Uint32(b[20:]),
		}
		if err := s.Valid(); err != nil {
			return nil, fmt.Errorf("slice record %d: %w", len(ss), err)
		}
		ss = append(ss, s)
	}
	return ss, nil
}

// Resolve applies records in order, later records winning where they
// overlap, and returns the visible pieces sorted by Pos, non-overlapping,
// with gaps between them filled by holes (ID 0), from chunk offset 0 to the
// end of the last record. Each returned piece keeps the ID, Size and the
// adjusted Off of the record it comes from.
func Resolve(records []Slice) []Slice {
	var vis []Slice // sorted, non-overlapping
	for _, r := range records {
		if r.Len == 0 {
			continue
		}
		out := make([]Slice, 0, len(vis)+2)
		for _, v := range vis {
			if v.End() <= r.Pos || v.Pos >= r.End() {
				out = append(out, v)
				continue
			}
			if v.Pos < r.Pos { // left remainder
				l := v
				l.Len = r.Pos - v.Pos
				out = append(out, l)
			}
			if v.End() > r.End() { // right remainder
				rr := v
				cut := r.End() - v.Pos
				rr.Pos = r.End()
				rr.Off = v.Off + cut
				rr.Len = v.Len - cut
				out = append(out, rr)
			}
		}
		out = append(out, r)
		sort.Slice(out, func(i, j int) bool { return out[i].Pos < out[j].Pos })
		vis = out
	}
	// Fill gaps with holes.
	res := make([]Slice, 0, len(vis)*2)
	var at uint32
	for _, v := range vis {
		if v.Pos > at {
			res = append(res, Slice{Pos: at, Len: v.Pos - at})
		}
		if v.ID == 0 {
			v.Size, v.Off = 0, 0
		}
		res = append(res, v)
		at = v.End()
	}
	return mergeHoles(res)
}

func mergeHoles(ss []Slice) []Slice {
	out := ss[:0]
	for _, s := range ss {
		if n := len(out); n > 0 && s.ID == 0 && out[n-1].ID == 0 && out[n-1].End() == s.Pos {
			out[n-1].Len += s.Len
			continue
		}
		out = append(out, s)
	}
	return out
}

// Block is one stored object of a slice.
type Block struct {
	Index int    // block index within the slice
	Off   uint32 // offset of the block within the slice
	Len   uint32 // stored (plain) length of the block
}

// Blocks returns the blocks a slice of the given stored size is cut into.
func Blocks(size, blockSize uint32) []Block {
	if blockSize == 0 {
		panic("slice: zero block size")
	}
	n := int((uint64(size) + uint64(blockSize) - 1) / uint64(blockSize))
	bs := make([]Block, n)
	for i := range bs {
		off := uint32(i) * blockSize
		l := blockSize
		if size-off < l {
			l = size - off
		}
		bs[i] = Block{Index: i, Off: off, Len: l}
	}
	return bs
}

// BlockKey is the object key of one block, relative to the volume's prefix:
// chunks/<id/1e6>/<id/1e3>/<id>_<index>_<length>.
func BlockKey(id uint64, index int, length uint32) string {
	return fmt.Sprintf("chunks/%d/%d/%d_%d_%d", id/1000_000, id/1000, id, index, length)
}

// ParseBlockKey is the inverse of BlockKey (for gc and fsck).
func ParseBlockKey(key string) (id uint64, index int, length uint32, err error) {
	var d1, d2 uint64
	n, err := fmt.Sscanf(key, "chunks/%d/%d/%d_%d_%d", &d1, &d2, &id, &index, &length)
	if err != nil || n != 5 || d1 != id/1000_000 || d2 != id/1000 || index < 0 {
		return 0, 0, 0, fmt.Errorf("%q is not a block key", key)
	}
	if BlockKey(id, index, length) != key {
		return 0, 0, 0, fmt.Errorf("%q is not a canonical block key", key)
	}
	return id, index, length, nil
}

// Range is a piece of a file range that falls inside one chunk.
type Range struct {
	Chunk uint32 // chunk index
	Off   uint32 // offset within the chunk
	Len   uint32
	Buf   int64 // offset of this piece within the caller's buffer
}

// Split cuts the file range [off, off+n) into per-chunk pieces. It returns
// an error for negative or overflowing ranges, or ranges past the largest
// representable chunk index.
func Split(off, n int64) ([]Range, error) {
	if off < 0 || n < 0 || off > (1<<62) || n > (1<<62)-off {
		return nil, fmt.Errorf("invalid file range off=%d len=%d", off, n)
	}
	if (off+n-1)/ChunkSize > 1<<32-1 && n > 0 {
		return nil, fmt.Errorf("file range off=%d len=%d is past the largest file size", off, n)
	}
	var rs []Range
	var done int64
	for done < n {
		pos := off + done
		idx := pos / ChunkSize
		in := pos % ChunkSize
		l := ChunkSize - in
		if l > n-done {
			l = n - done
		}
		rs = append(rs, Range{Chunk: uint32(idx), Off: uint32(in), Len: uint32(l), Buf: done})
		done += l
	}
	return rs, nil
}
