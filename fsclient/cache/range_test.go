package cache_test

import (
	"bytes"
	"encoding/binary"
	"hash/crc32"
	"os"
	"path/filepath"
	"testing"

	"github.com/skiff-fs/skiff/fsclient/cache"
)

const piece = 4 << 10 // the piece size entries are written with

// rangeEntry caches an entry of n bytes and returns the cache, its key
// and its data.
func rangeEntry(t testing.TB, n int, mem int64) (*cache.Cache, string, []byte) {
	c := newCache(t, cache.Config{MemSize: mem})
	d := data(uint64(n), n)
	k := key(n)
	c.Put(k, d)
	if !c.Has(k) {
		t.Fatalf("entry of %d bytes not cached", n)
	}
	return c, k, d
}

// checkRange compares ReadAt(off, n) with the same bytes of the data.
func checkRange(t testing.TB, c *cache.Cache, k string, d []byte, off, n int) {
	t.Helper()
	p := bytes.Repeat([]byte{0xAA}, n)
	ok := c.ReadAt(k, int64(len(d)), p, int64(off))
	inside := off >= 0 && off+n <= len(d)
	if ok != inside {
		t.Fatalf("ReadAt(off %d, %d bytes) of a %d-byte entry = %v, want %v", off, n, len(d), ok, inside)
	}
	if ok && !bytes.Equal(p, d[off:off+n]) {
		t.Fatalf("ReadAt(off %d, %d bytes) of a %d-byte entry returned other bytes", off, n, len(d))
	}
}

// TestReadAtMatchesData reads ranges at and around piece and entry edges,
// from disk and from the memory tier, and compares them with the data.
func TestReadAtMatchesData(t *testing.T) {
	lengths := []int{1, 4095, piece - 1, piece, piece + 1, 3*piece + 777, 64 * piece}
	for _, mem := range []int64{-1, 1 << 30} {
		for _, n := range lengths {
			c, k, d := rangeEntry(t, n, mem)
			var offs []int
			for _, edge := range []int{0, piece, 2 * piece, 3 * piece, n} {
				for _, delta := range []int{-4097, -1, 0, 1, 4096} {
					if o := edge + delta; o >= 0 && o <= n {
						offs = append(offs, o)
					}
				}
			}
			for _, off := range offs {
				for _, size := range []int{0, 1, 4096, piece - 1, piece, piece + 1, 2*piece + 3, n} {
					if off+size <= n {
						checkRange(t, c, k, d, off, size)
					}
				}
				checkRange(t, c, k, d, off, n-off+1) // one byte past the end
			}
			checkRange(t, c, k, d, 0, n)
			checkRange(t, c, k, d, -1, 1)
			if c.ReadAt(k, int64(n+1), make([]byte, 1), 0) {
				t.Errorf("an entry of %d bytes was read as one of %d", n, n+1)
			}
			if st := c.Stats(); st.Corrupt != 0 || st.Entries != 1 {
				t.Errorf("stats: %+v", st)
			}
		}
	}
}

// FuzzReadAt compares random ranges of random-length entries with the
// data they were written from.
func FuzzReadAt(f *testing.F) {
	f.Add(uint32(3*piece+777), uint32(piece-10), uint32(piece+20))
	f.Add(uint32(1), uint32(0), uint32(1))
	f.Add(uint32(2*piece), uint32(piece), uint32(piece))
	f.Fuzz(func(t *testing.T, n, off, size uint32) {
		n = n%(8*piece) + 1
		off %= n + 1
		size %= n - off + 2 // sometimes one byte past the end
		c, k, d := rangeEntry(t, int(n), -1)
		checkRange(t, c, k, d, int(off), int(size))
	})
}

