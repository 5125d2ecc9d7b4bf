package chunk

import (
	"context"
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"sync"

	"github.com/skiff-fs/skiff/fsclient/format"
)

// Block format version 2 adds an end-to-end checksum to every block (see
// doc.go, "Stored block format"): CRC-32C (Castagnoli) sums seeded with the
// object key and a piece number, so a block stored under another key, or
// a piece moved within a block, fails its sum like a flipped byte does.
//
//	uncompressed  header ‖ sum₀ ‖ piece₀ ‖ sum₁ ‖ piece₁ ‖ … (pieces of
//	              pieceSize plain bytes, the last one shorter), so a range
//	              read fetches and verifies only the pieces it needs
//	compressed    header ‖ sum ‖ compressed payload, sum over the whole
//	              plain block (piece number wholeBlock), checked after
//	              decompression
//	encrypted     header ‖ nonce ‖ AEAD(the unencrypted body above)
//
// Sums are uint32 little endian.
const (
	pieceSize  = 64 << 10
	sumSize    = 4
	wholeBlock = ^uint32(0) // piece number of a compressed block's one sum
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// blockSummer computes the seeded sums of one block's pieces.
type blockSummer uint32 // CRC-32C of the object key

func summer(key string) blockSummer {
	return blockSummer(crc32.Update(0, castagnoli, []byte(key)))
}

// sum is the CRC-32C of data seeded with CRC-32C(key ‖ piece number).
func (b blockSummer) sum(piece uint32, data []byte) uint32 {
	var p [4]byte
	binary.LittleEndian.PutUint32(p[:], piece)
	return crc32.Update(crc32.Update(uint32(b), castagnoli, p[:]), castagnoli, data)
}

// numPieces is the number of pieces of a block of n plain bytes.
func numPieces(n int) int { return (n + pieceSize - 1) / pieceSize }

// piecedLen is the length of the uncompressed v2 body (sums and pieces) of
// a block of n plain bytes.
func piecedLen(n int) int { return n + sumSize*numPieces(n) }

// appendPieces appends the uncompressed v2 body of plain to dst.
func appendPieces(dst []byte, key string, plain []byte) []byte {
	bs := summer(key)
	for i := 0; len(plain) > 0; i++ {
		p := plain[:min(pieceSize, len(plain))]
		dst = binary.LittleEndian.AppendUint32(dst, bs.sum(uint32(i), p))
		dst = append(dst, p...)
		plain = plain[len(p):]
	}
	return dst
}

// joinPieces verifies an uncompressed v2 body of a block of want plain
// bytes and returns its plain bytes. With inPlace it moves them within
// body (which it then owns), else it copies them into new memory.
func joinPieces(key string, body []byte, want uint32, inPlace bool) ([]byte, error) {
	if len(body) != piecedLen(int(want)) {
		return nil, fmt.Errorf("%w: block %s: holds %d bytes, a block of %d bytes takes %d", ErrCorrupt, key, len(body), want, piecedLen(int(want)))
	}
	var plain []byte
	if inPlace {
		plain = body[:0]
	} else {
		plain = make([]byte, 0, want)
	}
	bs := summer(key)
	for i := 0; len(body) > 0; i++ {
		n := min(pieceSize+sumSize, len(body))
		p := body[sumSize:n]
		if got, stored := bs.sum(uint32(i), p), binary.LittleEndian.Uint32(body); got != stored {
			return nil, pieceCorrupt(key, uint32(i), stored, got)
		}
		body = body[n:]
		plain = append(plain, p...) // memmove when in place: p lies ahead of plain's end
	}
	return plain, nil
}

func pieceCorrupt(key string, piece, stored, got uint32) error {
	if piece == wholeBlock {
		return fmt.Errorf("%w: block %s: checksum mismatch (stored %08x, computed %08x): the object was modified or is another block", ErrCorrupt, key, stored, got)
	}
	return fmt.Errorf("%w: block %s: checksum mismatch in piece %d (stored %08x, computed %08x): the object was modified or is another block", ErrCorrupt, key, piece, stored, got)
}

// pieceSpan is where, in the stored form of an uncompressed, unencrypted
// v2 block of length plain bytes, the whole pieces holding plain bytes
// [off, off+n) lie: stored bytes [start, end), beginning with piece first.
func pieceSpan(length, off, n uint32) (first uint32, start, end int64) {
	first = off / pieceSize
	last := first
	if n > 0 {
		last = (off + n - 1) / pieceSize
	}
	start = headerSize + int64(first)*(pieceSize+sumSize)
	end = min(headerSize+int64(last+1)*(pieceSize+sumSize), headerSize+int64(piecedLen(int(length))))
	return first, start, end
}

// checkSpan verifies the pieces in span (pieceSpan's stored bytes of the
// block key, of length plain bytes) and copies plain bytes [off, off+len(dst))
// of the block into dst.
func checkSpan(key string, span []byte, length, off uint32, dst []byte) error {
	first, start, end := pieceSpan(length, off, uint32(len(dst)))
	if int64(len(span)) != end-start {
		return fmt.Errorf("%w: block %s: range %d+%d returned %d stored bytes, want %d: the object is shorter than its key says", ErrCorrupt, key, off, len(dst), len(span), end-start)
	}
	bs := summer(key)
	pos := first * pieceSize // plain offset of the piece at span[0]
	for i := first; len(span) > 0; i++ {
		k := min(pieceSize+sumSize, len(span))
		p := span[sumSize:k]
		if got, stored := bs.sum(i, p), binary.LittleEndian.Uint32(span); got != stored {
			return pieceCorrupt(key, i, stored, got)
		}
		// Copy the part of p inside [off, off+len(dst)).
		lo, hi := max(off, pos), min(off+uint32(len(dst)), pos+uint32(len(p)))
		if lo < hi {
			copy(dst[lo-off:hi-off], p[lo-pos:hi-pos])
		}
		span = span[k:]
		pos += uint32(len(p))
	}
	return nil
}

// decodeFetched decodes a block just fetched from the object store. It
// decodes in stored's memory (no second block-sized buffer) unless a
// Shared cache is to keep the stored form.
func (s *Store) decodeFetched(key string, stored []byte, length uint32) ([]byte, error) {
	if c := s.cfg.Cache; c != nil && c.Shared() {
		return s.tf.decode(key, stored, length)
	}
	return s.tf.decodeOwned(key, stored, length)
}

// validateBlockFormat fills in and checks Config.BlockFormat.
func (c *Config) validateBlockFormat() error {
	if c.BlockFormat == 0 {
		c.BlockFormat = format.Version
	}
	if c.BlockFormat < 1 || c.BlockFormat > format.Version {
		return fmt.Errorf("block format %d is invalid: use 1 to %d", c.BlockFormat, format.Version)
	}
	return nil
}

// --- range reads of uncompressed, unencrypted blocks ---

// rangeVersion is the format version of the stored block key, for a range
// read of it. It is the version this volume writes, unless the volume may
// hold blocks of an older format too (Config.OldBlocks): then a range
// read cannot tell from the bytes it reads, so the block's header byte is
// read first (once per block: the answer is remembered).
func (s *Store) rangeVersion(ctx context.Context, key string) (byte, error) {
	if !s.cfg.OldBlocks {
		return s.tf.version, nil
	}
	if v, ok := s.versions.get(key); ok {
		return v, nil
	}
	b, err := s.getObject(ctx, key, 0, headerSize, headerSize)
	if err != nil {
		return 0, err
	}
	if len(b) != headerSize {
		return 0, fmt.Errorf("%w: block %s: object is empty", ErrCorrupt, key)
	}
	v, codec := b[0]>>4, b[0]&(codecMask|flagEncrypted)
	if (v != 1 && v != 2) || codec != codecNone {
		return 0, fmt.Errorf("%w: block %s: header %#02x is not a plain block of format 1 or 2", ErrCorrupt, key, b[0])
	}
	s.versions.put(key, v)
	return v, nil
}

// fetchRange reads plain bytes [off, off+n) of the plain-layout block key
// of length plain bytes with one range Get, verifying the pieces it reads
// when the block has sums (format 2).
func (s *Store) fetchRange(ctx context.Context, key string, length, off, n uint32) ([]byte, error) {
	v, err := s.rangeVersion(ctx, key)
	if err != nil {
		return nil, err
	}
	if v < 2 {
		data, err := s.getObject(ctx, key, headerSize+int64(off), int64(n), int(n))
		if err != nil {
			return nil, err
		}
		if len(data) != int(n) {
			return nil, fmt.Errorf("%w: block %s: range %d+%d returned %d bytes: the object is shorter than its key says", ErrCorrupt, key, off, n, len(data))
		}
		return data, nil
	}
	_, start, end := pieceSpan(length, off, n)
	span, err := s.getObject(ctx, key, start, end-start, int(end-start))
	if err != nil {
		return nil, err
	}
	out := make([]byte, n)
	if err := checkSpan(key, span, length, off, out); err != nil {
		return nil, err
	}
	return out, nil
}

// readCachedStored fills dst with plain bytes [off, off+len(dst)) of a
// block from a Shared cache holding plain-layout stored forms. The
// entry's length tells the formats apart (a format 2 block of L bytes is
// longer than a format 1 one by its sums); format 2 pieces are verified
// against their block sums, on top of the cache's own checksums.
func (s *Store) readCachedStored(key string, length uint32, dst []byte, off uint32) bool {
	c := s.cfg.Cache
	if s.tf.version >= 2 {
		_, start, end := pieceSpan(length, off, uint32(len(dst)))
		span := make([]byte, end-start)
		if c.ReadAt(key, headerSize+int64(piecedLen(int(length))), span, start) {
			if err := checkSpan(key, span, length, off, dst); err != nil {
				s.log.Warn("dropping a cached block that fails its checksum; fetching it again", "key", key, "cache", c.Dir(), "err", err)
				c.Remove(key)
				return false
			}
			return true
		}
		if !s.cfg.OldBlocks {
			return false
		}
	}
	return c.ReadAt(key, headerSize+int64(length), dst, headerSize+int64(off))
}

// versionMemo remembers the format versions of blocks whose header a
// range read fetched (Config.OldBlocks); it forgets everything when full.
type versionMemo struct {
	mu sync.Mutex
	m  map[string]byte
}

const maxVersionMemo = 64 << 10

func (vm *versionMemo) get(key string) (byte, bool) {
	vm.mu.Lock()
	defer vm.mu.Unlock()
	v, ok := vm.m[key]
	return v, ok
}

func (vm *versionMemo) put(key string, v byte) {
	vm.mu.Lock()
	defer vm.mu.Unlock()
	if vm.m == nil || len(vm.m) >= maxVersionMemo {
		vm.m = make(map[string]byte)
	}
	vm.m[key] = v
}

// storedBound is the most bytes the stored form of a block of length plain
// bytes takes without compression (the capacity to read it into).
func storedBound(length uint32) int {
	return headerSize + nonceSize + sumSize*(numPieces(int(length))+1) + int(length) + tagSize
}
