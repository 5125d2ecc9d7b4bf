package chunk

import (
	"crypto/cipher"
	"crypto/rand"
	"encoding/binary"
	"fmt"
	"sync"

	"github.com/klauspost/compress/zstd"
	"github.com/pierrec/lz4/v4"
	"golang.org/x/crypto/chacha20poly1305"

	"github.com/skiff-fs/skiff/fsclient/slice"
)

// Stored block layout (see doc.go):
//
//	byte 0      header: bits 7-4 format version (1 or 2), bit 3 encrypted,
//	            bits 2-0 codec (0 none, 1 lz4 block, 2 zstd frame)
//	plain:      header ‖ body
//	encrypted:  header ‖ nonce (24 bytes) ‖ XChaCha20-Poly1305(body)
//	            with associated data header ‖ object key
//
// In format 1 body is the payload: the block compressed with the header's
// codec; a block that does not shrink is stored with codec 0 whatever the
// volume's compression. Format 2 adds checksums to the body (blockfmt.go).
// Every block says its format in its header, so a volume may hold both.
const (
	flagEncrypted = 1 << 3
	codecMask     = 0x7
	headerSize    = 1

	codecNone = 0
	codecLZ4  = 1
	codecZstd = 2

	nonceSize = chacha20poly1305.NonceSizeX
	tagSize   = chacha20poly1305.Overhead
)

// KeySize is the length of a volume's data key.
const KeySize = chacha20poly1305.KeySize

// codecByName maps the names of format.Compressions to codecs.
var codecByName = map[string]byte{"": codecNone, "none": codecNone, "lz4": codecLZ4, "zstd": codecZstd}

// transform turns a block into its stored form and back. It is safe for
// concurrent use.
type transform struct {
	version byte        // block format new blocks are written in (1 or 2)
	codec   byte        // codec new blocks are compressed with
	aead    cipher.AEAD // nil: blocks are not encrypted
	zenc    *zstd.Encoder
	zdec    *zstd.Decoder
	lz4s    sync.Pool // *lz4.Compressor (not safe for concurrent use)
}

func newTransform(compression string, key []byte, version int) (*transform, error) {
	codec, ok := codecByName[compression]
	if !ok {
		return nil, fmt.Errorf("unknown compression %q: use one of none, lz4, zstd", compression)
	}
	if version != 1 && version != 2 {
		return nil, fmt.Errorf("block format %d is invalid: use 1 or 2", version)
	}
	t := &transform{version: byte(version), codec: codec}
	t.lz4s.New = func() any { return new(lz4.Compressor) }
	if key != nil {
		if len(key) != KeySize {
			return nil, fmt.Errorf("data key is %d bytes, want %d", len(key), KeySize)
		}
		aead, err := chacha20poly1305.NewX(key)
		if err != nil {
			return nil, err
		}
		t.aead = aead
	}
	var err error
	// Every volume may hold zstd blocks only if its compression is zstd, but
	// the decoder is cheap and lets decode accept any block it can verify.
	t.zdec, err = zstd.NewReader(nil,
		zstd.WithDecoderMaxMemory(slice.MaxBlockSize),
		zstd.WithDecodeAllCapLimit(true),
		zstd.WithDecoderConcurrency(0))
	if err != nil {
		return nil, err
	}
	if codec == codecZstd {
		t.zenc, err = zstd.NewWriter(nil, zstd.WithEncoderConcurrency(0), zstd.WithLowerEncoderMem(true))
		if err != nil {
			return nil, err
		}
	}
	return t, nil
}

// plainLayout reports whether stored blocks are the plain bytes behind a
// header, so a byte range of a block can be read with a range Get.
func (t *transform) plainLayout() bool { return t.codec == codecNone && t.aead == nil }

// encode returns the stored form of plain, the content of the block object
// key. It does not retain plain.
func (t *transform) encode(key string, plain []byte) []byte { return t.encodeTo(key, plain, nil) }

// encodeBound is the capacity a buffer given to encodeTo needs so that
// encoding a block of n bytes allocates nothing.
func (t *transform) encodeBound(n int) int {
	return headerSize + nonceSize + sumSize*(numPieces(n)+1) + max(n+n/64+1024, lz4.CompressBlockBound(n)) + tagSize
}

// encodeTo is encode writing into buf's memory (from index 0) when its
// capacity is at least encodeBound(len(plain)), so the caller can reuse
// buffers; otherwise it allocates.
func (t *transform) encodeTo(key string, plain, buf []byte) []byte {
	pre := headerSize
	if t.aead != nil {
		pre += nonceSize
	}
	sum := 0 // bytes before a compressed payload: format 2 keeps a sum there
	if t.version >= 2 {
		sum = sumSize
	}
	if cap(buf) < t.encodeBound(len(plain)) {
		buf = nil
	}
	alloc := func(n int) []byte {
		if buf != nil {
			return buf[:n]
		}
		return make([]byte, n)
	}
	codec := t.codec
	var out []byte
	switch codec {
	case codecLZ4:
		out = alloc(pre + sum + lz4.CompressBlockBound(len(plain)) + tagSize)
		c := t.lz4s.Get().(*lz4.Compressor)
		n, err := c.CompressBlock(plain, out[pre+sum:len(out)-tagSize])
		t.lz4s.Put(c)
		if err != nil || n == 0 || n >= len(plain) {
			codec = codecNone
		} else {
			out = out[:pre+sum+n]
		}
	case codecZstd:
		if buf != nil {
			out = t.zenc.EncodeAll(plain, buf[:pre+sum])
		} else {
			out = t.zenc.EncodeAll(plain, make([]byte, pre+sum, pre+sum+len(plain)/2+tagSize+64))
		}
		if len(out)-pre-sum >= len(plain) {
			codec = codecNone
		}
	}
	switch {
	case codec == codecNone:
		if buf != nil {
			out = buf[:pre]
		} else {
			out = make([]byte, pre, pre+piecedLen(len(plain))+tagSize)
		}
		if t.version >= 2 {
			out = appendPieces(out, key, plain)
		} else {
			out = append(out, plain...)
		}
	case t.version >= 2:
		binary.LittleEndian.PutUint32(out[pre:], summer(key).sum(wholeBlock, plain))
	}
	hdr := t.version<<4 | codec
	if t.aead == nil {
		out[0] = hdr
		return out
	}
	hdr |= flagEncrypted
	out[0] = hdr
	nonce := out[headerSize:pre]
	if _, err := rand.Read(nonce); err != nil {
		panic(err) // crypto/rand never fails on supported platforms
	}
	// Seal in place: the ciphertext overwrites the payload exactly.
	return t.aead.Seal(out[:pre], nonce, out[pre:], blockAD(hdr, key))
}

