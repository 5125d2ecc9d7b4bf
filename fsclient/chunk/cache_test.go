package chunk_test

import (
	"bytes"
	"io"
	"io/fs"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/skiff-fs/skiff/fsclient/cache"
	"github.com/skiff-fs/skiff/fsclient/chunk"
	"github.com/skiff-fs/skiff/fsclient/object"
	"github.com/skiff-fs/skiff/fsclient/slice"
)

// cachedEnv is an env whose Store reads through a block cache, with an
// object store that counts Gets.
type cachedEnv struct {
	*env
	g *gated
	c *cache.Cache
}

func newCachedEnv(t testing.TB, cfg chunk.Config, ccfg cache.Config) *cachedEnv {
	t.Helper()
	if ccfg.Dir == "" {
		ccfg.Dir = t.TempDir()
	}
	if ccfg.FreeRatio == 0 {
		ccfg.FreeRatio = -1
	}
	ccfg.Logger = slog.New(slog.DiscardHandler)
	c, err := cache.New(ccfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	cfg.Cache = c
	g := &gated{}
	e := newEnv(t, cfg, func(s object.Store) object.Store {
		g.Store = s
		return g
	})
	return &cachedEnv{env: e, g: g, c: c}
}

// readAll reads the whole file sequentially in bs/4 requests through a new
// reader, and waits for read-ahead fetches still running.
func (e *cachedEnv) readAll(ino uint64) []byte {
	e.t.Helper()
	size := e.size(ino)
	rd := e.s.NewReader(ino, e.meta)
	defer rd.Close()
	got := make([]byte, 0, size)
	p := make([]byte, bs/4)
	for off := int64(0); off < int64(size); off += int64(len(p)) {
		n, err := rd.ReadAt(e.ctx, p, off, size)
		if err != nil && err != io.EOF {
			e.t.Fatal(err)
		}
		got = append(got, p[:n]...)
	}
	e.settle()
	return got
}

// settle waits until no fetch is running (read-ahead, prefetch): the
// Store's collapsed-fetch count stops moving once Gets are done. It
// polls; nothing asserts on how long it takes.
func (e *cachedEnv) settle() {
	deadline := time.Now().Add(10 * time.Second)
	last := int64(-1)
	for time.Now().Before(deadline) {
		n := e.g.gets.Load() + e.c.Stats().Puts + e.c.Stats().Hits
		if n == last {
			return
		}
		last = n
		time.Sleep(20 * time.Millisecond)
	}
}

func blockKeys(t testing.TB, e *env, ino uint64) []string {
	t.Helper()
	var keys []string
	for _, rec := range e.records(ino, 0) {
		for _, b := range slice.Blocks(rec.Size, bs) {
			keys = append(keys, slice.BlockKey(rec.ID, b.Index, b.Len))
		}
	}
	return keys
}

// TestReadsHitCache: a second read of a file, by a new reader, makes no
// Get, from the memory tier and from disk alone; on every codec.
func TestReadsHitCache(t *testing.T) {
	for _, tc := range []struct {
		name    string
		comp    string
		memSize int64
	}{
		{"none/memory", "none", 0},
		{"none/disk", "none", -1},
		{"zstd/disk", "zstd", -1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newCachedEnv(t, chunk.Config{Compression: tc.comp, Readahead: 4 * bs}, cache.Config{MemSize: tc.memSize})
			ino := e.create()
			const blocks = 6
			want := random(rand.New(rand.NewPCG(5, 1)), blocks*bs-100)
			e.write(ino, 0, want)
			before := e.g.gets.Load()
			if d := diff(want, e.readAll(ino)); d != "" {
				t.Fatal(d)
			}
			if gets := e.g.gets.Load() - before; gets != blocks {
				t.Errorf("cold read made %d Gets, want %d", gets, blocks)
			}
			before = e.g.gets.Load()
			if d := diff(want, e.readAll(ino)); d != "" {
				t.Fatal(d)
			}
			if gets := e.g.gets.Load() - before; gets != 0 {
				t.Errorf("warm read made %d Gets, want 0", gets)
			}
			st := e.c.Stats()
			if st.Hits < blocks || st.Entries != blocks {
				t.Errorf("cache stats: %+v", st)
			}
			if tc.memSize < 0 && st.MemHits != 0 {
				t.Errorf("memory tier off but %d memory hits", st.MemHits)
			}
		})
	}
}

