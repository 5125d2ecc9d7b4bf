package chunk_test

import (
	"bytes"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/skiff-fs/skiff/fsclient/cache"
	"github.com/skiff-fs/skiff/fsclient/chunk"
	"github.com/skiff-fs/skiff/fsclient/object"
)

// cachePiece is the piece size cache entries are checksummed in.
const cachePiece = 4 << 10

// TestCachedRangeReads reads ranges at and across block and cache-piece
// edges of a file whose blocks are all in the cache (disk tier), on every
// kind of cache content: decoded blocks, the stored form of a plain volume
// (read by range behind its header byte), and stored forms that must be
// decoded whole (compressed, encrypted). Every read must match the data
// and make no Get.
func TestCachedRangeReads(t *testing.T) {
	for _, tc := range []struct {
		name   string
		cfg    chunk.Config
		shared bool
	}{
		{"private/none", chunk.Config{}, false},
		{"shared/none", chunk.Config{}, true},
		{"private/zstd", chunk.Config{Compression: "zstd"}, false},
		{"shared/lz4+key", chunk.Config{Compression: "lz4", Key: bytes.Repeat([]byte{3}, chunk.KeySize)}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.cfg.CacheWrites = true
			e := newCachedEnv(t, tc.cfg, cache.Config{MemSize: -1, Shared: tc.shared})
			ino := e.create()
			// Compressible but not uniform, so lz4 and zstd really encode.
			r := rand.New(rand.NewPCG(9, 9))
			want := make([]byte, 5*bs-333)
			for i := range want {
				want[i] = byte(r.IntN(4))
			}
			e.write(ino, 0, want)
			before := e.g.gets.Load()
			var offs []int
			for _, edge := range []int{0, cachePiece, 2 * cachePiece, bs, bs + cachePiece, 2 * bs, 4 * bs, len(want)} {
				for _, d := range []int{-4097, -1, 0, 1, 100} {
					if o := edge + d; o >= 0 && o < len(want) {
						offs = append(offs, o)
					}
				}
			}
			for _, off := range offs {
				for _, n := range []int{1, 4096, cachePiece, cachePiece + 1, bs, bs + 2*cachePiece + 5} {
					p := bytes.Repeat([]byte{0xEE}, n)
					rd := e.s.NewReader(ino, e.meta) // a new reader: not sequential, nothing held
					got, err := rd.ReadAt(e.ctx, p, int64(off), uint64(len(want)))
					rd.Close()
					end := min(off+n, len(want))
					if got != end-off || (err != nil && end == off+n) {
						t.Fatalf("ReadAt(%d bytes at %d) = %d, %v", n, off, got, err)
					}
					if d := diff(want[off:end], p[:got]); d != "" {
						t.Fatalf("ReadAt(%d bytes at %d): %s", n, off, d)
					}
				}
			}
			if gets := e.g.gets.Load() - before; gets != 0 {
				t.Errorf("reads of cached blocks made %d Gets", gets)
			}
			if st := e.c.Stats(); st.Corrupt != 0 || st.Misses != 0 {
				t.Errorf("cache stats: %+v", st)
			}
		})
	}
}

// TestCorruptCachePieceRefetched damages one checksum piece of a cached
// block: small reads of the block's other pieces are served from the
// cache, and the first read touching the damaged piece gets the right
// bytes with a range Get and fetches the whole block into the cache again.
func TestCorruptCachePieceRefetched(t *testing.T) {
	e := newCachedEnv(t, chunk.Config{CacheWrites: true}, cache.Config{MemSize: -1})
	ino := e.create()
	want := random(rand.New(rand.NewPCG(5, 9)), 2*bs)
	e.write(ino, 0, want)
	path := filepath.Join(e.c.Dir(), "blocks", blockKeys(t, e.env, ino)[1])
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("the block was not cached: %v", err)
	}
	dataOff := len(b) - bs
	b[dataOff+2*cachePiece+7] ^= 0x01 // piece 2 of block 1
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	read := func(off, n int) {
		t.Helper()
		p := make([]byte, n)
		rd := e.s.NewReader(ino, e.meta)
		defer rd.Close()
		if _, err := rd.ReadAt(e.ctx, p, int64(off), uint64(len(want))); err != nil {
			t.Fatal(err)
		}
		if d := diff(want[off:off+n], p); d != "" {
			t.Fatalf("read of %d bytes at %d: %s", n, off, d)
		}
	}
	before := e.g.gets.Load()
	read(bs+100, 4096)
	read(bs+3*cachePiece, 4096)
	if gets := e.g.gets.Load() - before; gets != 0 {
		t.Fatalf("reads of undamaged pieces made %d Gets", gets)
	}
	read(bs+2*cachePiece, 4096)
	e.settle()
	// Its range, and the whole block fetched into the cache.
	if gets := e.g.gets.Load() - before; gets != 2 {
		t.Errorf("the read of the damaged piece made %d Gets, want 2", gets)
	}
	if st := e.c.Stats(); st.Corrupt != 1 {
		t.Errorf("cache stats: %+v", st)
	}
	e.settle()
	before = e.g.gets.Load()
	for off := bs; off < 2*bs; off += cachePiece {
		read(off, 4096)
	}
	if gets := e.g.gets.Load() - before; gets != 0 {
		t.Errorf("reads after the block was fetched again made %d Gets", gets)
	}
	b2, err := os.ReadFile(path)
	if err != nil || bytes.Equal(b, b2) {
		t.Errorf("the block was not cached again intact (%v)", err)
	}
}

