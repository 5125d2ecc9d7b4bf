// Package fsbench holds the file workloads that skiff bench and the make
// bench suite (bench/suite) run on any directory, a skiff mount or the
// local disk alike: sequential write and read of a big file, random reads
// (with O_DIRECT or without), small files created, stat'ed, read and
// deleted, and a parallel read of many files. Each returns a Result with
// the bytes moved, the wall time and the latency of every operation.
//
// The workloads use plain system calls through package os, nothing
// skiff-specific, so the same numbers mean the same on both sides of a
// comparison. Buffers are owned by each call; nothing is kept after it
// returns.
package fsbench

import (
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"syscall"
	"time"
	"unsafe"
)

// Result is one timed workload.
type Result struct {
	Ops     int           // operations done (writes, reads, files...)
	Bytes   int64         // data moved
	Elapsed time.Duration // wall time of the whole workload
	Lat     []time.Duration
}

// MiBps is the throughput in MiB/s.
func (r Result) MiBps() float64 {
	if r.Elapsed <= 0 {
		return 0
	}
	return float64(r.Bytes) / (1 << 20) / r.Elapsed.Seconds()
}

// OpsPerSec is the operation rate.
func (r Result) OpsPerSec() float64 {
	if r.Elapsed <= 0 {
		return 0
	}
	return float64(r.Ops) / r.Elapsed.Seconds()
}

// Percentile is the p-th percentile (0 < p <= 100, nearest rank) of the
// operation latencies; 0 without any.
func (r Result) Percentile(p float64) time.Duration {
	if len(r.Lat) == 0 {
		return 0
	}
	l := slices.Clone(r.Lat)
	slices.Sort(l)
	i := int(float64(len(l))*p/100+0.999999) - 1
	return l[max(0, min(i, len(l)-1))]
}

// Merge adds the results of workers that ran at the same time.
func Merge(rs []Result, elapsed time.Duration) Result {
	out := Result{Elapsed: elapsed}
	for _, r := range rs {
		out.Ops += r.Ops
		out.Bytes += r.Bytes
		out.Lat = append(out.Lat, r.Lat...)
	}
	return out
}

// pattern returns n bytes that do not compress.
func pattern(n int, seed uint64) []byte {
	b := make([]byte, n)
	rnd := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	for i := 0; i+8 <= n; i += 8 {
		v := rnd.Uint64()
		for j := range 8 {
			b[i+j] = byte(v >> (8 * j))
		}
	}
	return b
}

// WriteFile writes size bytes to path (created or truncated) in writes of
// bs bytes, then fsyncs and closes it; the time and the result include
// both (on a local disk the data is then on the disk, on skiff it is
// uploaded and committed). Latencies are of the write calls.
func WriteFile(path string, size int64, bs int) (Result, error) {
	buf := pattern(bs, uint64(size))
	start := time.Now()
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o644)
	if err != nil {
		return Result{}, err
	}
	r := Result{Lat: make([]time.Duration, 0, size/int64(bs)+1)}
	for r.Bytes < size {
		p := buf[:min(int64(len(buf)), size-r.Bytes)]
		p[0]++ // every block differs
		t := time.Now()
		n, err := f.Write(p)
		r.Lat = append(r.Lat, time.Since(t))
		r.Bytes += int64(n)
		r.Ops++
		if err != nil {
			f.Close()
			return r, fmt.Errorf("write %s: %w", path, err)
		}
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return r, fmt.Errorf("fsync %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return r, fmt.Errorf("close %s: %w", path, err)
	}
	r.Elapsed = time.Since(start)
	return r, nil
}

// ReadFile reads path from start to end in reads of bs bytes (open to
// close). Latencies are of the read calls.
func ReadFile(path string, bs int) (Result, error) {
	buf := make([]byte, bs)
	start := time.Now()
	f, err := os.Open(path)
	if err != nil {
		return Result{}, err
	}
	defer f.Close()
	var r Result
	for {
		t := time.Now()
		n, err := f.Read(buf)
		if n > 0 {
			r.Lat = append(r.Lat, time.Since(t))
			r.Bytes += int64(n)
			r.Ops++
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			return r, fmt.Errorf("read %s: %w", path, err)
		}
	}
	r.Elapsed = time.Since(start)
	return r, nil
}