// TestCorruptCacheFileRefetched flips a byte in a cached block's file: the
// next read returns the right bytes, fetched again with one more Get.
func TestCorruptCacheFileRefetched(t *testing.T) {
	e := newCachedEnv(t, chunk.Config{}, cache.Config{MemSize: -1})
	ino := e.create()
	want := random(rand.New(rand.NewPCG(5, 2)), bs)
	e.write(ino, 0, want)
	if d := diff(want, e.readAll(ino)); d != "" {
		t.Fatal(d)
	}
	path := filepath.Join(e.c.Dir(), "blocks", blockKeys(t, e.env, ino)[0])
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("the block was not cached: %v", err)
	}
	b[len(b)/2] ^= 0x01
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	before := e.g.gets.Load()
	if d := diff(want, e.readAll(ino)); d != "" {
		t.Fatalf("read after the cache file was damaged: %s", d)
	}
	if gets := e.g.gets.Load() - before; gets != 1 {
		t.Errorf("read after damage made %d Gets, want 1", gets)
	}
	if st := e.c.Stats(); st.Corrupt != 1 {
		t.Errorf("cache stats: %+v", st)
	}
	// The fetch re-cached it, intact.
	before = e.g.gets.Load()
	if d := diff(want, e.readAll(ino)); d != "" {
		t.Fatal(d)
	}
	if gets := e.g.gets.Load() - before; gets != 0 {
		t.Errorf("third read made %d Gets, want 0", gets)
	}
}

// TestRandomReadPrefetchesWholeBlock: on a plain volume, a small random
// read answers from a range Get and fetches the whole block into the
// cache; later small reads anywhere in that block make no Get.
func TestRandomReadPrefetchesWholeBlock(t *testing.T) {
	e := newCachedEnv(t, chunk.Config{}, cache.Config{MemSize: -1})
	ino := e.create()
	want := random(rand.New(rand.NewPCG(5, 3)), 4*bs)
	e.write(ino, 0, want)
	key := blockKeys(t, e.env, ino)[2]
	before := e.g.gets.Load()
	read := func(off int) {
		t.Helper()
		p := make([]byte, 100)
		if _, err := e.s.NewReader(ino, e.meta).ReadAt(e.ctx, p, int64(off), uint64(len(want))); err != nil {
			t.Fatal(err)
		}
		if d := diff(want[off:off+100], p); d != "" {
			t.Fatal(d)
		}
	}
	read(2*bs + 10)
	deadline := time.Now().Add(10 * time.Second)
	for !e.c.Has(key) {
		if time.Now().After(deadline) {
			t.Fatal("the whole block was not prefetched into the cache")
		}
		time.Sleep(5 * time.Millisecond)
	}
	if gets := e.g.gets.Load() - before; gets != 2 {
		t.Errorf("first random read made %d Gets, want 2 (its range, the whole block)", gets)
	}
	before = e.g.gets.Load()
	read(2*bs + 5000)
	read(3*bs - 100)
	if gets := e.g.gets.Load() - before; gets != 0 {
		t.Errorf("random reads in a cached block made %d Gets", gets)
	}
}

// TestSharedCacheStoresEncryptedForm: a Shared cache of an encrypted
// volume never holds plain text, and still serves reads; a private one
// holds decoded blocks.
func TestSharedCacheStoresEncryptedForm(t *testing.T) {
	for _, shared := range []bool{true, false} {
		name := "private"
		if shared {
			name = "shared"
		}
		t.Run(name, func(t *testing.T) {
			key := bytes.Repeat([]byte{7}, chunk.KeySize)
			e := newCachedEnv(t, chunk.Config{Compression: "lz4", Key: key}, cache.Config{MemSize: -1, Shared: shared})
			ino := e.create()
			want := bytes.Repeat([]byte("secret training data "), 2*bs/21)
			e.write(ino, 0, want)
			e.readAll(ino)
			plain := false
			filepath.WalkDir(e.c.Dir(), func(p string, d fs.DirEntry, err error) error {
				if err == nil && !d.IsDir() {
					b, _ := os.ReadFile(p)
					plain = plain || bytes.Contains(b, []byte("secret training data"))
				}
				return nil
			})
			if plain == shared {
				t.Errorf("cache files hold plain text: %v, want %v", plain, !shared)
			}
			before := e.g.gets.Load()
			if d := diff(want, e.readAll(ino)); d != "" {
				t.Fatal(d)
			}
			if gets := e.g.gets.Load() - before; gets != 0 {
				t.Errorf("warm read made %d Gets", gets)
			}
		})
	}
}

// TestCacheWrites: with CacheWrites, reading back what was written needs
// no Get.
func TestCacheWrites(t *testing.T) {
	e := newCachedEnv(t, chunk.Config{CacheWrites: true}, cache.Config{MemSize: -1})
	ino := e.create()
	want := random(rand.New(rand.NewPCG(5, 4)), 3*bs+5)
	e.write(ino, 0, want)
	before := e.g.gets.Load()
	if d := diff(want, e.readAll(ino)); d != "" {
		t.Fatal(d)
	}
	if gets := e.g.gets.Load() - before; gets != 0 {
		t.Errorf("read of cached writes made %d Gets", gets)
	}
	// Deleting the slice drops its blocks from the cache.
	rec := e.records(ino, 0)[0]
	if err := e.s.DeleteSlice(e.ctx, rec.ID, rec.Size); err != nil {
		t.Fatal(err)
	}
	if st := e.c.Stats(); st.Entries != 0 {
		t.Errorf("%d entries left after DeleteSlice", st.Entries)
	}
}