// TestWriteBuffersBounded: a long stream of writes keeps the block
// buffers the Store holds within its budget: after writing 16 times the
// budget, and every upload ended, no more than BufferSize bytes of write
// buffer were ever in use.
func TestWriteBuffersBounded(t *testing.T) {
	const budget = 8 * bs
	e := newEnv(t, chunk.Config{BufferSize: budget}, nil)
	ino := e.create()
	data := random(rand.New(rand.NewPCG(2, 2)), 16*budget)
	w := e.s.NewWriter(ino, e.meta)
	for off := 0; off < len(data); off += 3 * bs / 2 {
		end := min(off+3*bs/2, len(data))
		if _, err := w.WriteAt(e.ctx, data[off:end], int64(off)); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Close(e.ctx); err != nil {
		t.Fatal(err)
	}
	st := e.s.Stats()
	if st.BufferedPeak > budget || st.Buffered != 0 {
		t.Errorf("write buffer: peak %d, now %d, budget %d", st.BufferedPeak, st.Buffered, budget)
	}
	if d := diff(data, e.mustRead(ino)); d != "" {
		t.Fatal(fmt.Sprint("read back: ", d))
	}
}

// TestReadaheadShrinksUnderMemoryPressure: while more than half of the
// write buffer budget holds unuploaded data, the read-ahead window's
// limit shrinks towards one block; it grows back once the data is
// uploaded.
func TestReadaheadShrinksUnderMemoryPressure(t *testing.T) {
	const budget = 8 * bs
	e := newEnv(t, chunk.Config{BufferSize: budget, Readahead: 8 * bs, FlushAfter: -1}, nil)
	if got := e.s.ReadaheadLimit(); got != 8*bs {
		t.Fatalf("limit with an empty buffer: %d, want %d", got, 8*bs)
	}
	// Six partly filled blocks, one per file: buffered, not uploaded.
	var ws []*chunk.FileWriter
	for i := range 6 {
		w := e.s.NewWriter(e.create(), e.meta)
		ws = append(ws, w)
		if _, err := w.WriteAt(e.ctx, make([]byte, bs-1), 0); err != nil {
			t.Fatalf("writer %d: %v", i, err)
		}
	}
	got := e.s.ReadaheadLimit()
	// 6*(bs-1) of 8*bs used: 2*bs+6 left of the 4*bs half, so half the
	// window (rounded down), at least one block.
	if want := int64(8*bs) * (budget - 6*(bs-1)) / (budget / 2); got < want-1 || got > want+1 || got >= 8*bs || got < bs {
		t.Errorf("limit under pressure: %d, want %d", got, want)
	}
	for _, w := range ws {
		if err := w.Close(e.ctx); err != nil {
			t.Fatal(err)
		}
	}
	if got := e.s.ReadaheadLimit(); got != 8*bs {
		t.Errorf("limit after the uploads: %d, want %d", got, 8*bs)
	}
}

// TestOutOfOrderReadsAreSequential: reads of a stream that arrive slightly
// out of order (pairs swapped, as the kernel's parallel read-ahead
// requests may) still count as sequential: whole blocks are fetched, one
// Get each, rather than one range Get per read.
func TestOutOfOrderReadsAreSequential(t *testing.T) {
	g := &gated{}
	e := newEnv(t, chunk.Config{Readahead: 4 * bs}, func(s object.Store) object.Store {
		g.Store = s
		return g
	})
	ino := e.create()
	const blocks = 8
	want := random(rand.New(rand.NewPCG(4, 5)), blocks*bs)
	e.write(ino, 0, want)
	before := g.gets.Load()
	rd := e.s.NewReader(ino, e.meta)
	defer rd.Close()
	const req = bs / 4
	got := make([]byte, len(want))
	for i := 0; i < len(want)/req; i += 2 {
		order := []int{i + 1, i} // the second request first
		if i == 0 {
			order = []int{0, 1} // a stream starts at its start
		}
		for _, j := range order {
			if _, err := rd.ReadAt(e.ctx, got[j*req:(j+1)*req], int64(j*req), uint64(len(want))); err != nil && err != io.EOF {
				t.Fatal(err)
			}
		}
	}
	if d := diff(want, got); d != "" {
		t.Fatal(d)
	}
	// Read-ahead may still be finishing; nothing more than one Get per
	// block can come.
	deadline := time.Now().Add(5 * time.Second)
	for g.gets.Load()-before < blocks && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	if gets := g.gets.Load() - before; gets != blocks {
		t.Errorf("out-of-order sequential read of %d blocks made %d Gets, want one per block", blocks, gets)
	}
}
