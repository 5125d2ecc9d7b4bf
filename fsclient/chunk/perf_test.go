package chunk_test

import (
	"io"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"runtime/metrics"
	"sort"
	"strconv"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/skiff-fs/skiff/fsclient/cache"
	"github.com/skiff-fs/skiff/fsclient/chunk"
	"github.com/skiff-fs/skiff/fsclient/slice"
)

// warmFile writes benchSize bytes through a Store that caches written
// blocks, so every block is in the cache's disk tier.
func warmFile(b *testing.B, e *cachedEnv, data []byte) uint64 {
	return writeFile(b, e.env, data, benchSize)
}

// plainFile writes the same bytes to a plain file next to the cache.
func plainFile(b *testing.B, dir string, data []byte) *os.File {
	b.Helper()
	path := filepath.Join(dir, "plain")
	f, err := os.Create(path)
	if err != nil {
		b.Fatal(err)
	}
	for off := int64(0); off < benchSize; off += benchIO {
		if _, err := f.WriteAt(data, off); err != nil {
			b.Fatal(err)
		}
	}
	b.Cleanup(func() { f.Close() })
	return f
}

// BenchmarkWarmRandomRead reads 4 KiB (and 128 KiB) at random 4 KiB-aligned
// offsets of a 256 MiB file whose blocks (4 MiB) are all in the cache's
// disk tier (memory tier off), and the same offsets of a plain file of the
// same bytes in the same directory. It reports skiff's ns/op, the plain
// file's (local-ns/op) and their ratio (x-local; lower is better for
// skiff). pagecache: both files are in the kernel's page cache (pread on
// both sides), so this measures skiff's own cost per read. disk: the page
// cache of both is dropped first and the plain file is read with
// O_DIRECT, as make bench does; each timed read goes to a different
// offset (b.N at most 4096 gives distinct ones).
func BenchmarkWarmRandomRead(b *testing.B) {
	for _, drop := range []bool{false, true} {
		name := "pagecache"
		if drop {
			name = "disk"
		}
		for _, size := range []int{4 << 10, 128 << 10} {
			b.Run(name+"/"+strconv.Itoa(size>>10)+"KiB", func(b *testing.B) { warmRandomRead(b, size, drop) })
		}
	}
}

func warmRandomRead(b *testing.B, size int, drop bool) {
	data := benchData()
	cdir := b.TempDir()
	e := newCachedEnv(b, chunk.Config{BlockSize: slice.DefaultBlockSize, CacheWrites: true},
		cache.Config{Dir: cdir, MemSize: -1, Size: 2 * benchSize})
	ino := warmFile(b, e, data)
	f := plainFile(b, cdir, data)
	r := rand.New(rand.NewPCG(7, 7))
	offs := r.Perm((benchSize - size) / 4096)[:4096]
	p := make([]byte, size)
	rd := e.s.NewReader(ino, e.meta)
	defer rd.Close()
	if drop {
		dropPageCache(b, cdir)
		// O_DIRECT needs an aligned buffer: a fresh mmap is page-aligned.
		m, err := unix.Mmap(-1, 0, size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_ANON|unix.MAP_PRIVATE)
		if err != nil {
			b.Fatal(err)
		}
		defer unix.Munmap(m)
		direct, err := os.OpenFile(f.Name(), os.O_RDONLY|unix.O_DIRECT, 0)
		if err != nil {
			b.Fatal(err)
		}
		defer direct.Close()
		f, p = direct, m
	} else {
		// One pass first so both sides start equally warm.
		for _, off := range offs {
			rd.ReadAt(e.ctx, p, int64(off)*4096, benchSize)
			f.ReadAt(p, int64(off)*4096)
		}
	}
	b.ResetTimer()
	start := time.Now()
	for i := range b.N {
		if _, err := rd.ReadAt(e.ctx, p, int64(offs[i%len(offs)])*4096, benchSize); err != nil && err != io.EOF {
			b.Fatal(err)
		}
	}
	skiff := time.Since(start)
	b.StopTimer()
	start = time.Now()
	for i := range b.N {
		if _, err := f.ReadAt(p, int64(offs[i%len(offs)])*4096); err != nil {
			b.Fatal(err)
		}
	}
	local := time.Since(start)
	b.ReportMetric(float64(local.Nanoseconds())/float64(b.N), "local-ns/op")
	b.ReportMetric(float64(skiff)/float64(local), "x-local")
}

// dropPageCache writes back and drops from the kernel's page cache every
// regular file under dir (only these files: the machine's other work
// keeps its cache).
func dropPageCache(b *testing.B, dir string) {
	b.Helper()
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() {
			return err
		}
		f, err := os.OpenFile(p, os.O_RDWR, 0)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := f.Sync(); err != nil {
			return err
		}
		return unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_DONTNEED)
	})
	if err != nil {
		b.Fatal(err)
	}
}