// RandRead reads ops blocks of bs bytes at random bs-aligned offsets of
// path, one at a time. With direct the file is opened with O_DIRECT (the
// kernel's page cache is bypassed; bs must be a multiple of 4096).
func RandRead(path string, bs, ops int, direct bool, seed uint64) (Result, error) {
	flags := os.O_RDONLY
	if direct {
		flags |= syscall.O_DIRECT
	}
	f, err := os.OpenFile(path, flags, 0)
	if err != nil {
		return Result{}, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return Result{}, err
	}
	blocks := st.Size() / int64(bs)
	if blocks < 1 {
		return Result{}, fmt.Errorf("%s: %d bytes, smaller than one %d-byte read", path, st.Size(), bs)
	}
	buf := alignedBuf(bs)
	rnd := rand.New(rand.NewPCG(seed, 1))
	r := Result{Lat: make([]time.Duration, 0, ops)}
	start := time.Now()
	for range ops {
		off := rnd.Int64N(blocks) * int64(bs)
		t := time.Now()
		n, err := f.ReadAt(buf, off)
		r.Lat = append(r.Lat, time.Since(t))
		if err != nil && !errors.Is(err, io.EOF) {
			return r, fmt.Errorf("read %s at %d: %w", path, off, err)
		}
		r.Bytes += int64(n)
		r.Ops++
	}
	r.Elapsed = time.Since(start)
	return r, nil
}

// alignedBuf returns n bytes aligned to 4096, as O_DIRECT needs.
func alignedBuf(n int) []byte {
	const align = 4096
	b := make([]byte, n+align)
	off := int(uintptr(unsafe.Pointer(&b[0])) & (align - 1))
	if off != 0 {
		off = align - off
	}
	return b[off : off+n]
}

// SmallFiles names count files per thread in dir, as the small-file
// workloads use them. The directory must exist.
type SmallFiles struct {
	Dir     string
	Count   int // files per thread
	Size    int // bytes per file
	Threads int
}

func (s SmallFiles) name(thread, i int) string {
	return filepath.Join(s.Dir, fmt.Sprintf("t%02d-%07d", thread, i))
}

// each runs op on every file, Threads at a time; op returns the bytes it
// moved. Latencies are per file.
func (s SmallFiles) each(op func(path string) (int, error)) (Result, error) {
	threads := max(1, s.Threads)
	rs := make([]Result, threads)
	errs := make([]error, threads)
	var wg sync.WaitGroup
	start := time.Now()
	for th := range threads {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := Result{Lat: make([]time.Duration, 0, s.Count)}
			for i := range s.Count {
				t := time.Now()
				n, err := op(s.name(th, i))
				r.Lat = append(r.Lat, time.Since(t))
				if err != nil {
					errs[th] = err
					break
				}
				r.Ops++
				r.Bytes += int64(n)
			}
			rs[th] = r
		}()
	}
	wg.Wait()
	return Merge(rs, time.Since(start)), errors.Join(errs...)
}

// Create writes every file (create, write, close).
func (s SmallFiles) Create() (Result, error) {
	data := pattern(s.Size, uint64(s.Size))
	return s.each(func(p string) (int, error) {
		f, err := os.OpenFile(p, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o644)
		if err != nil {
			return 0, err
		}
		n, err := f.Write(data)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		return n, err
	})
}

// Stat stats every file.
func (s SmallFiles) Stat() (Result, error) {
	return s.each(func(p string) (int, error) {
		_, err := os.Stat(p)
		return 0, err
	})
}

// Read reads every file whole (open, read, close).
func (s SmallFiles) Read() (Result, error) {
	return s.each(func(p string) (int, error) {
		b, err := os.ReadFile(p)
		if err == nil && len(b) != s.Size {
			err = fmt.Errorf("%s: read %d bytes, want %d", p, len(b), s.Size)
		}
		return len(b), err
	})
}

// Delete removes every file.
func (s SmallFiles) Delete() (Result, error) {
	return s.each(func(p string) (int, error) { return 0, os.Remove(p) })
}

// ReadFiles reads every file of paths whole, threads files at a time, in
// reads of bs bytes. Latencies are per file.
func ReadFiles(paths []string, threads, bs int) (Result, error) {
	threads = max(1, min(threads, len(paths)))
	work := make(chan string)
	rs := make([]Result, threads)
	errs := make([]error, threads)
	var wg sync.WaitGroup
	start := time.Now()
	for th := range threads {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for p := range work {
				t := time.Now()
				r, err := ReadFile(p, bs)
				rs[th].Lat = append(rs[th].Lat, time.Since(t))
				rs[th].Bytes += r.Bytes
				rs[th].Ops++
				if err != nil && errs[th] == nil {
					errs[th] = err
				}
			}
		}()
	}
	for _, p := range paths {
		work <- p
	}
	close(work)
	wg.Wait()
	return Merge(rs, time.Since(start)), errors.Join(errs...)
}

// DropCaches writes back dirty data and drops the kernel's clean page
// cache, dentries and inodes (sync; echo 3 > /proc/sys/vm/drop_caches).
// It needs root.
func DropCaches() error {
	syscall.Sync()
	if err := os.WriteFile("/proc/sys/vm/drop_caches", []byte("3\n"), 0); err != nil {
		return fmt.Errorf("drop the page cache (needs root): %w", err)
	}
	return nil
}