// TestCorruptPieceDetected: a flipped byte in one piece is not noticed by
// reads of other pieces (they do not read it), but a read touching it is a
// miss that removes the entry.
func TestCorruptPieceDetected(t *testing.T) {
	c, k, d := rangeEntry(t, 4*piece, -1)
	p := filepath.Join(c.Dir(), "blocks", k)
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	dataOff := len(b) - len(d)
	b[dataOff+2*piece+100] ^= 0x10 // piece 2
	if err := os.WriteFile(p, b, 0o600); err != nil {
		t.Fatal(err)
	}
	checkRange(t, c, k, d, 0, 4096)
	checkRange(t, c, k, d, piece, piece)
	checkRange(t, c, k, d, 3*piece+5, 4096)
	buf := make([]byte, 4096)
	if c.ReadAt(k, -1, buf, 2*piece+4000) {
		t.Fatal("a range of a damaged piece was returned")
	}
	if _, err := os.Stat(p); !os.IsNotExist(err) {
		t.Errorf("damaged file still there: %v", err)
	}
	if st := c.Stats(); st.Corrupt != 1 || st.Entries != 0 || st.Bytes != 0 {
		t.Errorf("stats: %+v", st)
	}
	if c.ReadAt(k, -1, buf, 0) {
		t.Error("a removed entry was read")
	}
	c.Put(k, d)
	checkRange(t, c, k, d, 2*piece+4000, 4096)
}

// TestReindexDropsOldFormat: entries of the first format (one CRC over
// the whole entry) and entries whose piece table is damaged are removed at
// re-index, never read; good entries stay.
func TestReindexDropsOldFormat(t *testing.T) {
	dir := t.TempDir()
	c := newCache(t, cache.Config{Dir: dir, MemSize: -1})
	good := data(1, blk)
	c.Put(key(1), good)
	c.Put(key(2), data(2, blk))
	c.Close()
	// key 3: a well-formed entry of format 1.
	old := data(3, blk)
	v1 := make([]byte, 16+len(old))
	copy(v1, "skc1")
	binary.LittleEndian.PutUint32(v1[8:], uint32(len(old)))
	binary.LittleEndian.PutUint32(v1[12:], crc32.Checksum(old, crc32.MakeTable(crc32.Castagnoli)))
	copy(v1[16:], old)
	p3 := filepath.Join(dir, "blocks", key(3))
	if err := os.MkdirAll(filepath.Dir(p3), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p3, v1, 0o600); err != nil {
		t.Fatal(err)
	}
	// key 2: a damaged piece table.
	p2 := filepath.Join(dir, "blocks", key(2))
	b, _ := os.ReadFile(p2)
	b[17] ^= 1
	os.WriteFile(p2, b, 0o600)

	c2 := newCache(t, cache.Config{Dir: dir, MemSize: -1})
	st := c2.Stats()
	if st.Entries != 1 || st.Stale != 1 || st.Corrupt != 1 || st.Bytes != counted {
		t.Fatalf("after re-index: %+v", st)
	}
	for _, p := range []string{p2, p3} {
		if _, err := os.Stat(p); !os.IsNotExist(err) {
			t.Errorf("%s still there: %v", p, err)
		}
	}
	if _, ok := c2.Get(key(3)); ok {
		t.Error("an old-format entry was returned")
	}
	if c2.ReadAt(key(3), -1, make([]byte, 10), 0) {
		t.Error("an old-format entry was read")
	}
	mustGet(t, c2, key(1), good)
	checkRange(t, c2, key(1), good, 100, 5000)
}

// TestReadAtAdoptsOtherProcessEntries: a range of an entry another Cache
// on the same directory wrote is read (and the entry adopted); a damaged
// one is removed.
func TestReadAtAdoptsOtherProcessEntries(t *testing.T) {
	dir := t.TempDir()
	mount := newCache(t, cache.Config{Dir: dir, MemSize: -1})
	warm := newCache(t, cache.Config{Dir: dir, MemSize: -1})
	d := data(9, blk)
	warm.Put(key(9), d)
	checkRange(t, mount, key(9), d, 5000, 3*piece)
	if st := mount.Stats(); st.Adopted != 1 || st.Entries != 1 || st.Bytes != counted {
		t.Errorf("stats: %+v", st)
	}
	warm.Put(key(10), d)
	p := filepath.Join(dir, "blocks", key(10))
	b, _ := os.ReadFile(p)
	b[len(b)-1] ^= 1
	os.WriteFile(p, b, 0o600)
	if mount.ReadAt(key(10), -1, make([]byte, 100), int64(len(d)-100)) {
		t.Fatal("a damaged entry of another process was read")
	}
	if _, err := os.Stat(p); !os.IsNotExist(err) {
		t.Errorf("damaged file still there: %v", err)
	}
	if st := mount.Stats(); st.Corrupt != 1 || st.Entries != 1 {
		t.Errorf("stats: %+v", st)
	}
}