// BenchmarkWarmSeqRead reads the 256 MiB file sequentially in 1 MiB
// requests from the cache's disk tier (memory tier off), and the plain
// file the same way, reporting the throughput ratio (x-local; higher is
// better for skiff). pagecache: both files are in the kernel's page
// cache, so this measures skiff's own cost (a copy and a checksum per
// byte, against the plain file's copy). disk: the page cache of both is
// dropped before each pass, as make bench does for warm reads.
func BenchmarkWarmSeqRead(b *testing.B) {
	for _, io := range []int{128 << 10, benchIO} {
		sz := strconv.Itoa(io>>10) + "KiB"
		b.Run("pagecache/"+sz, func(b *testing.B) { warmSeqRead(b, io, false) })
		b.Run("disk/"+sz, func(b *testing.B) { warmSeqRead(b, io, true) })
	}
}

func warmSeqRead(b *testing.B, reqSize int, drop bool) {
	data := benchData()
	cdir := b.TempDir()
	e := newCachedEnv(b, chunk.Config{BlockSize: slice.DefaultBlockSize, CacheWrites: true},
		cache.Config{Dir: cdir, MemSize: -1, Size: 2 * benchSize})
	ino := warmFile(b, e, data)
	f := plainFile(b, cdir, data)
	p := make([]byte, reqSize)
	b.SetBytes(benchSize)
	b.ResetTimer()
	var skiff, local time.Duration
	for range b.N {
		if drop {
			b.StopTimer()
			dropPageCache(b, cdir)
			b.StartTimer()
		}
		start := time.Now()
		rd := e.s.NewReader(ino, e.meta)
		for off := int64(0); off < benchSize; off += int64(reqSize) {
			if _, err := rd.ReadAt(e.ctx, p, off, benchSize); err != nil && err != io.EOF {
				b.Fatal(err)
			}
		}
		rd.Close()
		skiff += time.Since(start)
	}
	b.StopTimer()
	for range b.N {
		if drop {
			dropPageCache(b, cdir)
		}
		start := time.Now()
		for off := int64(0); off < benchSize; off += int64(reqSize) {
			if _, err := f.ReadAt(p, off); err != nil && err != io.EOF {
				b.Fatal(err)
			}
		}
		local += time.Since(start)
	}
	b.ReportMetric(float64(local)/float64(skiff), "x-local")
}

// heapSampler records the largest resident heap (mapped heap memory not
// returned to the OS, plus stacks and runtime metadata) seen while it runs.
type heapSampler struct {
	stop chan struct{}
	wg   sync.WaitGroup
	peak uint64
}

func sampleHeap() *heapSampler {
	h := &heapSampler{stop: make(chan struct{})}
	samples := []metrics.Sample{
		{Name: "/memory/classes/total:bytes"},
		{Name: "/memory/classes/heap/released:bytes"},
	}
	h.wg.Add(1)
	go func() {
		defer h.wg.Done()
		t := time.NewTicker(5 * time.Millisecond)
		defer t.Stop()
		for {
			metrics.Read(samples)
			if v := samples[0].Value.Uint64() - samples[1].Value.Uint64(); v > h.peak {
				h.peak = v
			}
			select {
			case <-h.stop:
				return
			case <-t.C:
			}
		}
	}()
	return h
}

func (h *heapSampler) done() uint64 {
	close(h.stop)
	h.wg.Wait()
	return h.peak
}

// BenchmarkWritePeakMemory writes SKIFF_BENCH_WRITE_MIB (default 2048)
// MiB through a Store with the default 300 MiB write buffer to a
// directory object store, in 1 MiB requests, and reports the peak Go
// memory (mapped and not released: about the heap's share of RSS) in MiB
// next to the buffer budget. Run each measurement in a fresh process
// (-benchtime=1x -count=1): memory a previous run left mapped counts
// otherwise.
func BenchmarkWritePeakMemory(b *testing.B) {
	total := int64(2048)
	if v, err := strconv.ParseInt(os.Getenv("SKIFF_BENCH_WRITE_MIB"), 10, 64); err == nil && v > 0 {
		total = v
	}
	total <<= 20
	for _, comp := range []string{"none", "lz4"} {
		b.Run(comp, func(b *testing.B) {
			data := benchData()
			e := newEnv(b, chunk.Config{BlockSize: slice.DefaultBlockSize, Compression: comp}, nil)
			runtime.GC()
			b.SetBytes(total)
			b.ResetTimer()
			var peaks []float64
			for range b.N {
				h := sampleHeap()
				writeFile(b, e, data, total)
				peaks = append(peaks, float64(h.done())/(1<<20))
			}
			sort.Float64s(peaks)
			b.ReportMetric(peaks[len(peaks)/2], "peak-MiB")
			b.ReportMetric(300, "budget-MiB")
		})
	}
}
