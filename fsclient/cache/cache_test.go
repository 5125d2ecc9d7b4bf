package cache_test

import (
	"bytes"
	"fmt"
	"io/fs"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/skiff-fs/skiff/fsclient/cache"
	"github.com/skiff-fs/skiff/internal/syncbuf"
)

const (
	blk     = 64 << 10   // data bytes of most test entries
	counted = blk + 4096 // what one such entry counts (16-byte header, rounded up to 4 KiB)
)

func newCache(t testing.TB, cfg cache.Config) *cache.Cache {
	t.Helper()
	if cfg.Dir == "" {
		cfg.Dir = t.TempDir()
	}
	if cfg.FreeRatio == 0 {
		cfg.FreeRatio = -1 // the test machine's disk is not the subject
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	c, err := cache.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func data(seed uint64, n int) []byte {
	r := rand.New(rand.NewPCG(seed, seed))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

func key(i int) string { return fmt.Sprintf("chunks/0/%d/%d_0_%d", i/1000, i, blk) }

// diskUsage sums the sizes of the regular files under dir and counts them.
func diskUsage(t testing.TB, dir string) (bytes int64, files int) {
	t.Helper()
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		bytes += info.Size()
		files++
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return bytes, files
}

// openDeleted counts this process's open files under dir that were
// unlinked.
func openDeleted(t testing.TB, dir string) int {
	t.Helper()
	fds, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, fd := range fds {
		target, err := os.Readlink(filepath.Join("/proc/self/fd", fd.Name()))
		if err == nil && strings.HasPrefix(target, dir) && strings.HasSuffix(target, " (deleted)") {
			n++
		}
	}
	return n
}

func mustGet(t testing.TB, c *cache.Cache, k string, want []byte) {
	t.Helper()
	got, ok := c.Get(k)
	if !ok {
		t.Fatalf("Get(%s) missed", k)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("Get(%s) returned other data", k)
	}
}

func TestPutGetRemove(t *testing.T) {
	c := newCache(t, cache.Config{MemSize: -1})
	d := data(1, blk)
	if _, ok := c.Get(key(1)); ok {
		t.Fatal("hit in an empty cache")
	}
	c.Put(key(1), d)
	mustGet(t, c, key(1), d)
	if !c.Has(key(1)) {
		t.Error("Has = false after Put")
	}
	c.Remove(key(1))
	if _, ok := c.Get(key(1)); ok || c.Has(key(1)) {
		t.Fatal("hit after Remove")
	}
	st := c.Stats()
	if st.Entries != 0 || st.Bytes != 0 || st.Puts != 1 || st.Hits != 1 || st.Misses != 2 {
		t.Errorf("stats after put, get, remove: %+v", st)
	}
	if b, n := diskUsage(t, c.Dir()); b != 0 || n != 0 {
		t.Errorf("%d files (%d bytes) left after Remove", n, b)
	}
	// Bad keys never touch the file system outside the directory.
	for _, k := range []string{"", "../x", "a//b", "/abs", "a/.tmp", "a/../../b"} {
		c.Put(k, d)
		if _, ok := c.Get(k); ok {
			t.Errorf("Get(%q) hit", k)
		}
	}
}

func TestMemoryTier(t *testing.T) {
	c := newCache(t, cache.Config{MemSize: 8 * blk})
	d := data(2, blk)
	c.Put(key(1), d)
	// Delete the file behind the cache's back: a memory hit does not
	// need it.
	os.RemoveAll(filepath.Join(c.Dir(), "blocks"))
	mustGet(t, c, key(1), d)
	if st := c.Stats(); st.MemHits != 1 || st.MemEntries != 1 || st.MemBytes != blk {
		t.Errorf("stats: %+v", st)
	}
	// The memory tier is an LRU bounded by MemSize.
	for i := 2; i < 20; i++ {
		c.Put(key(i), data(uint64(i), blk))
	}
	if st := c.Stats(); st.MemBytes > 8*blk {
		t.Errorf("memory tier holds %d bytes, limit %d", st.MemBytes, 8*blk)
	}
}

// TestLimitWithParallelFillers fills a cache of 20 entries from 8
// goroutines that each put and read 60 distinct entries. The counted bytes
// never exceed the limit (Peak), and in the end the index and the files on
// disk agree and fit.
func TestLimitWithParallelFillers(t *testing.T) {
	const limit = 20 * counted
	c := newCache(t, cache.Config{Size: limit, MemSize: -1})
	var wg sync.WaitGroup
	var bad atomic.Int64
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 60 {
				k := key(g*1000 + i)
				d := data(uint64(g*1000+i), blk)
				c.Put(k, d)
				if got, ok := c.Get(k); ok && !bytes.Equal(got, d) {
					bad.Add(1)
				}
				// Re-read an older entry, so both segments move.
				if i > 3 {
					if got, ok := c.Get(key(g*1000 + i - 3)); ok && !bytes.Equal(got, data(uint64(g*1000+i-3), blk)) {
						bad.Add(1)
					}
				}
				// And ranges of another, through the open files.
				if i > 5 {
					j := g*1000 + i - 5
					p := make([]byte, 5000)
					if c.ReadAt(key(j), blk, p, 12345) && !bytes.Equal(p, data(uint64(j), blk)[12345:12345+5000]) {
						bad.Add(1)
					}
				}
			}
		}()
	}
	wg.Wait()
	if bad.Load() > 0 {
		t.Fatalf("%d Gets returned wrong data", bad.Load())
	}
	st := c.Stats()
	if st.Peak > limit {
		t.Errorf("peak %d bytes exceeds the limit %d", st.Peak, limit)
	}
	if st.Bytes > limit {
		t.Errorf("index holds %d bytes, limit %d", st.Bytes, limit)
	}
	onDisk, files := diskUsage(t, c.Dir())
	if onDisk > limit {
		t.Errorf("files use %d bytes, limit %d", onDisk, limit)
	}
	if int64(files) != st.Entries || int64(files)*counted != st.Bytes {
		t.Errorf("disk has %d files (%d bytes), index %d entries (%d bytes)", files, onDisk, st.Entries, st.Bytes)
	}
	// Evicted files kept open for range reads would still use space.
	if n := openDeleted(t, c.Dir()); n > 0 {
		t.Errorf("%d evicted entry files are still open", n)
	}
	if st.Evictions == 0 || st.Puts+st.Skipped != 8*60 {
		t.Errorf("stats: %+v", st)
	}
	t.Logf("%+v", st)
}

// TestEvictionOrder: the least recently used entry on probation goes
// first; a re-read entry is protected.
func TestEvictionOrder(t *testing.T) {
	c := newCache(t, cache.Config{Size: 3 * counted, MemSize: -1})
	for i := 1; i <= 3; i++ {
		c.Put(key(i), data(uint64(i), blk))
	}
	mustGet(t, c, key(1), data(1, blk)) // 1 is now the most recently used
	c.Put(key(4), data(4, blk))         // evicts 2
	c.Put(key(5), data(5, blk))         // evicts 3
	c.Put(key(6), data(6, blk))         // evicts 4, not the re-read 1
	var got []int
	for i := 1; i <= 6; i++ {
		if c.Has(key(i)) {
			got = append(got, i)
		}
	}
	if d := cmp.Diff([]int{1, 5, 6}, got); d != "" {
		t.Errorf("entries kept (-want +got):\n%s", d)
	}
	if st := c.Stats(); st.Evictions != 3 {
		t.Errorf("evictions %d, want 3", st.Evictions)
	}
}

// TestCorruptEntryDropped: a flipped byte, a truncated file and a file
// with a wrong header are misses, and their files are removed.
func TestCorruptEntryDropped(t *testing.T) {
	damage := map[string]func(p string){
		"flipped byte": func(p string) {
			b, _ := os.ReadFile(p)
			b[len(b)/2] ^= 0x40
			os.WriteFile(p, b, 0o600)
		},
		"truncated": func(p string) { os.Truncate(p, 100) },
		"bad magic": func(p string) {
			b, _ := os.ReadFile(p)
			b[0] = 'X'
			os.WriteFile(p, b, 0o600)
		},
	}
	for name, f := range damage {
		t.Run(name, func(t *testing.T) {
			c := newCache(t, cache.Config{MemSize: -1})
			d := data(3, blk)
			c.Put(key(7), d)
			p := filepath.Join(c.Dir(), "blocks", key(7))
			f(p)
			if got, ok := c.Get(key(7)); ok {
				t.Fatalf("a damaged entry was returned (%d bytes)", len(got))
			}
			if _, err := os.Stat(p); !os.IsNotExist(err) {
				t.Errorf("damaged file still there: %v", err)
			}
			st := c.Stats()
			if st.Corrupt != 1 || st.Entries != 0 || st.Bytes != 0 {
				t.Errorf("stats: %+v", st)
			}
			// A new Put caches it again.
			c.Put(key(7), d)
			mustGet(t, c, key(7), d)
		})
	}
}

// TestRestartReindexes: a new Cache on the same directory finds the
// entries with their sizes, keeps their access order, removes temporary
// files and drops damaged entries when read.
func TestRestartReindexes(t *testing.T) {
	dir := t.TempDir()
	c := newCache(t, cache.Config{Dir: dir, Size: 10 * counted, MemSize: -1})
	for i := 1; i <= 4; i++ {
		c.Put(key(i), data(uint64(i), blk))
	}
	c.Close()
	// Access times: 3 oldest, then 1, 4, 2.
	base := time.Now().Add(-time.Hour)
	for i, k := range []int{3, 1, 4, 2} {
		tm := base.Add(time.Duration(i) * time.Minute)
		if err := os.Chtimes(filepath.Join(dir, "blocks", key(k)), tm, tm); err != nil {
			t.Fatal(err)
		}
	}
	tmp := filepath.Join(dir, "blocks", "chunks", "0", "0", ".9_0_65536.tmp123")
	os.WriteFile(tmp, []byte("half written"), 0o600)
	p4 := filepath.Join(dir, "blocks", key(4))
	b, _ := os.ReadFile(p4)
	b[len(b)-100] ^= 1 // in the data: found when read
	os.WriteFile(p4, b, 0o600)
	os.Chtimes(p4, base.Add(2*time.Minute), base.Add(2*time.Minute))

	c2 := newCache(t, cache.Config{Dir: dir, Size: 4 * counted, MemSize: -1})
	st := c2.Stats()
	if st.Entries != 4 || st.Bytes != 4*counted {
		t.Fatalf("after restart: %+v", st)
	}
	if _, err := os.Stat(tmp); !os.IsNotExist(err) {
		t.Errorf("temporary file not removed: %v", err)
	}
	if _, ok := c2.Get(key(4)); ok {
		t.Error("damaged entry returned after restart")
	}
	mustGet(t, c2, key(2), data(2, blk))
	// Room for one more after 4 was dropped; then the oldest (3) goes.
	c2.Put(key(5), data(5, blk))
	c2.Put(key(6), data(6, blk))
	var got []int
	for i := 1; i <= 6; i++ {
		if c2.Has(key(i)) {
			got = append(got, i)
		}
	}
	if d := cmp.Diff([]int{1, 2, 5, 6}, got); d != "" {
		t.Errorf("entries kept (-want +got):\n%s", d)
	}
	// A smaller limit evicts at open, oldest first.
	c2.Close()
	c3 := newCache(t, cache.Config{Dir: dir, Size: 2 * counted, MemSize: -1})
	if st := c3.Stats(); st.Entries != 2 || st.Bytes > 2*counted {
		t.Errorf("after reopening with a smaller limit: %+v", st)
	}
	if b, _ := diskUsage(t, dir); b > 2*counted {
		t.Errorf("%d bytes on disk, limit %d", b, 2*counted)
	}
}

// TestFreeSpaceFloor uses a fake file system of 100 units where other
// data takes 85: with a 10% floor only 5 units are left for the cache,
// whatever its own limit.
func TestFreeSpaceFloor(t *testing.T) {
	dir := t.TempDir()
	const unit = counted
	var calls atomic.Int64
	diskFree := func(string) (uint64, uint64, error) {
		calls.Add(1)
		used, _ := diskUsage(t, dir)
		return uint64(100*unit - 85*unit - used), 100 * unit, nil
	}
	c := newCache(t, cache.Config{Dir: dir, Size: 50 * unit, MemSize: -1, FreeRatio: 0.1, DiskFree: diskFree})
	for i := range 20 {
		c.Put(key(i), data(uint64(i), blk))
		if b, _ := diskUsage(t, dir); b > 5*unit {
			t.Fatalf("after %d puts the cache uses %d bytes; the floor leaves %d", i+1, b, 5*unit)
		}
	}
	st := c.Stats()
	if st.Entries != 5 || st.Evictions != 15 || calls.Load() == 0 {
		t.Errorf("stats: %+v", st)
	}
	// The newest entries are the ones kept.
	for i := 15; i < 20; i++ {
		mustGet(t, c, key(i), data(uint64(i), blk))
	}
	// With less free space than the floor and nothing to evict, Puts are
	// skipped.
	// skipped, and the log says why (once, not once per block).
	dir2 := t.TempDir()
	full := func(string) (uint64, uint64, error) { return 5, 100, nil }
	var log syncbuf.Buffer
	c2 := newCache(t, cache.Config{Dir: dir2, MemSize: -1, FreeRatio: 0.1, DiskFree: full,
		Logger: slog.New(slog.NewTextHandler(&log, nil))})
	c2.Put(key(1), data(1, blk))
	c2.Put(key(2), data(2, blk))
	if st := c2.Stats(); st.Skipped != 2 || st.Entries != 0 {
		t.Errorf("full disk: %+v", st)
	}
	if n := strings.Count(log.String(), "free-space floor"); n != 1 {
		t.Errorf("%d warnings about the floor, want 1; log:\n%s", n, log.String())
	}
	// Over the size limit alone (the disk has room) is no reason to warn.
	var log3 syncbuf.Buffer
	roomy := func(string) (uint64, uint64, error) { return 90 * unit, 100 * unit, nil }
	c3 := newCache(t, cache.Config{Dir: t.TempDir(), Size: 1, MemSize: -1, FreeRatio: 0.1, DiskFree: roomy,
		Logger: slog.New(slog.NewTextHandler(&log3, nil))})
	c3.Put(key(1), data(1, blk))
	if st := c3.Stats(); st.Skipped != 1 || strings.Contains(log3.String(), "floor") {
		t.Errorf("over the size limit: %+v; log:\n%s", c3.Stats(), log3.String())
	}
}

// TestSharedFormMismatch: entries written for the other form are dropped.
func TestSharedFormMismatch(t *testing.T) {
	dir := t.TempDir()
	c := newCache(t, cache.Config{Dir: dir, MemSize: -1})
	c.Put(key(1), data(1, blk))
	c.Close()
	c2 := newCache(t, cache.Config{Dir: dir, MemSize: -1, Shared: true})
	if !c2.Shared() {
		t.Fatal("Shared() = false")
	}
	if _, ok := c2.Get(key(1)); ok {
		t.Fatal("an entry of the decoded form was returned by a shared cache")
	}
	if st := c2.Stats(); st.Entries != 0 {
		t.Errorf("stats: %+v", st)
	}
}

// TestAdoptsOtherProcessEntries: an entry another Cache on the same
// directory wrote (skiff warmup beside a mount) is found on a miss.
func TestAdoptsOtherProcessEntries(t *testing.T) {
	dir := t.TempDir()
	mount := newCache(t, cache.Config{Dir: dir, MemSize: -1})
	warm := newCache(t, cache.Config{Dir: dir, MemSize: -1})
	d := data(9, blk)
	warm.Put(key(9), d)
	mustGet(t, mount, key(9), d)
	if st := mount.Stats(); st.Adopted != 1 || st.Entries != 1 || st.Bytes != counted {
		t.Errorf("stats: %+v", st)
	}
}

func TestConfigErrors(t *testing.T) {
	for _, cfg := range []cache.Config{
		{},
		{Dir: t.TempDir(), Size: -1},
		{Dir: t.TempDir(), FreeRatio: 1},
	} {
		if _, err := cache.New(cfg); err == nil || !strings.Contains(err.Error(), "cache") {
			t.Errorf("New(%+v) = %v", cfg, err)
		}
	}
}

// TestClaim: bytes claimed for files outside the index count against the
// limit — a claim evicts entries, and entries cannot push a claim out.
func TestClaim(t *testing.T) {
	c := newCache(t, cache.Config{Size: 10 * counted, MemSize: -1})
	for i := range 10 {
		c.Put(key(i), data(uint64(i), blk))
	}
	if !c.Claim(4 * counted) {
		t.Fatal("claim of 4 entries' worth refused")
	}
	st := c.Stats()
	if st.Entries != 6 || st.Claimed != 4*counted || st.Bytes+st.Claimed > st.Limit {
		t.Fatalf("after the claim: %+v", st)
	}
	for i := 10; i < 20; i++ {
		c.Put(key(i), data(uint64(i), blk))
	}
	if st := c.Stats(); st.Entries != 6 || st.Bytes+st.Claimed > st.Limit || st.Peak > st.Limit {
		t.Fatalf("puts after the claim: %+v", st)
	}
	if c.Claim(11 * counted) {
		t.Fatal("a claim over the limit was granted")
	}
	c.Unclaim(4 * counted)
	for i := 20; i < 30; i++ {
		c.Put(key(i), data(uint64(i), blk))
	}
	if st := c.Stats(); st.Entries != 10 || st.Claimed != 0 {
		t.Fatalf("after the unclaim: %+v", st)
	}
}
