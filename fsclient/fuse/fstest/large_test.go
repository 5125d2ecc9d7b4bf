package fstest

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"testing"
	"time"

	"github.com/skiff-fs/skiff/fsclient/fuse/fusetest"
	"github.com/skiff-fs/skiff/fsclient/slice"
)

// TestLargeFile writes a multi-GiB file through the mount in 1 MiB
// writes with a pattern in which every 8-byte word is derived from its
// offset (so a block that lands in the wrong place, a stale block or a
// hole is detected and located), reads it back and compares it with the
// pattern and its sha256 with that of what was written; overwrites a few
// 4 KiB ranges at random offsets (some across block and chunk
// boundaries) and checks them; then remounts and checks the whole file
// again.
func TestLargeFile(t *testing.T) {
	// 3 GiB take about 30 s without -race and about 145 s with it on two
	// busy shared cores (write, read, remount, read).
	size := int64(3 << 30)
	if testing.Short() {
		size = 512 << 20
	}
	if s := setting("largesize", "SKIFF_FSTEST_LARGESIZE"); s != "" {
		var err error
		if size, err = parseSize(s); err != nil {
			t.Fatal(err)
		}
		if size < 16<<20 {
			t.Fatalf("-largesize %s: at least 16M", s)
		}
	}
	const seed = 0x5eed
	m := fusetest.NewBolt(t)
	p := m.Path("large")
	t.Logf("file size %d MiB", size>>20)

	start := time.Now()
	f, err := os.OpenFile(p, os.O_CREATE|os.O_WRONLY|os.O_EXCL, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 1<<20)
	wsum := sha256.New()
	for off := int64(0); off < size; off += int64(len(buf)) {
		b := buf[:min(int64(len(buf)), size-off)]
		fill(b, off, seed)
		wsum.Write(b)
		if _, err := f.Write(b); err != nil {
			t.Fatalf("write at %d: %v", off, err)
		}
	}
	if err := f.Close(); err != nil {
		t.Fatalf("close after writing: %v", err)
	}
	written := wsum.Sum(nil)
	t.Logf("wrote %d MiB in %v", size>>20, time.Since(start).Round(time.Millisecond))

	start = time.Now()
	got := checkFile(t, p, size, func(b []byte, off int64) { fill(b, off, seed) })
	if !bytes.Equal(got, written) {
		t.Errorf("sha256 of the data read %x, of the data written %x", got, written)
	}
	t.Logf("read and checked in %v", time.Since(start).Round(time.Millisecond))

	// Overwrites: 4 KiB at random offsets, one across a block boundary
	// and one across a chunk boundary when the file has one.
	rng := rand.New(rand.NewPCG(seed, 1))
	var over []int64
	for range 6 {
		over = append(over, rng.Int64N(size-4096))
	}
	over = append(over, slice.DefaultBlockSize*int64(1+rng.IntN(int(size/slice.DefaultBlockSize)-1))-1234)
	if size > slice.ChunkSize+4096 {
		over = append(over, slice.ChunkSize-2048)
	}
	expected := func(b []byte, off int64) {
		fill(b, off, seed)
		for i, o := range over {
			lo, hi := max(o, off), min(o+4096, off+int64(len(b)))
			if lo < hi {
				fill(b[lo-off:hi-off], lo, seed+1+uint64(i))
			}
		}
	}
	f, err = os.OpenFile(p, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	w := make([]byte, 4096)
	for i, o := range over {
		fill(w, o, seed+1+uint64(i))
		if _, err := f.WriteAt(w, o); err != nil {
			t.Fatalf("overwrite at %d: %v", o, err)
		}
	}
	if err := f.Close(); err != nil {
		t.Fatalf("close after overwriting: %v", err)
	}
	// The overwritten ranges and 1 MiB around each.
	r, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range over {
		lo := max(0, o-512<<10)
		n := min(size-lo, 1<<20+4096)
		got, want := make([]byte, n), make([]byte, n)
		if _, err := r.ReadAt(got, lo); err != nil {
			t.Fatalf("read around the overwrite at %d: %v", o, err)
		}
		expected(want, lo)
		if i := firstDiff(got, want); i >= 0 {
			t.Errorf("around the overwrite at %d: first difference at offset %d", o, lo+int64(i))
		}
	}
	r.Close()
	if t.Failed() {
		return
	}

	m = m.Remount()
	start = time.Now()
	want := sha256.New()
	got = checkFile(t, m.Path("large"), size, func(b []byte, off int64) {
		expected(b, off)
		want.Write(b)
	})
	if sum := want.Sum(nil); !bytes.Equal(got, sum) {
		t.Errorf("after remount: sha256 of the data read %x, want %x", got, sum)
	}
	t.Logf("after remount: read and checked in %v", time.Since(start).Round(time.Millisecond))
	if err := os.Remove(m.Path("large")); err != nil {
		t.Fatal(err)
	}
}

// checkFile reads p in 1 MiB reads, compares each with what want fills
// in for that range, checks the size, and returns the sha256 of the data
// read. It reports at most a few differing ranges.
func checkFile(t *testing.T, p string, size int64, want func(b []byte, off int64)) []byte {
	t.Helper()
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if st, err := f.Stat(); err != nil || st.Size() != size {
		t.Fatalf("stat %s: size %v, %v; want %d", p, st.Size(), err, size)
	}
	sum := sha256.New()
	got, exp := make([]byte, 1<<20), make([]byte, 1<<20)
	bad := 0
	for off := int64(0); off < size; off += int64(len(got)) {
		n := min(int64(len(got)), size-off)
		if _, err := io.ReadFull(f, got[:n]); err != nil {
			t.Fatalf("read at %d: %v", off, err)
		}
		sum.Write(got[:n])
		want(exp[:n], off)
		if i := firstDiff(got[:n], exp[:n]); i >= 0 {
			bad++
			t.Errorf("%s: data differs from offset %d (in the MiB at %d): %s", p, off+int64(i), off, describe(got[i:n]))
			if bad >= 5 {
				t.FailNow()
			}
		}
	}
	if n, err := f.Read(got[:1]); n != 0 || err != io.EOF {
		t.Errorf("read past the end: %d bytes, %v", n, err)
	}
	return sum.Sum(nil)
}

// describe shows the first bytes at b: a run of zeros is a hole where
// data should be.
func describe(b []byte) string {
	if len(b) > 32 {
		b = b[:32]
	}
	if bytes.Count(b, []byte{0}) == len(b) {
		return "zeros"
	}
	return fmt.Sprintf("%x", b)
}

func firstDiff(a, b []byte) int {
	if bytes.Equal(a, b) {
		return -1
	}
	for i := range a {
		if a[i] != b[i] {
			return i
		}
	}
	return len(a)
}

// fill writes the pattern of seed for file offset off into b: the 8-byte
// word at file offset 8k is mix(k, seed), little endian. It is not
// instrumented by the race detector (it touches only the caller's
// buffer), which would make it the slowest part of the test.
//
//go:norace
func fill(b []byte, off int64, seed uint64) {
	k := uint64(off) / 8
	if r := off % 8; r != 0 { // unaligned start
		var w [8]byte
		binary.LittleEndian.PutUint64(w[:], mix(k, seed))
		n := copy(b, w[r:])
		b, k = b[n:], k+1
	}
	for len(b) >= 8 {
		binary.LittleEndian.PutUint64(b, mix(k, seed))
		b, k = b[8:], k+1
	}
	if len(b) > 0 {
		var w [8]byte
		binary.LittleEndian.PutUint64(w[:], mix(k, seed))
		copy(b, w[:])
	}
}

// mix is splitmix64's finaliser of k and seed.
func mix(k, seed uint64) uint64 {
	z := k*0x9e3779b97f4a7c15 + seed
	z = (z ^ z>>30) * 0xbf58476d1ce4e5b9
	z = (z ^ z>>27) * 0x94d049bb133111eb
	return z ^ z>>31
}
