package cache

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"sync"
)

// Entry file format, version 2 (see doc.go).
const (
	magic      = "skc2"
	oldMagic   = "skc1" // version 1: one CRC over the whole entry
	headerSize = 16     // fixed part; the piece table follows
	flagStored = 1 << 0
	// flagAligned: the data starts at the first multiple of alignUnit
	// after the piece table, so pieces are page-aligned in the file and
	// a read of one piece reads no extra page.
	flagAligned = 1 << 1
	alignUnit   = 4096
	// alignFrom is the data length from which entries are aligned (the
	// padding would double a small entry's size).
	alignFrom = 64 << 10
	// pieceShift is log2 of the piece size new entries are written with.
	pieceShift = 12
	// maxData bounds an entry's data length (blocks are at most 16 MiB).
	maxData = 1 << 30
	// minPieceShift and maxPieceShift bound what a header may say.
	minPieceShift, maxPieceShift = 12, 24
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// errOldFormat marks an entry written by an older skiff.
var errOldFormat = errors.New("entry of an older cache format")

// layout is what an entry's header says: the data's form and length and
// the checksum of each piece. It is immutable once built.
type layout struct {
	stored  bool
	aligned bool     // the data starts at a multiple of alignUnit
	shift   uint8    // log2 of the piece size
	length  int64    // data bytes
	sums    []uint32 // CRC-32C of each piece, in order (nil in the index)
}

func (l *layout) pieceSize() int64 { return 1 << l.shift }

// light is l without its piece table, for the index.
func (l *layout) light() *layout {
	return &layout{stored: l.stored, aligned: l.aligned, shift: l.shift, length: l.length}
}

// tableEnd is where the piece table ends in the file.
func (l *layout) tableEnd() int64 { return headerSize + 4*int64(pieces(l.length, l.shift)) }

// dataOff is where the data starts in the file.
func (l *layout) dataOff() int64 {
	if l.aligned {
		return (l.tableEnd() + alignUnit - 1) &^ (alignUnit - 1)
	}
	return l.tableEnd()
}

// fileSize is the size of the whole entry file.
func (l *layout) fileSize() int64 { return l.dataOff() + l.length }

func pieces(length int64, shift uint8) int {
	return int((length + 1<<shift - 1) >> shift)
}

// newLayout checksums data for a new entry.
func newLayout(data []byte, stored bool) *layout {
	l := &layout{stored: stored, aligned: len(data) >= alignFrom, shift: pieceShift, length: int64(len(data))}
	l.sums = make([]uint32, pieces(l.length, l.shift))
	ps := int(l.pieceSize())
	for i := range l.sums {
		l.sums[i] = crc32.Checksum(data[i*ps:min((i+1)*ps, len(data))], castagnoli)
	}
	return l
}

// header encodes the header and piece table.
func (l *layout) header() []byte {
	h := make([]byte, l.dataOff()) // zero padding after the table
	copy(h, magic)
	if l.stored {
		h[4] |= flagStored
	}
	if l.aligned {
		h[4] |= flagAligned
	}
	h[5] = l.shift
	binary.LittleEndian.PutUint32(h[8:], uint32(l.length))
	for i, s := range l.sums {
		binary.LittleEndian.PutUint32(h[headerSize+4*i:], s)
	}
	binary.LittleEndian.PutUint32(h[12:], headerSum(h[:l.tableEnd()]))
	return h
}

// headerSum is the CRC-32C of the header h (its own field read as zero)
// and the piece table that ends h.
func headerSum(h []byte) uint32 {
	sum := crc32.Update(0, castagnoli, h[:12])
	sum = crc32.Update(sum, castagnoli, []byte{0, 0, 0, 0})
	return crc32.Update(sum, castagnoli, h[headerSize:])
}

// parseHeader checks the fixed header in h (at least headerSize bytes)
// and returns what it says, without the piece table: the whole header
// (with the table and any padding) is h[:l.dataOff()].
func parseHeader(h []byte) (*layout, error) {
	switch string(h[:4]) {
	case magic:
	case oldMagic:
		return nil, errOldFormat
	default:
		return nil, errors.New("bad magic")
	}
	shift := h[5]
	if shift < minPieceShift || shift > maxPieceShift || h[4]&^(flagStored|flagAligned) != 0 || h[6] != 0 || h[7] != 0 {
		return nil, fmt.Errorf("bad header flags %x %x %x %x", h[4], h[5], h[6], h[7])
	}
	length := int64(binary.LittleEndian.Uint32(h[8:]))
	if length > maxData {
		return nil, fmt.Errorf("header says %d bytes", length)
	}
	return &layout{stored: h[4]&flagStored != 0, aligned: h[4]&flagAligned != 0, shift: shift, length: length}, nil
}

// readLayout reads and verifies the header and piece table of an entry
// file whose size is size.
func readLayout(f *os.File, size int64) (*layout, error) {
	var fixed [headerSize]byte
	if _, err := f.ReadAt(fixed[:], 0); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, fmt.Errorf("file is %d bytes", size)
		}
		return nil, fmt.Errorf("read header: %w", err)
	}
	l, err := parseHeader(fixed[:])
	if err != nil {
		return nil, err
	}
	if size != l.fileSize() {
		return nil, fmt.Errorf("file is %d bytes, its header says %d", size, l.fileSize())
	}
	h := make([]byte, l.dataOff())
	copy(h, fixed[:])
	if _, err := f.ReadAt(h[headerSize:], headerSize); err != nil {
		return nil, fmt.Errorf("read piece table: %w", err)
	}
	return decodeLayout(h, l)
}

