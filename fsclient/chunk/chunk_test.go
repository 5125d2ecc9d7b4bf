package chunk_test

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/skiff-fs/skiff/fsclient/chunk"
	"github.com/skiff-fs/skiff/fsclient/meta"
	"github.com/skiff-fs/skiff/fsclient/object"
	"github.com/skiff-fs/skiff/fsclient/object/objecttest"
	"github.com/skiff-fs/skiff/fsclient/slice"
)

var seedFlag = flag.Uint64("seed", 0, "seed for TestRandomModel (0: random)")

const bs = slice.MinBlockSize // block size of most tests: 64 KiB

func random(r *rand.Rand, n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

// diff describes the first difference of two byte slices.
func diff(want, got []byte) string {
	if len(want) != len(got) {
		return cmp.Diff(len(want), len(got)) + " (lengths)"
	}
	for i := range want {
		if want[i] != got[i] {
			return cmp.Diff(want[i:min(i+16, len(want))], got[i:min(i+16, len(got))]) + " at byte " + strconv.Itoa(i)
		}
	}
	return ""
}

// model is the expected content of a file whose data lies in a few
// regions far apart; everything else reads as zeros.
type model struct {
	regions []region
	size    int64
}

type region struct {
	base int64
	b    []byte
}

func (m *model) at(x int64) byte {
	for _, r := range m.regions {
		if x >= r.base && x < r.base+int64(len(r.b)) {
			return r.b[x-r.base]
		}
	}
	return 0
}

func (m *model) write(off int64, data []byte) {
	for _, r := range m.regions {
		if off >= r.base && off+int64(len(data)) <= r.base+int64(len(r.b)) {
			copy(r.b[off-r.base:], data)
			m.size = max(m.size, off+int64(len(data)))
			return
		}
	}
	panic("write outside the model's regions")
}

func (m *model) truncate(size int64) {
	for _, r := range m.regions {
		if size < r.base+int64(len(r.b)) {
			clear(r.b[max(0, size-r.base):])
		}
	}
	m.size = size
}

func (m *model) read(off int64, n int) []byte {
	b := make([]byte, max(0, min(int64(n), m.size-off)))
	for i := range b {
		b[i] = m.at(off + int64(i))
	}
	return b
}

// TestRandomModel writes random ranges around chunk boundaries through
// one long-lived writer, with flushes, truncates and compactions between,
// and compares every read with an in-memory model. Replay a failure with
// -seed.
func TestRandomModel(t *testing.T) {
	seed := *seedFlag
	if seed == 0 {
		seed = rand.Uint64()
	}
	t.Logf("seed %d (replay with -seed=%d)", seed, seed)
	r := rand.New(rand.NewPCG(seed, 0))
	for _, comp := range []string{"none", "zstd"} {
		t.Run(comp, func(t *testing.T) {
			e := newEnv(t, chunk.Config{Compression: comp, BufferSize: 8 * bs, UploadConcurrency: 4}, nil)
			ino := e.create()
			w := e.s.NewWriter(ino, e.meta)
			rd := e.s.NewReader(ino, e.meta)
			// Writes cluster around the start and the first two chunk
			// boundaries, so they cross blocks and chunks.
			m := &model{}
			for _, base := range []int64{0, slice.ChunkSize - 3*bs/2, 2*slice.ChunkSize - bs/3} {
				m.regions = append(m.regions, region{base: base, b: make([]byte, 8*bs)})
			}
			for step := 0; step < 150; step++ {
				switch op := r.IntN(20); {
				case op < 12: // write
					off := m.regions[r.IntN(len(m.regions))].base + int64(r.IntN(4*bs))
					n := 1 + r.IntN(3*bs)
					if r.IntN(4) == 0 {
						n = 1 + r.IntN(100)
					}
					data := random(r, n)
					if _, err := w.WriteAt(e.ctx, data, off); err != nil {
						t.Fatalf("step %d: write %d at %d: %v", step, n, off, err)
					}
					m.write(off, data)
				case op < 14: // truncate (vfs flushes the writer first)
					if err := w.Flush(e.ctx); err != nil {
						t.Fatal(err)
					}
					ns := m.size * int64(r.IntN(100)) / 100
					if r.IntN(3) == 0 {
						ns = m.size + int64(r.IntN(2*bs))
					}
					if _, err := e.m.Truncate(e.ctx, meta.RootCaller(), meta.Ino(ino), uint64(ns)); err != nil {
						t.Fatal(err)
					}
					m.truncate(ns)
					rd.InvalidateAll()
				case op < 15: // compact every chunk
					if err := w.Flush(e.ctx); err != nil {
						t.Fatal(err)
					}
					for c := uint32(0); c < 3; c++ {
						// Losing to a background compaction is fine.
						if err := e.s.Compact(e.ctx, e.meta, ino, c); err != nil && !errors.Is(err, chunk.ErrChunkChanged) {
							t.Fatalf("step %d: compact chunk %d: %v", step, c, err)
						}
					}
				default: // read a random range (vfs flushes the writer first)
					if err := w.Flush(e.ctx); err != nil {
						t.Fatal(err)
					}
					if got := e.size(ino); got != uint64(m.size) {
						t.Fatalf("step %d: meta size %d, model %d", step, got, m.size)
					}
					off := max(0, m.regions[r.IntN(len(m.regions))].base+int64(r.IntN(6*bs))-bs/2)
					p := make([]byte, 1+r.IntN(3*bs))
					n, err := rd.ReadAt(e.ctx, p, off, uint64(m.size))
					want := m.read(off, len(p))
					if n != len(want) || (n < len(p)) != (err == io.EOF) || (err != nil && err != io.EOF) {
						t.Fatalf("step %d: ReadAt(%d at %d, size %d) = %d, %v; want %d", step, len(p), off, m.size, n, err, len(want))
					}
					if d := diff(want, p[:n]); d != "" {
						t.Fatalf("step %d: read %d at %d: %s", step, len(p), off, d)
					}
				}
			}
			if err := w.Close(e.ctx); err != nil {
				t.Fatal(err)
			}
			// Every region, and a little around it, through a new reader.
			fresh := e.s.NewReader(ino, e.meta)
			for _, rg := range m.regions {
				off := max(0, rg.base-bs)
				p := make([]byte, 10*bs)
				n, err := fresh.ReadAt(e.ctx, p, off, uint64(m.size))
				if err != nil && err != io.EOF {
					t.Fatal(err)
				}
				if d := diff(m.read(off, len(p)), p[:n]); d != "" {
					t.Fatalf("final content at %d: %s", off, d)
				}
			}
		})
	}
}

func TestOverwriteInsideBlock(t *testing.T) {
	e := newEnv(t, chunk.Config{}, nil)
	r := rand.New(rand.NewPCG(1, 2))
	ino := e.create()
	data := random(r, 3*bs)
	e.write(ino, 0, data)
	// Committed data: the overwrite makes a new slice over part of block 1.
	patch := random(r, 1000)
	e.write(ino, bs+500, patch)
	copy(data[bs+500:], patch)
	if d := diff(data, e.mustRead(ino)); d != "" {
		t.Fatal(d)
	}
	// Buffered data: one writer rewrites bytes it has not uploaded yet.
	w := e.s.NewWriter(ino, e.meta)
	part := random(r, bs/2)
	w.WriteAt(e.ctx, part, 0)
	w.WriteAt(e.ctx, []byte("hello"), 100)
	copy(part[100:], "hello")
	copy(data, part)
	if err := w.Close(e.ctx); err != nil {
		t.Fatal(err)
	}
	if d := diff(data, e.mustRead(ino)); d != "" {
		t.Fatal(d)
	}
	if n := len(e.records(ino, 0)); n != 3 {
		t.Errorf("%d records, want 3 (the in-buffer rewrite needs no new slice)", n)
	}
}

func TestAcrossBlocksAndChunks(t *testing.T) {
	e := newEnv(t, chunk.Config{}, nil)
	r := rand.New(rand.NewPCG(3, 4))
	ino := e.create()
	off := int64(slice.ChunkSize - bs - 123)
	data := random(r, 3*bs+7)
	e.write(ino, off, data)
	if got := e.size(ino); got != uint64(off)+uint64(len(data)) {
		t.Fatalf("size %d, want %d", got, off+int64(len(data)))
	}
	rd := e.s.NewReader(ino, e.meta)
	p := make([]byte, len(data))
	if n, err := rd.ReadAt(e.ctx, p, off, e.size(ino)); n != len(p) || err != nil {
		t.Fatalf("ReadAt = %d, %v", n, err)
	}
	if d := diff(data, p); d != "" {
		t.Fatal(d)
	}
	if r0, r1 := e.records(ino, 0), e.records(ino, 1); len(r0) != 1 || len(r1) != 1 || r0[0].End() != slice.ChunkSize || r1[0].Pos != 0 {
		t.Fatalf("records: chunk 0 %+v, chunk 1 %+v", r0, r1)
	}
	// Unaligned reads that straddle the chunk boundary.
	for _, o := range []int64{off + 1, slice.ChunkSize - 10, slice.ChunkSize - bs} {
		q := make([]byte, 2*bs)
		n, err := rd.ReadAt(e.ctx, q, o, e.size(ino))
		if err != nil && err != io.EOF {
			t.Fatal(err)
		}
		if d := diff(data[o-off:min(o-off+2*bs, int64(len(data)))], q[:n]); d != "" {
			t.Fatalf("read at %d: %s", o, d)
		}
	}
}

func TestSparse(t *testing.T) {
	e := newEnv(t, chunk.Config{}, nil)
	ino := e.create()
	e.write(ino, 5*bs+10, []byte("middle"))
	e.write(ino, slice.ChunkSize+100, []byte("next chunk"))
	want := map[int64]string{5*bs + 10: "middle", slice.ChunkSize + 100: "next chunk"}
	rd := e.s.NewReader(ino, e.meta)
	size := e.size(ino)
	// The two written ranges with the holes around them, and a stretch of
	// hole in the middle.
	for _, off := range []int64{0, slice.ChunkSize - 3*bs, slice.ChunkSize / 2} {
		p := bytes.Repeat([]byte{0xAA}, 4*bs)
		n, err := rd.ReadAt(e.ctx, p, off, size)
		if err != nil && err != io.EOF {
			t.Fatal(err)
		}
		exp := make([]byte, min(int64(len(p)), int64(size)-off))
		for at, s := range want {
			if at >= off && at < off+int64(len(exp)) {
				copy(exp[at-off:], s)
			}
		}
		if d := diff(exp, p[:n]); d != "" {
			t.Fatalf("read at %d: %s", off, d)
		}
	}
	// Only what was written is stored.
	if st := e.s.Stats(); st.BlocksPut != 2 {
		t.Errorf("%d blocks stored, want 2", st.BlocksPut)
	}
	// A read wholly past the data of a chunk but inside the file.
	p := bytes.Repeat([]byte{1}, 50)
	if n, err := e.s.NewReader(ino, e.meta).ReadAt(e.ctx, p, 7*bs, e.size(ino)); n != 50 || err != nil || !bytes.Equal(p, make([]byte, 50)) {
		t.Fatalf("ReadAt in a hole = %d, %v, %q", n, err, p)
	}
	// At and past the end: io.EOF.
	if n, err := e.s.NewReader(ino, e.meta).ReadAt(e.ctx, p, int64(e.size(ino)), e.size(ino)); n != 0 || err != io.EOF {
		t.Fatalf("ReadAt at EOF = %d, %v", n, err)
	}
}

func TestTruncateDownThenUp(t *testing.T) {
	e := newEnv(t, chunk.Config{}, nil)
	r := rand.New(rand.NewPCG(5, 6))
	ino := e.create()
	data := random(r, 4*bs)
	e.write(ino, 0, data)
	rd := e.s.NewReader(ino, e.meta)
	p := make([]byte, 4*bs)
	rd.ReadAt(e.ctx, p, 0, e.size(ino)) // cache the view
	ctx, c := e.ctx, meta.RootCaller()
	if _, err := e.m.Truncate(ctx, c, meta.Ino(ino), bs+10); err != nil {
		t.Fatal(err)
	}
	if _, err := e.m.Truncate(ctx, c, meta.Ino(ino), 4*bs); err != nil {
		t.Fatal(err)
	}
	rd.Invalidate(0)
	want := append(append([]byte(nil), data[:bs+10]...), make([]byte, 3*bs-10)...)
	if n, err := rd.ReadAt(ctx, p, 0, e.size(ino)); n != len(p) || err != nil {
		t.Fatalf("ReadAt = %d, %v", n, err)
	}
	if d := diff(want, p); d != "" {
		t.Fatalf("after truncate down and up: %s", d)
	}
	// Compaction keeps the zeros.
	if err := e.s.Compact(ctx, e.meta, ino, 0); err != nil {
		t.Fatal(err)
	}
	if d := diff(want, e.mustRead(ino)); d != "" {
		t.Fatalf("after compaction: %s", d)
	}
}

func TestCompact(t *testing.T) {
	for _, comp := range []string{"none", "lz4"} {
		t.Run(comp, func(t *testing.T) {
			// No background compaction: this test compacts by hand.
			e := newEnv(t, chunk.Config{Compression: comp, CompactThreshold: 1000}, nil)
			r := rand.New(rand.NewPCG(7, 8))
			ino := e.create()
			want := make([]byte, 6*bs)
			for i := 0; i < 30; i++ {
				off := r.IntN(5 * bs)
				data := random(r, 1+r.IntN(bs))
				e.write(ino, int64(off), data)
				copy(want[off:], data)
			}
			// A hole in the middle and one at the end, punched by meta.
			if err := e.m.Fallocate(e.ctx, meta.RootCaller(), meta.Ino(ino), meta.FallocPunchHole|meta.FallocKeepSize, 2*bs, 1000); err != nil {
				t.Fatal(err)
			}
			clear(want[2*bs : 2*bs+1000])
			want = want[:e.size(ino)]
			before := e.records(ino, 0)
			beforeStats := e.s.Stats()
			rd := e.s.NewReader(ino, e.meta)
			p := make([]byte, len(want))
			rd.ReadAt(e.ctx, p, 0, uint64(len(want))) // cache the view
			if err := e.s.Compact(e.ctx, e.meta, ino, 0); err != nil {
				t.Fatal(err)
			}
			after := e.records(ino, 0)
			if len(after) >= len(before) || len(after) != 2 {
				t.Errorf("compaction left %d records of %d, want 2 (one per data run)", len(after), len(before))
			}
			if st := e.s.Stats(); st.BlocksDeleted != beforeStats.BlocksDeleted {
				t.Errorf("compaction deleted %d blocks itself; old blocks are meta's to free", st.BlocksDeleted-beforeStats.BlocksDeleted)
			}
			if d := diff(want, e.mustRead(ino)); d != "" {
				t.Fatalf("after compaction: %s", d)
			}
			// The old reader's cached view is stale: this process's
			// compaction invalidated it.
			if n, err := rd.ReadAt(e.ctx, p, 0, uint64(len(want))); n != len(want) || (err != nil && err != io.EOF) {
				t.Fatal(n, err)
			}
			if d := diff(want, p); d != "" {
				t.Fatalf("old reader after compaction: %s", d)
			}
			// Nothing left to merge: a second Compact changes nothing.
			if err := e.s.Compact(e.ctx, e.meta, ino, 0); err != nil {
				t.Fatal(err)
			}
			if d := cmp.Diff(after, e.records(ino, 0)); d != "" {
				t.Errorf("second compaction changed records: %s", d)
			}
		})
	}
}

// lostRace is a Meta whose CompactChunk always loses the race.
type lostRace struct{ chunk.Meta }

func (lostRace) CompactChunk(context.Context, uint64, uint32, []slice.Slice, []slice.Slice) error {
	return chunk.ErrChunkChanged
}

func TestCompactLostRaceDeletesNewBlocks(t *testing.T) {
	e := newEnv(t, chunk.Config{}, nil)
	ino := e.create()
	for i := 0; i < 4; i++ {
		e.write(ino, int64(i*100), bytes.Repeat([]byte{byte(i + 1)}, 3*bs))
	}
	before := countObjects(t, e.blocks)
	err := e.s.Compact(e.ctx, lostRace{e.meta}, ino, 0)
	if !errors.Is(err, chunk.ErrChunkChanged) {
		t.Fatalf("Compact = %v, want ErrChunkChanged", err)
	}
	if after := countObjects(t, e.blocks); after != before {
		t.Errorf("%d objects after a lost compaction, %d before: the new slice's blocks leaked", after, before)
	}
}

func countObjects(t testing.TB, s object.Store) int {
	t.Helper()
	infos, err := s.List(context.Background(), "", "", 100000)
	if err != nil {
		t.Fatal(err)
	}
	return len(infos)
}

func TestBackgroundCompaction(t *testing.T) {
	e := newEnv(t, chunk.Config{CompactThreshold: 4}, nil)
	ino := e.create()
	w := e.s.NewWriter(ino, e.meta)
	want := make([]byte, 2000)
	for i := 0; i < 12; i++ {
		off := (i * 100) % 700 // overlapping: one run of data
		data := bytes.Repeat([]byte{byte(i + 1)}, 300)
		w.WriteAt(e.ctx, data, int64(off))
		copy(want[off:], data)
		if err := w.Flush(e.ctx); err != nil {
			t.Fatal(err)
		}
	}
	w.Close(e.ctx)
	want = want[:e.size(ino)]
	deadline := time.Now().Add(10 * time.Second)
	for len(e.records(ino, 0)) > 4 {
		if time.Now().After(deadline) {
			t.Fatalf("still %d records: background compaction did not run", len(e.records(ino, 0)))
		}
		time.Sleep(10 * time.Millisecond)
	}
	if d := diff(want, e.mustRead(ino)); d != "" {
		t.Fatal(d)
	}
}

func TestMissingBlock(t *testing.T) {
	e := newEnv(t, chunk.Config{}, nil)
	ino := e.create()
	e.write(ino, 0, bytes.Repeat([]byte("x"), 2*bs))
	key := slice.BlockKey(e.records(ino, 0)[0].ID, 1, bs)
	if err := e.blocks.Delete(e.ctx, key); err != nil {
		t.Fatal(err)
	}
	_, err := e.read(ino)
	if !errors.Is(err, chunk.ErrBlockMissing) || !errors.Is(err, object.ErrNotFound) || !strings.Contains(err.Error(), key) {
		t.Fatalf("read = %v; want ErrBlockMissing and object.ErrNotFound naming %s", err, key)
	}
	// DeleteSlice is idempotent over missing blocks.
	rec := e.records(ino, 0)[0]
	for i := 0; i < 2; i++ {
		if err := e.s.DeleteSlice(e.ctx, rec.ID, rec.Size); err != nil {
			t.Fatal(err)
		}
	}
	if n := countObjects(t, e.blocks); n != 0 {
		t.Errorf("%d objects left after DeleteSlice", n)
	}
}

func TestCodecs(t *testing.T) {
	for _, comp := range []string{"none", "lz4", "zstd"} {
		for _, encrypted := range []bool{false, true} {
			name := comp
			var key []byte
			if encrypted {
				name += "+xchacha20poly1305"
				key = bytes.Repeat([]byte{3}, chunk.KeySize)
			}
			t.Run(name, func(t *testing.T) {
				e := newEnv(t, chunk.Config{Compression: comp, Key: key}, nil)
				r := rand.New(rand.NewPCG(9, 10))
				ino := e.create()
				text := bytes.Repeat([]byte("compressible text, "), 3*bs/19)
				rnd := random(r, bs+77)
				e.write(ino, 0, text)
				e.write(ino, int64(len(text)), rnd)
				want := append(append([]byte(nil), text...), rnd...)
				if d := diff(want, e.mustRead(ino)); d != "" {
					t.Fatal(d)
				}
				// Partial, unaligned reads.
				rd := e.s.NewReader(ino, e.meta)
				for _, o := range []int{1, bs - 3, 2*bs + 5} {
					p := make([]byte, 1000)
					if _, err := rd.ReadAt(e.ctx, p, int64(o), uint64(len(want))); err != nil {
						t.Fatal(err)
					}
					if d := diff(want[o:o+1000], p); d != "" {
						t.Fatalf("at %d: %s", o, d)
					}
				}
				st := e.s.Stats()
				if comp != "none" && st.BytesPut >= int64(len(want)) {
					t.Errorf("%s stored %d bytes for %d bytes of data", comp, st.BytesPut, len(want))
				}
				if encrypted {
					// No stored object holds the plain text.
					infos, _ := e.blocks.List(e.ctx, "", "", 1000)
					for _, info := range infos {
						b, _ := os.ReadFile(filepath.Join(e.blocks.Root(), info.Key))
						if bytes.Contains(b, []byte("compressible text")) || bytes.Contains(b, rnd[:32]) {
							t.Errorf("object %s holds plain text", info.Key)
						}
					}
				}
			})
		}
	}
}

// blockFiles returns the paths of a file's block objects on disk.
func blockFiles(t testing.TB, e *env, ino uint64) []string {
	t.Helper()
	var paths []string
	for _, rec := range e.records(ino, 0) {
		for _, b := range slice.Blocks(rec.Size, bs) {
			paths = append(paths, filepath.Join(e.blocks.Root(), slice.BlockKey(rec.ID, b.Index, b.Len)))
		}
	}
	return paths
}

func TestTamperDetected(t *testing.T) {
	for _, comp := range []string{"none", "zstd"} {
		t.Run(comp, func(t *testing.T) {
			e := newEnv(t, chunk.Config{Compression: comp, Key: bytes.Repeat([]byte{4}, chunk.KeySize)}, nil)
			ino := e.create()
			e.write(ino, 0, random(rand.New(rand.NewPCG(1, 1)), 2*bs))
			path := blockFiles(t, e, ino)[1]
			b, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			b[len(b)/2] ^= 0x40
			if err := os.WriteFile(path, b, 0o644); err != nil {
				t.Fatal(err)
			}
			_, err = e.read(ino)
			if !errors.Is(err, chunk.ErrCorrupt) || !strings.Contains(err.Error(), filepath.Base(path)) {
				t.Fatalf("read of a tampered block = %v; want ErrCorrupt naming it", err)
			}
		})
	}
}

func TestSwappedBlocksDetected(t *testing.T) {
	e := newEnv(t, chunk.Config{Key: bytes.Repeat([]byte{5}, chunk.KeySize)}, nil)
	ino := e.create()
	r := rand.New(rand.NewPCG(2, 2))
	e.write(ino, 0, random(r, 2*bs))
	paths := blockFiles(t, e, ino)
	a, _ := os.ReadFile(paths[0])
	b, _ := os.ReadFile(paths[1])
	if len(a) != len(b) {
		t.Fatalf("blocks of %d and %d bytes: the test needs equal lengths", len(a), len(b))
	}
	if err := os.WriteFile(paths[1], a, 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := e.read(ino)
	if !errors.Is(err, chunk.ErrCorrupt) {
		t.Fatalf("read of a swapped block = %v; want ErrCorrupt", err)
	}
}

func TestKeys(t *testing.T) {
	defer chunk.SetKDFCost(1, 64, 1)()
	sealed, key, err := chunk.NewKey([]byte("correct horse"))
	if err != nil {
		t.Fatal(err)
	}
	if len(key) != chunk.KeySize || bytes.Contains(sealed.WrappedKey, key) {
		t.Fatalf("bad key or wrapping")
	}
	got, err := chunk.OpenKey(sealed, []byte("correct horse"))
	if err != nil || !bytes.Equal(got, key) {
		t.Fatalf("OpenKey = %x, %v", got, err)
	}
	_, err = chunk.OpenKey(sealed, []byte("wrong horse"))
	if !errors.Is(err, chunk.ErrWrongPassphrase) || err.Error() != "wrong passphrase for the volume's encryption key" {
		t.Fatalf("wrong passphrase: %v", err)
	}
	_, err = chunk.OpenKey(sealed, nil)
	if err == nil || err.Error() != "volume is encrypted: set SKIFF_PASSPHRASE or pass --passphrase-file" {
		t.Fatalf("no passphrase: %v", err)
	}
	if k, err := chunk.OpenKey(nil, nil); k != nil || err != nil {
		t.Fatalf("unencrypted volume: %x, %v", k, err)
	}
	if _, _, err := chunk.NewKey(nil); err == nil {
		t.Fatal("NewKey accepted an empty passphrase")
	}
	// A damaged record: changed salt derives another key.
	bad := *sealed
	bad.Salt = append([]byte{1}, sealed.Salt[1:]...)
	if _, err := chunk.OpenKey(&bad, []byte("correct horse")); !errors.Is(err, chunk.ErrWrongPassphrase) {
		t.Fatalf("changed salt: %v", err)
	}
	bad = *sealed
	bad.KDF = "scrypt"
	if _, err := chunk.OpenKey(&bad, []byte("correct horse")); err == nil {
		t.Fatal("unknown KDF accepted")
	}
	// The key really encrypts: a store with another key cannot read.
	e := newEnv(t, chunk.Config{Key: key}, nil)
	ino := e.create()
	e.write(ino, 0, []byte("secret"))
	other, _ := chunk.New(e.objs, chunk.Config{BlockSize: bs, Key: bytes.Repeat([]byte{9}, chunk.KeySize)})
	defer other.Close()
	_, err = other.NewReader(ino, e.meta).ReadAt(e.ctx, make([]byte, 6), 0, 6)
	if !errors.Is(err, chunk.ErrCorrupt) {
		t.Fatalf("read with another key: %v", err)
	}
}

func TestDefaultKDFCost(t *testing.T) {
	sealed, key, err := chunk.NewKey([]byte("pw"))
	if err != nil {
		t.Fatal(err)
	}
	if sealed.KDF != "argon2id" || sealed.Time != 3 || sealed.MemoryKiB != 64<<10 || sealed.Threads != 4 || len(sealed.Salt) != 16 {
		t.Fatalf("sealed = %+v", sealed)
	}
	if got, err := chunk.OpenKey(sealed, []byte("pw")); err != nil || !bytes.Equal(got, key) {
		t.Fatal(got, err)
	}
}

func TestConfigErrors(t *testing.T) {
	ds := newEnv(t, chunk.Config{}, nil).objs
	for _, tc := range []struct {
		cfg  chunk.Config
		want string
	}{
		{chunk.Config{Compression: "x"}, `unknown compression "x": use one of none, lz4, zstd`},
		{chunk.Config{BlockSize: 1000}, "block size 1000 is invalid"},
		{chunk.Config{Key: []byte("short")}, "data key is 5 bytes"},
		{chunk.Config{BlockSize: 1 << 20, BufferSize: 1 << 19}, "smaller than the block size"},
		{chunk.Config{UploadConcurrency: -1}, "negative"},
	} {
		_, err := chunk.New(ds, tc.cfg)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%+v: got %v, want %q", tc.cfg, err, tc.want)
		}
	}
}

func TestUploadFailureNotCommitted(t *testing.T) {
	var f *objecttest.Faulty
	e := newEnv(t, chunk.Config{UploadAttempts: 2}, func(s object.Store) object.Store {
		f = objecttest.NewFaulty(s)
		return f
	})
	ino := e.create()
	e.write(ino, 0, bytes.Repeat([]byte("a"), bs))
	f.Inject(objecttest.Fault{Ops: objecttest.OpPut}) // every Put fails
	w := e.s.NewWriter(ino, e.meta)
	w.WriteAt(e.ctx, bytes.Repeat([]byte("b"), 2*bs), 0)
	err := w.Flush(e.ctx)
	if !errors.Is(err, objecttest.ErrInjected) || !strings.Contains(err.Error(), "chunks/") {
		t.Fatalf("Flush = %v; want the injected error naming the block", err)
	}
	if err2 := w.Close(e.ctx); err2 == nil {
		t.Error("Close after a lost upload returned nil")
	}
	if n := len(e.records(ino, 0)); n != 1 {
		t.Fatalf("%d records: the failed slice was committed", n)
	}
	f.Reset()
	if d := diff(bytes.Repeat([]byte("a"), bs), e.mustRead(ino)); d != "" {
		t.Fatal(d)
	}
	// A transient failure is retried.
	f.FailNext(objecttest.OpPut, 1)
	e.write(ino, 0, []byte("c"))

	// One block of a slice fails for good, the other is stored: the stored
	// one is deleted again, since nothing will ever reference it.
	e2 := newEnv(t, chunk.Config{UploadAttempts: 1, UploadConcurrency: 1}, func(s object.Store) object.Store {
		f = objecttest.NewFaulty(s)
		return f
	})
	ino = e2.create()
	f.FailNext(objecttest.OpPut, 1)
	w = e2.s.NewWriter(ino, e2.meta)
	w.WriteAt(e2.ctx, bytes.Repeat([]byte("d"), 2*bs), 0)
	if err := w.Close(e2.ctx); !errors.Is(err, objecttest.ErrInjected) {
		t.Fatalf("Close = %v", err)
	}
	if puts, n := f.Calls(objecttest.OpPut), countObjects(t, e2.blocks); puts != 2 || n != 0 {
		t.Fatalf("%d Puts, %d objects left; want 2 Puts and the stored block deleted", puts, n)
	}
}

func TestBackPressure(t *testing.T) {
	g := &gated{putDelay: 20 * time.Millisecond}
	const budget = 2 * bs
	e := newEnv(t, chunk.Config{BufferSize: budget, UploadConcurrency: 2}, func(s object.Store) object.Store {
		g.Store = s
		return g
	})
	r := rand.New(rand.NewPCG(11, 12))
	const files = 3
	data := make([][]byte, files)
	var wg sync.WaitGroup
	inos := make([]uint64, files)
	for i := range files {
		inos[i] = e.create()
		data[i] = random(r, 6*bs+1234)
	}
	errs := make(chan error, files)
	for i := range files {
		wg.Add(1)
		go func() {
			defer wg.Done()
			w := e.s.NewWriter(inos[i], e.meta)
			for off := 0; off < len(data[i]); off += 10000 {
				if _, err := w.WriteAt(e.ctx, data[i][off:min(off+10000, len(data[i]))], int64(off)); err != nil {
					errs <- err
					return
				}
			}
			errs <- w.Close(e.ctx)
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	st := e.s.Stats()
	if st.BufferedPeak > budget || st.BufferedPeak == 0 {
		t.Errorf("buffer peak %d, budget %d", st.BufferedPeak, budget)
	}
	if st.BufferWaits == 0 {
		t.Errorf("no write waited for buffer space: the test exerted no back-pressure")
	}
	if st.Buffered != 0 {
		t.Errorf("%d bytes still accounted as buffered", st.Buffered)
	}
	for i := range files {
		if d := diff(data[i], e.mustRead(inos[i])); d != "" {
			t.Fatalf("file %d: %s", i, d)
		}
	}
	// A blocked write honours its context.
	g.putDelay = time.Hour
	w := e.s.NewWriter(e.create(), e.meta)
	ctx, cancel := context.WithTimeout(e.ctx, 200*time.Millisecond)
	defer cancel()
	_, err := w.WriteAt(ctx, make([]byte, 4*bs), 0)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("WriteAt with a full buffer and a stuck store = %v; want DeadlineExceeded", err)
	}
}

func TestConcurrentReadersOneGet(t *testing.T) {
	for _, comp := range []string{"none", "zstd"} {
		t.Run(comp, func(t *testing.T) {
			g := &gated{}
			e := newEnv(t, chunk.Config{Compression: comp}, func(s object.Store) object.Store {
				g.Store = s
				return g
			})
			ino := e.create()
			want := random(rand.New(rand.NewPCG(1, 3)), bs)
			e.write(ino, 0, want)
			gate := make(chan struct{})
			g.mu.Lock()
			g.getGate = gate
			g.mu.Unlock()
			before := g.gets.Load()
			const readers = 8
			var wg sync.WaitGroup
			errs := make(chan error, readers)
			for i := range readers {
				wg.Add(1)
				go func() {
					defer wg.Done()
					// Each reader is a separate open file; half read a
					// part (a range Get where blocks are plain), half the
					// whole block.
					p, off := make([]byte, bs), 0
					if i%2 == 1 {
						p, off = p[:1000], 100
					}
					rd := e.s.NewReader(ino, e.meta)
					_, err := rd.ReadAt(e.ctx, p, int64(off), bs)
					if err == nil && !bytes.Equal(p, want[off:off+len(p)]) {
						err = errors.New("wrong data")
					}
					errs <- err
				}()
			}
			// Wait until the readers wait on fetches, then let the Gets go.
			deadline := time.Now().Add(5 * time.Second)
			for e.s.Stats().FetchCollapsed+g.gets.Load()-before < readers {
				if time.Now().After(deadline) {
					t.Fatalf("readers did not arrive: %d collapsed, %d gets", e.s.Stats().FetchCollapsed, g.gets.Load()-before)
				}
				time.Sleep(time.Millisecond)
			}
			close(gate)
			wg.Wait()
			close(errs)
			for err := range errs {
				if err != nil {
					t.Fatal(err)
				}
			}
			gets := g.gets.Load() - before
			wantGets := int64(1)
			if comp == "none" {
				wantGets = 2 // whole block, and one range for the partial readers
			}
			if gets != wantGets {
				t.Errorf("%d readers made %d Gets, want %d", readers, gets, wantGets)
			}
		})
	}
}

func TestCanceledReaderDoesNotFailOthers(t *testing.T) {
	g := &gated{}
	e := newEnv(t, chunk.Config{}, func(s object.Store) object.Store {
		g.Store = s
		return g
	})
	ino := e.create()
	e.write(ino, 0, bytes.Repeat([]byte("z"), bs))
	gate := make(chan struct{})
	g.mu.Lock()
	g.getGate = gate
	g.mu.Unlock()
	ctx, cancel := context.WithCancel(e.ctx)
	first := make(chan error, 1)
	go func() {
		_, err := e.s.NewReader(ino, e.meta).ReadAt(ctx, make([]byte, bs), 0, bs)
		first <- err
	}()
	for g.gets.Load() == 0 {
		time.Sleep(time.Millisecond)
	}
	second := make(chan error, 1)
	go func() {
		p := make([]byte, bs)
		_, err := e.s.NewReader(ino, e.meta).ReadAt(e.ctx, p, 0, bs)
		if err == nil && p[bs-1] != 'z' {
			err = errors.New("wrong data")
		}
		second <- err
	}()
	for e.s.Stats().FetchCollapsed == 0 {
		time.Sleep(time.Millisecond)
	}
	cancel()
	if err := <-first; !errors.Is(err, context.Canceled) {
		t.Fatalf("canceled reader: %v", err)
	}
	close(gate)
	if err := <-second; err != nil {
		t.Fatalf("the other reader failed with the first one: %v", err)
	}
}

func TestWriterVisibleToReaderAfterFlush(t *testing.T) {
	e := newEnv(t, chunk.Config{}, nil)
	ino := e.create()
	rd := e.s.NewReader(ino, e.meta)
	w := e.s.NewWriter(ino, e.meta)
	for i := 0; i < 3; i++ {
		w.WriteAt(e.ctx, []byte{byte('a' + i)}, int64(i))
		if err := w.Flush(e.ctx); err != nil {
			t.Fatal(err)
		}
		p := make([]byte, i+1)
		// No Invalidate: this process's commit makes the view stale.
		if _, err := rd.ReadAt(e.ctx, p, 0, e.size(ino)); err != nil && err != io.EOF {
			t.Fatal(err)
		}
		if want := "abc"[:i+1]; string(p) != want {
			t.Fatalf("read %q, want %q", p, want)
		}
	}
	w.Close(e.ctx)
	if _, err := w.WriteAt(e.ctx, []byte("x"), 0); !errors.Is(err, chunk.ErrClosed) {
		t.Fatalf("write after Close = %v", err)
	}
}

func TestSequentialReadFetchesEachBlockOnce(t *testing.T) {
	for _, comp := range []string{"none", "lz4"} {
		t.Run(comp, func(t *testing.T) {
			g := &gated{}
			e := newEnv(t, chunk.Config{Compression: comp, Readahead: 4 * bs}, func(s object.Store) object.Store {
				g.Store = s
				return g
			})
			ino := e.create()
			const blocks = 12
			want := random(rand.New(rand.NewPCG(4, 4)), blocks*bs)
			e.write(ino, 0, want)
			before := g.gets.Load()
			rd := e.s.NewReader(ino, e.meta)
			got := make([]byte, 0, len(want))
			p := make([]byte, bs/4)
			for off := int64(0); off < int64(len(want)); off += int64(len(p)) {
				n, err := rd.ReadAt(e.ctx, p, off, uint64(len(want)))
				if err != nil && err != io.EOF {
					t.Fatal(err)
				}
				got = append(got, p[:n]...)
			}
			if d := diff(want, got); d != "" {
				t.Fatal(d)
			}
			// Read-ahead may still be finishing the last window.
			deadline := time.Now().Add(5 * time.Second)
			for e.s.Stats().BlocksGot-before < blocks && time.Now().Before(deadline) {
				time.Sleep(time.Millisecond)
			}
			if gets := g.gets.Load() - before; gets != blocks {
				t.Errorf("sequential read of %d blocks made %d Gets, want one per block", blocks, gets)
			}
		})
	}
}

func TestConcurrentWritesOneFile(t *testing.T) {
	e := newEnv(t, chunk.Config{BufferSize: 4 * bs}, nil)
	ino := e.create()
	want := random(rand.New(rand.NewPCG(6, 6)), 8*bs)
	w := e.s.NewWriter(ino, e.meta)
	var wg sync.WaitGroup
	const piece = 10000
	for g := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for off := g * piece; off < len(want); off += 4 * piece {
				end := min(off+piece, len(want))
				if _, err := w.WriteAt(e.ctx, want[off:end], int64(off)); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	// A concurrent Flush must not break ordering or lose bytes.
	wg.Add(1)
	go func() {
		defer wg.Done()
		for range 5 {
			if err := w.Flush(e.ctx); err != nil {
				t.Error(err)
			}
		}
	}()
	wg.Wait()
	if err := w.Close(e.ctx); err != nil {
		t.Fatal(err)
	}
	if d := diff(want, e.mustRead(ino)); d != "" {
		t.Fatal(d)
	}
}

func TestIdleWriterFlushedInBackground(t *testing.T) {
	e := newEnv(t, chunk.Config{FlushAfter: 50 * time.Millisecond}, nil)
	ino := e.create()
	w := e.s.NewWriter(ino, e.meta)
	defer w.Close(e.ctx)
	if _, err := w.WriteAt(e.ctx, []byte("kept open, never flushed"), 0); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for e.size(ino) == 0 {
		if time.Now().After(deadline) {
			t.Fatal("an idle writer's data was not committed")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if got := string(e.mustRead(ino)); got != "kept open, never flushed" {
		t.Fatalf("read %q", got)
	}
}

// TestFlushByAge: a writer that never pauses still has its data committed
// in the background once it is FlushAfter old (plus its upload and commit
// time), so a crash loses at most about the last FlushAfter of it.
func TestFlushByAge(t *testing.T) {
	const flushAfter = 400 * time.Millisecond
	e := newEnv(t, chunk.Config{FlushAfter: flushAfter}, nil)
	ino := e.create()
	w := e.s.NewWriter(ino, e.meta)
	defer w.Close(e.ctx)
	type written struct {
		at  time.Time
		end uint64
	}
	var log []written
	line := []byte("a steady writer's line, never paused for long.\n")
	off := int64(0)
	checked := 0
	for start := time.Now(); time.Since(start) < 6*flushAfter; {
		if _, err := w.WriteAt(e.ctx, line, off); err != nil {
			t.Fatal(err)
		}
		off += int64(len(line))
		log = append(log, written{time.Now(), uint64(off)})
		// Every byte written more than flushAfter ago must be committed.
		size := e.size(ino)
		now := time.Now()
		for _, l := range log {
			// The commit starts by 3/4 flushAfter; leave its upload and
			// commit time on a loaded machine.
			if now.Sub(l.at) < flushAfter*3/2 {
				break
			}
			if size < l.end {
				t.Fatalf("%v after a write ending at %d the committed size is %d", now.Sub(l.at).Round(time.Millisecond), l.end, size)
			}
			checked++
		}
		time.Sleep(10 * time.Millisecond)
	}
	if checked == 0 {
		t.Fatal("nothing checked")
	}
	if err := w.Flush(e.ctx); err != nil {
		t.Fatal(err)
	}
	if got := e.mustRead(ino); uint64(len(got)) != uint64(off) {
		t.Fatalf("read %d bytes, wrote %d", len(got), off)
	}
}

// TestReadersUnderBudget: open readers' whole blocks and read-ahead count
// against BufferSize. Many files read sequentially and kept open hold at
// most the budget (plus the one block a read is waiting for), and closing
// them gives it all back.
func TestReadersUnderBudget(t *testing.T) {
	const (
		budget = 16 * bs
		files  = 8
		size   = 16 * bs
	)
	e := newEnv(t, chunk.Config{BlockSize: bs, BufferSize: budget, Readahead: 8 * bs, FlushAfter: -1}, nil)
	rng := rand.New(rand.NewPCG(7, 7))
	var inos []uint64
	var data [][]byte
	for range files {
		ino := e.create()
		d := random(rng, size)
		e.write(ino, 0, d)
		inos, data = append(inos, ino), append(data, d)
	}
	readers := make([]*chunk.FileReader, files)
	for i, ino := range inos {
		readers[i] = e.s.NewReader(ino, e.meta)
	}
	peak := int64(0)
	p := make([]byte, bs)
	// Interleave the readers, each reading its file sequentially.
	for off := int64(0); off < size; off += int64(len(p)) {
		for i, r := range readers {
			if _, err := r.ReadAt(e.ctx, p, off, size); err != nil && err != io.EOF {
				t.Fatal(err)
			}
			if d := diff(data[i][off:off+int64(len(p))], p); d != "" {
				t.Fatalf("file %d at %d: %s", i, off, d)
			}
			peak = max(peak, e.s.Stats().Held)
		}
	}
	// Let read-ahead fetches still running land.
	time.Sleep(100 * time.Millisecond)
	peak = max(peak, e.s.Stats().Held)
	t.Logf("peak held %d KiB, budget %d KiB (without a budget: %d readers x %d blocks = %d KiB)", peak>>10, budget>>10, files, 8+3, files*11*bs>>10)
	if peak > budget+bs {
		t.Errorf("readers held %d bytes, budget %d", peak, budget)
	}
	for _, r := range readers {
		r.Close()
	}
	if h := e.s.Stats().Held; h != 0 {
		t.Errorf("closed readers still hold %d bytes", h)
	}
}