// TestParallelReadersKeepCacheLimit fills a cache of 10 blocks from 8
// readers of 8-block files at once: the limit holds throughout (Peak) and
// on disk, and every read is right.
func TestParallelReadersKeepCacheLimit(t *testing.T) {
	const limit = 10 * (bs + 4096)
	e := newCachedEnv(t, chunk.Config{Readahead: 2 * bs}, cache.Config{Size: limit, MemSize: -1})
	files := make([]uint64, 8)
	wants := make([][]byte, 8)
	for i := range files {
		files[i] = e.create()
		wants[i] = random(rand.New(rand.NewPCG(6, uint64(i))), 8*bs)
		e.write(files[i], 0, wants[i])
	}
	var wg sync.WaitGroup
	errs := make(chan string, 16)
	for i := range files {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 2 {
				size := uint64(len(wants[i]))
				p := make([]byte, size)
				n, err := e.s.NewReader(files[i], e.meta).ReadAt(e.ctx, p, 0, size)
				if err != nil && err != io.EOF {
					errs <- err.Error()
					return
				}
				if d := diff(wants[i], p[:n]); d != "" {
					errs <- d
				}
			}
		}()
	}
	wg.Wait()
	e.settle()
	close(errs)
	for d := range errs {
		t.Fatal(d)
	}
	st := e.c.Stats()
	if st.Peak > limit || st.Bytes > limit {
		t.Errorf("cache went over its limit %d: %+v", limit, st)
	}
	var onDisk int64
	filepath.WalkDir(e.c.Dir(), func(p string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			info, _ := d.Info()
			onDisk += info.Size()
		}
		return nil
	})
	if onDisk > limit {
		t.Errorf("cache files use %d bytes, limit %d", onDisk, limit)
	}
	if st.Evictions == 0 {
		t.Errorf("no evictions: %+v", st)
	}
}

// TestWarm: FileBlocks lists a file's visible blocks; Warm caches them
// (once), after which reads make no Get; Evict drops them.
func TestWarm(t *testing.T) {
	e := newCachedEnv(t, chunk.Config{}, cache.Config{MemSize: -1})
	ino := e.create()
	want := random(rand.New(rand.NewPCG(5, 5)), 5*bs)
	e.write(ino, 0, want)
	e.write(ino, bs+10, []byte("overwrite inside block 1")) // a second slice
	copy(want[bs+10:], "overwrite inside block 1")
	blocks, err := e.s.FileBlocks(e.ctx, e.meta, ino, e.size(ino))
	if err != nil {
		t.Fatal(err)
	}
	if len(blocks) != 6 {
		t.Fatalf("FileBlocks listed %d blocks, want 6: %v", len(blocks), blocks)
	}
	for _, b := range blocks {
		if fetched, err := e.s.Warm(e.ctx, b); err != nil || !fetched {
			t.Fatalf("Warm(%s) = %v, %v", b.Key, fetched, err)
		}
	}
	for _, b := range blocks {
		if fetched, err := e.s.Warm(e.ctx, b); err != nil || fetched || !e.s.Cached(b) {
			t.Fatalf("second Warm(%s) = %v, %v", b.Key, fetched, err)
		}
	}
	before := e.g.gets.Load()
	if d := diff(want, e.readAll(ino)); d != "" {
		t.Fatal(d)
	}
	if gets := e.g.gets.Load() - before; gets != 0 {
		t.Errorf("read after warm made %d Gets", gets)
	}
	for _, b := range blocks {
		e.s.Evict(b)
		if e.s.Cached(b) {
			t.Errorf("%s cached after Evict", b.Key)
		}
	}
}

// BenchmarkCachedRead reads benchSize bytes sequentially (1 MiB requests,
// 4 MiB blocks) through a warm cache: from the disk tier alone (memory
// tier off) and with the memory tier big enough. Compare with
// BenchmarkChunkStore/read (from the directory object store) and
// BenchmarkPlainCopy/read.
func BenchmarkCachedRead(b *testing.B) {
	data := benchData()
	for _, tc := range []struct {
		name string
		mem  int64
	}{{"disk", -1}, {"memory", 2 * benchSize}} {
		b.Run(tc.name, func(b *testing.B) {
			e := newCachedEnv(b, chunk.Config{BlockSize: slice.DefaultBlockSize, CacheWrites: true}, cache.Config{MemSize: tc.mem})
			ino := writeFile(b, e.env, data, benchSize)
			p := make([]byte, benchIO)
			before := e.g.gets.Load()
			b.SetBytes(benchSize)
			b.ResetTimer()
			for range b.N {
				rd := e.s.NewReader(ino, e.meta)
				for off := int64(0); off < benchSize; off += benchIO {
					if _, err := rd.ReadAt(e.ctx, p, off, benchSize); err != nil && err != io.EOF {
						b.Fatal(err)
					}
				}
			}
			b.StopTimer()
			if gets := e.g.gets.Load() - before; gets != 0 {
				b.Errorf("warm reads made %d Gets", gets)
			}
		})
	}
}