// decodeLayout verifies the whole header h (fixed part, table, padding)
// that parseHeader read l from, and returns l with its piece table.
func decodeLayout(h []byte, l *layout) (*layout, error) {
	te := l.tableEnd()
	if want := binary.LittleEndian.Uint32(h[12:]); headerSum(h[:te]) != want {
		return nil, fmt.Errorf("header checksum mismatch: %08x, header says %08x", headerSum(h[:te]), want)
	}
	for _, b := range h[te:] {
		if b != 0 {
			return nil, errors.New("padding after the piece table is not zero")
		}
	}
	l.sums = make([]uint32, pieces(l.length, l.shift))
	for i := range l.sums {
		l.sums[i] = binary.LittleEndian.Uint32(h[headerSize+4*i:])
	}
	return l, nil
}

// scratch holds one piece of the largest size this package writes, for
// reads that cover part of a piece.
var scratch = sync.Pool{New: func() any { b := make([]byte, 1<<pieceShift); return &b }}

// readRange reads data bytes [off, off+len(p)) of the entry in f into p,
// verifying every piece it touches: whole pieces are read straight into
// p, the partly covered ones at the edges through a scratch buffer. On
// error p's contents are undefined.
func readRange(f *os.File, l *layout, p []byte, off int64) error {
	end := off + int64(len(p))
	if off < 0 || end > l.length {
		return fmt.Errorf("range %d+%d is outside the entry's %d bytes", off, len(p), l.length)
	}
	ps := l.pieceSize()
	base := l.dataOff()
	// verify checks piece i, whose bytes are b.
	verify := func(i int64, b []byte) error {
		if sum := crc32.Checksum(b, castagnoli); sum != l.sums[i] {
			return fmt.Errorf("piece %d (bytes %d+%d): checksum mismatch: %08x, header says %08x", i, i*ps, len(b), sum, l.sums[i])
		}
		return nil
	}
	pread := func(b []byte, at int64) error {
		if _, err := f.ReadAt(b, base+at); err != nil {
			if errors.Is(err, io.EOF) {
				return fmt.Errorf("file ends before byte %d of the data: truncated", at+int64(len(b)))
			}
			return fmt.Errorf("read: %w", err)
		}
		return nil
	}
	// partial reads piece i through scratch and copies its part of p.
	partial := func(i int64) error {
		ps0, pe := i*ps, min((i+1)*ps, l.length)
		var buf []byte
		var bp *[]byte
		if pe-ps0 <= 1<<pieceShift {
			bp = scratch.Get().(*[]byte)
			defer scratch.Put(bp)
			buf = (*bp)[:pe-ps0]
		} else {
			buf = make([]byte, pe-ps0)
		}
		if err := pread(buf, ps0); err != nil {
			return err
		}
		if err := verify(i, buf); err != nil {
			return err
		}
		s, e := max(off, ps0), min(end, pe)
		copy(p[s-off:e-off], buf[s-ps0:e-ps0])
		return nil
	}
	for i := off / ps; i*ps < end; {
		ps0, pe := i*ps, min((i+1)*ps, l.length)
		if ps0 < off || pe > end {
			if err := partial(i); err != nil {
				return err
			}
			i++
			continue
		}
		// A run of whole pieces: one read into p, then verify each.
		j := i
		for (j+1)*ps < end && min((j+2)*ps, l.length) <= end {
			j++
		}
		re := min((j+1)*ps, l.length)
		if err := pread(p[ps0-off:re-off], ps0); err != nil {
			return err
		}
		for k := i; k <= j; k++ {
			if err := verify(k, p[k*ps-off:min((k+1)*ps, l.length)-off]); err != nil {
				return err
			}
		}
		i = j + 1
	}
	return nil
}