// validEntry returns the file of a well-formed entry and its data.
func validEntry(f *testing.F) (file, d []byte) {
	dir := f.TempDir()
	c, err := cache.New(cache.Config{Dir: dir, MemSize: -1, FreeRatio: -1})
	if err != nil {
		f.Fatal(err)
	}
	d = data(4, 20*piece+5)
	c.Put(key(1), d)
	c.Close()
	file, err = os.ReadFile(filepath.Join(dir, "blocks", key(1)))
	if err != nil {
		f.Fatal(err)
	}
	return file, d
}

// entryCache opens a cache whose only file is file, as key(1).
func entryCache(t *testing.T, file []byte) *cache.Cache {
	dir := t.TempDir()
	p := filepath.Join(dir, "blocks", key(1))
	os.MkdirAll(filepath.Dir(p), 0o700)
	if err := os.WriteFile(p, file, 0o600); err != nil {
		t.Fatal(err)
	}
	return newCache(t, cache.Config{Dir: dir, MemSize: -1})
}

// FuzzEntryFile puts arbitrary bytes where an entry file belongs: opening
// the cache, Get and ReadAt must not panic, and a range ReadAt returns
// must agree with what Get (which verifies every piece) returned.
func FuzzEntryFile(f *testing.F) {
	valid, _ := validEntry(f)
	f.Add(valid)
	f.Add(valid[:40])
	f.Add(append([]byte("skc1"), valid[4:]...))
	f.Add([]byte("skc2"))
	f.Fuzz(func(t *testing.T, file []byte) {
		c := entryCache(t, file)
		whole, ok := c.Get(key(1))
		if !ok || len(whole) < 107 {
			return
		}
		buf := make([]byte, 100)
		if c.ReadAt(key(1), -1, buf, 7) && !bytes.Equal(buf, whole[7:107]) {
			t.Fatal("ReadAt and Get disagree")
		}
	})
}

// FuzzDamagedEntry flips bits of one byte of a valid entry file: a read
// either misses or returns the data the entry was written with, never
// other bytes.
func FuzzDamagedEntry(f *testing.F) {
	valid, d := validEntry(f)
	f.Add(uint32(5), byte(1), uint32(0), uint32(100))
	f.Add(uint32(len(valid)-1), byte(0x80), uint32(len(d)-10), uint32(10))
	f.Add(uint32(4096+3*piece), byte(0xFF), uint32(3*piece-5), uint32(10))
	f.Fuzz(func(t *testing.T, pos uint32, flip byte, off, n uint32) {
		if flip == 0 {
			flip = 1
		}
		file := bytes.Clone(valid)
		file[int(pos)%len(file)] ^= flip
		off %= uint32(len(d))
		n %= uint32(len(d)) - off + 1
		c := entryCache(t, file)
		p := make([]byte, n)
		if c.ReadAt(key(1), int64(len(d)), p, int64(off)) && !bytes.Equal(p, d[off:off+n]) {
			t.Fatalf("ReadAt(%d+%d) returned damaged bytes (byte %d ^= %#x)", off, n, int(pos)%len(file), flip)
		}
		if got, ok := c.Get(key(1)); ok {
			t.Fatalf("Get returned a damaged entry (%d bytes; byte %d ^= %#x)", len(got), int(pos)%len(file), flip)
		}
	})
}