// blockAD is the associated data of an encrypted block: its header and its
// object key, so a block stored under another key (or with another header)
// fails authentication.
func blockAD(hdr byte, key string) []byte {
	ad := make([]byte, 0, 1+len(key))
	ad = append(ad, hdr)
	return append(ad, key...)
}

// decode returns the plain content of the stored block key, which must be
// want bytes long. Any mismatch is an error wrapping ErrCorrupt. The result
// may share memory with stored.
func (t *transform) decode(key string, stored []byte, want uint32) ([]byte, error) {
	return t.decodeTo(key, stored, want, false)
}

// decodeOwned is decode of a stored form the caller gives up: it may be
// overwritten, and the result shares its memory.
func (t *transform) decodeOwned(key string, stored []byte, want uint32) ([]byte, error) {
	return t.decodeTo(key, stored, want, true)
}

func (t *transform) decodeTo(key string, stored []byte, want uint32, owned bool) ([]byte, error) {
	corrupt := func(format string, args ...any) error {
		return fmt.Errorf("%w: block %s: %s", ErrCorrupt, key, fmt.Sprintf(format, args...))
	}
	if want > slice.MaxBlockSize {
		return nil, corrupt("length %d exceeds the largest block size", want)
	}
	if len(stored) < headerSize {
		return nil, corrupt("object is empty")
	}
	hdr := stored[0]
	v := hdr >> 4
	if v != 1 && v != 2 {
		return nil, corrupt("unknown block format version %d (this skiff reads 1 and 2)", v)
	}
	payload := stored[headerSize:]
	switch enc := hdr&flagEncrypted != 0; {
	case enc && t.aead == nil:
		return nil, corrupt("block is encrypted but the volume has no data key")
	case !enc && t.aead != nil:
		return nil, corrupt("block is not encrypted in an encrypted volume")
	case enc:
		if len(payload) < nonceSize+tagSize {
			return nil, corrupt("encrypted block of %d bytes is too short", len(stored))
		}
		var dst []byte // new memory, unless stored is ours to overwrite: then in place
		if owned {
			dst = payload[nonceSize:nonceSize]
		}
		var err error
		payload, err = t.aead.Open(dst, payload[:nonceSize], payload[nonceSize:], blockAD(hdr, key))
		if err != nil {
			return nil, corrupt("authentication failed: the object was modified, swapped with another block, or written with another key")
		}
		owned = true // payload is new memory, or stored's own
	}
	codec := hdr & codecMask
	if v < 2 {
		return t.decompress(key, codec, payload, want)
	}
	if codec == codecNone {
		return joinPieces(key, payload, want, owned)
	}
	if len(payload) < sumSize {
		return nil, corrupt("compressed block of %d bytes is too short", len(stored))
	}
	plain, err := t.decompress(key, codec, payload[sumSize:], want)
	if err != nil {
		return nil, err
	}
	if got, stored := summer(key).sum(wholeBlock, plain), binary.LittleEndian.Uint32(payload); got != stored {
		return nil, pieceCorrupt(key, wholeBlock, stored, got)
	}
	return plain, nil
}

// decompress returns the want plain bytes a payload of codec holds.
func (t *transform) decompress(key string, codec byte, payload []byte, want uint32) ([]byte, error) {
	corrupt := func(format string, args ...any) error {
		return fmt.Errorf("%w: block %s: %s", ErrCorrupt, key, fmt.Sprintf(format, args...))
	}
	switch codec {
	case codecNone:
		if len(payload) != int(want) {
			return nil, corrupt("holds %d bytes, its key says %d", len(payload), want)
		}
		return payload, nil
	case codecLZ4:
		plain := make([]byte, want)
		n, err := lz4.UncompressBlock(payload, plain)
		if err != nil {
			return nil, corrupt("lz4: %v", err)
		}
		if n != int(want) {
			return nil, corrupt("decompresses to %d bytes, its key says %d", n, want)
		}
		return plain, nil
	case codecZstd:
		plain, err := t.zdec.DecodeAll(payload, make([]byte, 0, want))
		if err != nil {
			return nil, corrupt("zstd: %v", err)
		}
		if len(plain) != int(want) {
			return nil, corrupt("decompresses to %d bytes, its key says %d", len(plain), want)
		}
		return plain, nil
	default:
		return nil, corrupt("unknown codec %d", codec)
	}
}

func (t *transform) close() {
	t.zdec.Close()
	if t.zenc != nil {
		t.zenc.Close()
	}
}
