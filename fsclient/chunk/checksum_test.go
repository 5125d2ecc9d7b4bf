package chunk_test

import (
	"bytes"
	"errors"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/skiff-fs/skiff/fsclient/cache"
	"github.com/skiff-fs/skiff/fsclient/chunk"
	"github.com/skiff-fs/skiff/fsclient/slice"
)

const piece = 64 << 10 // chunk's pieceSize

func randBytes(seed uint64, n int) []byte {
	r := rand.New(rand.NewPCG(seed, 1))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

// flipStored flips one bit of the stored object key at offset at.
func flipStored(t testing.TB, e *env, key string, at int64) {
	t.Helper()
	p := filepath.Join(e.blocks.Root(), filepath.FromSlash(key))
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	b[at] ^= 0x04
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestRangeReadVerifiesOnlyItsPieces: on an uncompressed, unencrypted
// volume a random read fetches only the 64 KiB pieces (with their sums)
// holding its bytes and verifies them: a damaged piece elsewhere in the
// block does not fail it, one it reads does (ErrCorrupt, never the
// damaged bytes), and so does a whole-block read.
func TestRangeReadVerifiesOnlyItsPieces(t *testing.T) {
	e := newEnv(t, chunk.Config{BlockSize: 1 << 20, Readahead: -1}, nil)
	data := randBytes(1, 1<<20)
	ino := e.create()
	e.write(ino, 0, data)
	key := slice.BlockKey(e.records(ino, 0)[0].ID, 0, 1<<20)
	// Damage piece 3: its data starts after the header, three pieces
	// with their sums, and its own sum.
	flipStored(t, e, key, 1+3*(piece+4)+4+100)

	read := func(off int64, n int) ([]byte, error) {
		p := make([]byte, n)
		_, err := e.s.NewReader(ino, e.meta).ReadAt(e.ctx, p, off, 1<<20)
		if errors.Is(err, io.EOF) {
			err = nil
		}
		return p, err
	}
	before := e.s.Stats().BytesGot
	p, err := read(4096, 4096)
	if err != nil || !bytes.Equal(p, data[4096:8192]) {
		t.Fatalf("read in piece 0: %v", err)
	}
	if got := e.s.Stats().BytesGot - before; got != piece+4 {
		t.Errorf("read of 4 KiB in piece 0 fetched %d bytes, want one piece and its sum (%d)", got, piece+4)
	}
	p, err = read(2*piece+10, piece) // pieces 2 and 3
	if !errors.Is(err, chunk.ErrCorrupt) {
		t.Fatalf("read through the damaged piece: %v (data equal %v), want ErrCorrupt", err, bytes.Equal(p, data[2*piece+10:3*piece+10]))
	}
	if _, err := e.read(ino); !errors.Is(err, chunk.ErrCorrupt) {
		t.Fatalf("whole-block read: %v, want ErrCorrupt", err)
	}
	p, err = read(5*piece, 100)
	if err != nil || !bytes.Equal(p, data[5*piece:5*piece+100]) {
		t.Fatalf("read in piece 5: %v", err)
	}
}

// TestMixedFormats: one file whose blocks were written in format 1 (a
// volume before it moved to format 2, or an older client) and format 2
// (overwrites and appends since) reads back byte-exact, whole and in
// random ranges, with and without a Shared cache; format 1 blocks still
// read with range Gets at their own offsets.
func TestMixedFormats(t *testing.T) {
	for _, shared := range []bool{false, true} {
		name := "nocache"
		if shared {
			name = "sharedcache"
		}
		t.Run(name, func(t *testing.T) {
			const bs = 256 << 10
			e := newEnv(t, chunk.Config{BlockSize: bs, BlockFormat: 1, Readahead: -1}, nil)
			want := randBytes(2, 3*bs+1000)
			ino := e.create()
			e.write(ino, 0, want)
			// A client of format 2 on the same volume overwrites the
			// middle and appends.
			logs := &bytes.Buffer{}
			var logMu sync.Mutex
			cfg := chunk.Config{BlockSize: bs, BlockFormat: 2, OldBlocks: true, Readahead: -1,
				Logger: slog.New(slog.NewTextHandler(lockedWriter{&logMu, logs}, nil))}
			if shared {
				c, err := cache.New(cache.Config{Dir: t.TempDir(), Size: 64 << 20, Shared: true})
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { c.Close() })
				cfg.Cache = c
			}
			s2, err := chunk.New(e.objs, cfg)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { s2.Close() })
			mid := randBytes(3, bs+5000)
			tail := randBytes(4, bs/2)
			for _, w := range []struct {
				off  int64
				data []byte
			}{{bs / 2, mid}, {int64(len(want)), tail}} {
				fw := s2.NewWriter(ino, e.meta)
				if _, err := fw.WriteAt(e.ctx, w.data, w.off); err != nil {
					t.Fatal(err)
				}
				if err := fw.Close(e.ctx); err != nil {
					t.Fatal(err)
				}
				if end := int(w.off) + len(w.data); end > len(want) {
					want = append(want, make([]byte, end-len(want))...)
				}
				copy(want[w.off:], w.data)
			}
			// Both formats are stored.
			versions := map[byte]int{}
			for _, rec := range e.records(ino, 0) {
				for _, b := range slice.Blocks(rec.Size, bs) {
					raw, err := os.ReadFile(filepath.Join(e.blocks.Root(), filepath.FromSlash(slice.BlockKey(rec.ID, b.Index, b.Len))))
					if err != nil {
						t.Fatal(err)
					}
					versions[raw[0]>>4]++
				}
			}
			if versions[1] == 0 || versions[2] == 0 {
				t.Fatalf("stored block formats %v, want both 1 and 2", versions)
			}
			size := uint64(len(want))
			r := rand.New(rand.NewPCG(5, 6))
			for i := 0; i < 200; i++ {
				off := r.Int64N(int64(size))
				n := 1 + r.IntN(min(int(size-uint64(off)), 3*piece))
				p := make([]byte, n)
				if _, err := s2.NewReader(ino, e.meta).ReadAt(e.ctx, p, off, size); err != nil && err != io.EOF {
					t.Fatalf("read %d+%d: %v", off, n, err)
				}
				if !bytes.Equal(p, want[off:off+int64(n)]) {
					t.Fatalf("read %d+%d: wrong bytes", off, n)
				}
			}
			p := make([]byte, size)
			if _, err := s2.NewReader(ino, e.meta).ReadAt(e.ctx, p, 0, size); err != nil && err != io.EOF {
				t.Fatal(err)
			}
			if !bytes.Equal(p, want) {
				t.Fatal("whole file: wrong bytes")
			}
			logMu.Lock()
			if logs.Len() > 0 {
				t.Errorf("warnings while reading healthy blocks:\n%s", logs)
			}
			logMu.Unlock()
			if shared {
				if st := cfg.Cache.Stats(); st.Hits == 0 || st.Corrupt != 0 {
					t.Errorf("shared cache: %d hits, %d corrupt entries; want hits and none corrupt", st.Hits, st.Corrupt)
				}
			}
		})
	}
}

type lockedWriter struct {
	mu *sync.Mutex
	w  io.Writer
}

func (l lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}
