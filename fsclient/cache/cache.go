package cache

import (
	"container/list"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

const (
	// blocksDir is the sub-directory holding entries, so the cache
	// directory can hold other files (a lock, a README) later.
	blocksDir = "blocks"
	// protectedShare is the part of Size the protected segment may use.
	protectedShare = 0.8
	// allocUnit is what a file's size is rounded up to when counted.
	allocUnit = 4096
)

// Config configures a Cache. Zero values mean the documented defaults.
type Config struct {
	// Dir is the cache directory; it is created (0700) if missing.
	// Required.
	Dir string
	// Size is the most bytes the cache's files may use on disk. Default
	// 10 GiB.
	Size int64
	// FreeRatio is the part of the file system holding Dir that must stay
	// free: a Put evicts entries, or is skipped, rather than leave less.
	// Default 0.1; negative: no floor.
	FreeRatio float64
	// MemSize is the memory tier's size in bytes. Default 256 MiB; -1
	// turns the memory tier off.
	MemSize int64
	// Shared says the directory is readable beyond this pod, so callers
	// must store blocks in their stored (encrypted) form. See the package
	// documentation. Default false (private).
	Shared bool
	// DiskFree reports the free and total bytes of the file system holding
	// dir. Default: statfs(2). Tests inject a fake.
	DiskFree func(dir string) (free, total uint64, err error)
	// Logger receives warnings (damaged entries, failed writes). Default:
	// discard.
	Logger *slog.Logger
}

func (c *Config) validate() error {
	if c.Dir == "" {
		return errors.New("cache: no directory given")
	}
	if c.Size == 0 {
		c.Size = 10 << 30
	}
	if c.Size < 0 {
		return fmt.Errorf("cache: size %d is negative", c.Size)
	}
	if c.FreeRatio == 0 {
		c.FreeRatio = 0.1
	}
	if c.FreeRatio >= 1 {
		return fmt.Errorf("cache: free ratio %g must be below 1", c.FreeRatio)
	}
	switch {
	case c.MemSize == 0:
		c.MemSize = 256 << 20
	case c.MemSize < 0:
		c.MemSize = 0
	}
	if c.DiskFree == nil {
		c.DiskFree = statfs
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return nil
}

// statfs reports the file system's space as df(1) does: free is what an
// unprivileged user may still write, and total is that plus what is used,
// so blocks reserved for root count as neither. (A disk with a large root
// reserve would otherwise look full to the floor long before df says so.)
func statfs(dir string) (free, total uint64, err error) {
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		return 0, 0, err
	}
	used := st.Blocks - st.Bfree
	return st.Bavail * uint64(st.Bsize), (used + st.Bavail) * uint64(st.Bsize), nil
}

// Stats is a snapshot of a Cache's counters.
type Stats struct {
	Hits       int64 // Gets served (memory or disk)
	MemHits    int64 // of which from the memory tier
	Misses     int64 // Gets that found nothing usable
	Puts       int64 // entries written to disk
	Skipped    int64 // Puts not cached: too big, no room under the floor, or a write error
	Evictions  int64 // entries evicted to make room
	Corrupt    int64 // entries dropped because they failed verification
	Stale      int64 // entries dropped at re-index: an older format, or the other form (Shared)
	Adopted    int64 // entries found on disk that another process wrote
	Entries    int64 // entries in the index now
	Bytes      int64 // bytes the index's entries use on disk now
	Limit      int64 // Config.Size
	Peak       int64 // most bytes ever counted (index, reserved, claimed, being unlinked)
	Claimed    int64 // bytes claimed now for files outside the index (Claim)
	MemEntries int64
	MemBytes   int64
}

// Cache is a local block cache. It is safe for concurrent use.
type Cache struct {
	cfg  Config
	root string // Dir/blocks
	log  *slog.Logger

	hits, memHits, misses, puts, skipped, evictions, corrupt, adopted, stale atomic.Int64
	closed                                                                   atomic.Bool
	floorWarned                                                              atomic.Int64 // unix nanoseconds of the last warning that the floor stops caching

	files files // open entry files; never locked together with mu or mem

	mu struct {
		sync.Mutex
		closed    bool
		entries   map[string]*entry
		probation list.List // of *entry, most recently used at the front
		protected list.List
		protBytes int64
		indexed   int64           // bytes of the entries in the index
		pending   int64           // bytes reserved by Puts writing now
		claimed   int64           // bytes claimed for files kept outside the index (Claim)
		deleting  int64           // bytes of evicted files not yet unlinked
		busy      map[string]bool // keys being written or unlinked (never in entries)
		peak      int64
	}

	mem struct {
		sync.Mutex
		m     map[string]*list.Element // of *memEntry
		lru   list.List
		bytes int64
	}
}

type entry struct {
	key       string
	size      int64   // counted bytes (file size rounded up to allocUnit)
	lay       *layout // the entry's header, without the piece table
	elem      *list.Element
	protected bool
}

type memEntry struct {
	key  string
	data []byte
}

// New opens (creating if needed) the cache directory cfg.Dir and indexes
// the entries already in it.
func New(cfg Config) (*Cache, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	c := &Cache{cfg: cfg, root: filepath.Join(cfg.Dir, blocksDir), log: cfg.Logger}
	if err := os.MkdirAll(c.root, 0o700); err != nil {
		return nil, fmt.Errorf("cache: create %s: %w", c.root, err)
	}
	c.mu.entries = make(map[string]*entry)
	c.mu.busy = make(map[string]bool)
	c.mem.m = make(map[string]*list.Element)
	if err := c.scan(); err != nil {
		return nil, err
	}
	return c, nil
}

// Dir is the cache directory.
func (c *Cache) Dir() string { return c.cfg.Dir }

// Shared reports Config.Shared: callers store the stored form of blocks.
func (c *Cache) Shared() bool { return c.cfg.Shared }

// Limit is Config.Size.
func (c *Cache) Limit() int64 { return c.cfg.Size }

// Stats returns a snapshot of the counters.
func (c *Cache) Stats() Stats {
	s := Stats{
		Hits: c.hits.Load(), MemHits: c.memHits.Load(), Misses: c.misses.Load(), Puts: c.puts.Load(),
		Skipped: c.skipped.Load(), Evictions: c.evictions.Load(), Corrupt: c.corrupt.Load(),
		Adopted: c.adopted.Load(), Stale: c.stale.Load(), Limit: c.cfg.Size,
	}
	c.mu.Lock()
	s.Entries, s.Bytes, s.Peak, s.Claimed = int64(len(c.mu.entries)), c.mu.indexed, c.mu.peak, c.mu.claimed
	c.mu.Unlock()
	c.mem.Lock()
	s.MemEntries, s.MemBytes = int64(len(c.mem.m)), c.mem.bytes
	c.mem.Unlock()
	return s
}

// Close stops the cache: later Gets miss and later Puts do nothing. The
// files stay for the next New. Close is idempotent.
func (c *Cache) Close() error {
	c.closed.Store(true)
	c.mu.Lock()
	c.mu.closed = true
	c.mu.Unlock()
	c.mem.Lock()
	clear(c.mem.m)
	c.mem.lru.Init()
	c.mem.bytes = 0
	c.mem.Unlock()
	c.files.closeAll()
	return nil
}

// validKey reports whether key can name a file under root: relative,
// slash-separated, no empty, "." or ".." parts, no part starting with '.'
// (those are temporary files).
func validKey(key string) bool {
	if key == "" || strings.ContainsRune(key, 0) || strings.Contains(key, "\\") {
		return false
	}
	for _, p := range strings.Split(key, "/") {
		if p == "" || p[0] == '.' {
			return false
		}
	}
	return true
}

func (c *Cache) path(key string) string { return filepath.Join(c.root, filepath.FromSlash(key)) }

func onDisk(n int64) int64 { return (n + allocUnit - 1) &^ (allocUnit - 1) }

// --- the index ---

// scan indexes the files under root, oldest access first, removes
// temporary files, and evicts down to the limit if it shrank.
func (c *Cache) scan() error {
	type found struct {
		key   string
		size  int64
		atime time.Time
		lay   *layout
	}
	var all []found
	err := filepath.WalkDir(c.root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil
			}
			return err
		}
		if d.IsDir() {
			return nil
		}
		rel, _ := filepath.Rel(c.root, p)
		key := filepath.ToSlash(rel)
		if strings.HasPrefix(d.Name(), ".") || !d.Type().IsRegular() || !validKey(key) {
			os.Remove(p) // a temporary file left by a crash, or junk
			return nil
		}
		info, err := d.Info()
		if err != nil {
			return nil // removed meanwhile
		}
		lay, err := c.checkFile(p)
		if err != nil {
			c.dropAtScan(p, key, err)
			return nil
		}
		all = append(all, found{key, onDisk(info.Size()), accessTime(info), lay})
		return nil
	})
	if err != nil {
		return fmt.Errorf("cache: scan %s: %w", c.root, err)
	}
	sort.Slice(all, func(i, j int) bool { return all[i].atime.Before(all[j].atime) })
	c.mu.Lock()
	for _, f := range all {
		e := &entry{key: f.key, size: f.size, lay: f.lay.light()}
		e.elem = c.mu.probation.PushFront(e)
		c.mu.entries[f.key] = e
		c.mu.indexed += f.size
	}
	var victims []*entry
	if over := c.mu.indexed - c.cfg.Size; over > 0 {
		victims = c.evictLocked(over)
	}
	c.mu.peak = c.mu.indexed
	c.mu.Unlock()
	c.unlink(victims)
	return nil
}

// accessTime is the later of a file's atime and mtime (atime may not be
// updated: relatime, noatime).
func accessTime(info fs.FileInfo) time.Time {
	t := info.ModTime()
	if st, ok := info.Sys().(*syscall.Stat_t); ok {
		if a := time.Unix(st.Atim.Sec, st.Atim.Nsec); a.After(t) {
			t = a
		}
	}
	return t
}

func (c *Cache) usedLocked() int64 {
	return c.mu.indexed + c.mu.pending + c.mu.deleting + c.mu.claimed
}

func (c *Cache) notePeakLocked() {
	if u := c.usedLocked(); u > c.mu.peak {
		c.mu.peak = u
	}
}

// evictLocked removes entries from the index, coldest first, until at
// least n bytes are chosen, and returns them; they count as deleting (and
// are busy) until unlink is called with them. The caller checked that the
// index holds n bytes.
func (c *Cache) evictLocked(n int64) []*entry {
	var victims []*entry
	for n > 0 {
		l := &c.mu.probation
		if l.Len() == 0 {
			l = &c.mu.protected
		}
		back := l.Back()
		if back == nil {
			break
		}
		e := back.Value.(*entry)
		c.dropLocked(e)
		c.mu.deleting += e.size
		c.mu.busy[e.key] = true
		victims = append(victims, e)
		n -= e.size
	}
	c.evictions.Add(int64(len(victims)))
	return victims
}

// dropLocked removes e from the index (not from disk).
func (c *Cache) dropLocked(e *entry) {
	if e.protected {
		c.mu.protected.Remove(e.elem)
		c.mu.protBytes -= e.size
	} else {
		c.mu.probation.Remove(e.elem)
	}
	delete(c.mu.entries, e.key)
	c.mu.indexed -= e.size
}

// unlink removes the files of entries evictLocked chose, then stops
// counting them.
func (c *Cache) unlink(victims []*entry) {
	if len(victims) == 0 {
		return
	}
	for _, e := range victims {
		c.files.forget(e.key)
		if err := os.Remove(c.path(e.key)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			c.log.Warn("cache: remove evicted entry", "key", e.key, "err", err)
		}
	}
	c.mu.Lock()
	for _, e := range victims {
		c.mu.deleting -= e.size
		delete(c.mu.busy, e.key)
	}
	c.mu.Unlock()
}

// touchLocked records a use of e: a hit on probation promotes it.
func (c *Cache) touchLocked(e *entry) {
	if e.protected {
		c.mu.protected.MoveToFront(e.elem)
		return
	}
	c.mu.probation.Remove(e.elem)
	e.protected = true
	e.elem = c.mu.protected.PushFront(e)
	c.mu.protBytes += e.size
	limit := int64(float64(c.cfg.Size) * protectedShare)
	for c.mu.protBytes > limit && c.mu.protected.Len() > 1 {
		old := c.mu.protected.Back().Value.(*entry)
		c.mu.protected.Remove(old.elem)
		c.mu.protBytes -= old.size
		old.protected = false
		old.elem = c.mu.probation.PushFront(old)
	}
}

// --- Get / Put / Remove ---

// Has reports whether key is cached (in memory or in the index), without
// reading or verifying it and without counting as a use.
func (c *Cache) Has(key string) bool {
	c.mem.Lock()
	_, ok := c.mem.m[key]
	c.mem.Unlock()
	if ok {
		return true
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return !c.mu.closed && c.mu.entries[key] != nil
}

// Get returns the whole data cached under key, every piece verified.
// The result is shared and read-only. A damaged entry is removed and
// reported as a miss.
func (c *Cache) Get(key string) ([]byte, bool) {
	if data, ok := c.memGet(key); ok {
		c.hits.Add(1)
		c.memHits.Add(1)
		return data, true
	}
	e, ok := c.lookup(key)
	if !ok {
		c.misses.Add(1)
		return nil, false
	}
	data, lay, err := c.readEntry(key)
	if err != nil {
		c.failed(key, e, err)
		return nil, false
	}
	if e == nil {
		c.adopt(key, onDisk(lay.fileSize()), lay)
	}
	c.hits.Add(1)
	c.memPut(key, data)
	return data, true
}

// ReadAt fills p with the bytes at off of the data cached under key,
// reading (from disk) and verifying only the pieces of the entry that
// hold them, or copying them from the memory tier. size is the data's
// length the caller expects (-1: any); an entry of another length is not
// read. ReadAt reports false on a miss, and when [off, off+len(p)) is not
// inside the entry; a damaged entry is removed and reported as a miss. An
// entry another process wrote is adopted into the index; a key found
// nowhere is not counted as a miss (callers fall back to Get, or fetch).
// On a miss p's contents are undefined. ReadAt keeps no reference to p.
func (c *Cache) ReadAt(key string, size int64, p []byte, off int64) bool {
	if data, ok := c.memGet(key); ok {
		if off < 0 || off+int64(len(p)) > int64(len(data)) || (size >= 0 && size != int64(len(data))) {
			return false
		}
		copy(p, data[off:])
		c.hits.Add(1)
		c.memHits.Add(1)
		return true
	}
	e, ok := c.lookup(key)
	if !ok {
		return false
	}
	if e == nil {
		// Perhaps written by another process (skiff warmup).
		of, err := c.files.get(key, c.openEntry)
		if err != nil {
			if !errors.Is(err, fs.ErrNotExist) {
				c.failed(key, nil, err)
			}
			return false
		}
		lay := of.lay
		c.files.put(of)
		c.adopt(key, onDisk(lay.fileSize()), lay)
		if e, ok = c.lookup(key); !ok || e == nil {
			c.files.forget(key) // not adopted: do not keep it open
			return false
		}
	}
	if off < 0 || off+int64(len(p)) > e.lay.length || (size >= 0 && size != e.lay.length) {
		return false
	}
	of, err := c.files.get(key, c.openEntry)
	if err == nil {
		if of.lay.length != e.lay.length {
			err = fmt.Errorf("entry holds %d bytes, it held %d when indexed", of.lay.length, e.lay.length)
		} else {
			err = readRange(of.f, of.lay, p, off)
		}
		c.files.put(of)
		c.keepOpen(key, e)
	}
	if err != nil {
		c.failed(key, e, err)
		return false
	}
	c.hits.Add(1)
	return true
}

// Prefetch asks the kernel to start reading key's entry file into its
// page cache (asynchronously), so a ReadAt soon after finds it there.
// It does nothing on a miss or when the entry is in the memory tier.
func (c *Cache) Prefetch(key string) {
	c.mem.Lock()
	_, inMem := c.mem.m[key]
	c.mem.Unlock()
	if inMem || !validKey(key) {
		return
	}
	c.mu.Lock()
	e := c.mu.entries[key]
	busy := c.mu.closed || c.mu.busy[key]
	c.mu.Unlock()
	if e == nil || busy {
		return
	}
	of, err := c.files.get(key, c.openEntry)
	if err != nil {
		return
	}
	defer c.keepOpen(key, e)
	defer c.files.put(of)
	// One call is capped at about the device's largest request, so ask
	// in steps.
	const step = 512 << 10
	for at, size := int64(0), of.lay.fileSize(); at < size; at += step {
		if unix.Fadvise(int(of.f.Fd()), at, min(step, size-at), unix.FADV_WILLNEED) != nil {
			return
		}
	}
}

// keepOpen closes key's file if e stopped being its entry while it was
// being opened: an eviction that unlinked the file may have run before the
// file was added to the open files, and an open file keeps its space.
func (c *Cache) keepOpen(key string, e *entry) {
	c.mu.Lock()
	gone := c.mu.entries[key] != e
	c.mu.Unlock()
	if gone {
		c.files.forget(key)
	}
}

// lookup finds key's index entry and records the use. ok is false when
// the key cannot be read now (invalid, closed, being written or
// unlinked); e is nil when the key is not indexed (it may still be on
// disk, written by another process).
func (c *Cache) lookup(key string) (e *entry, ok bool) {
	if !validKey(key) {
		return nil, false
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.mu.closed || c.mu.busy[key] {
		return nil, false
	}
	e = c.mu.entries[key]
	if e != nil {
		c.touchLocked(e)
	}
	return e, true
}

// failed handles a failed read of key (e: its index entry, or nil): a
// missing file is forgotten, a damaged one removed. Both count as misses.
func (c *Cache) failed(key string, e *entry, err error) {
	c.misses.Add(1)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		// Evicted by another process, or never there.
		c.files.forget(key)
		if e != nil {
			c.forget(e)
		}
	default:
		c.corrupt.Add(1)
		c.log.Warn("cache: dropping a damaged entry; the block will be fetched again", "key", key, "err", err)
		c.removeDamaged(key, e)
	}
}

// readEntry reads and verifies the whole file of key; it returns the data
// and the entry's layout.
func (c *Cache) readEntry(key string) ([]byte, *layout, error) {
	f, err := os.Open(c.path(key))
	if err != nil {
		return nil, nil, err
	}
	defer f.Close()
	info, err := f.Stat()
	if err != nil {
		return nil, nil, err
	}
	size := info.Size()
	if size < headerSize || size > headerSize+maxData+4*(maxData>>minPieceShift) {
		return nil, nil, fmt.Errorf("file is %d bytes", size)
	}
	buf := make([]byte, size)
	if _, err := io.ReadFull(f, buf); err != nil {
		return nil, nil, fmt.Errorf("read: %w", err)
	}
	lay, err := parseHeader(buf)
	if err != nil {
		return nil, nil, err
	}
	if size != lay.fileSize() {
		return nil, nil, fmt.Errorf("file is %d bytes, its header says %d", size, lay.fileSize())
	}
	if lay, err = decodeLayout(buf[:lay.dataOff()], lay); err != nil {
		return nil, nil, err
	}
	if lay.stored != c.cfg.Shared {
		return nil, nil, fmt.Errorf("entry holds the %s form, the cache is configured for the other (Shared %v)", form(lay.stored), c.cfg.Shared)
	}
	data := buf[lay.dataOff():]
	ps := int(lay.pieceSize())
	for i, want := range lay.sums {
		if sum := crc32.Checksum(data[i*ps:min((i+1)*ps, len(data))], castagnoli); sum != want {
			return nil, nil, fmt.Errorf("piece %d: checksum mismatch: %08x, header says %08x", i, sum, want)
		}
	}
	return data, lay, nil
}

// openEntry opens key's entry file and reads and verifies its header and
// piece table, for range reads.
func (c *Cache) openEntry(key string) (*os.File, *layout, error) {
	f, err := os.Open(c.path(key))
	if err != nil {
		return nil, nil, err
	}
	lay, err := c.layoutOf(f)
	if err != nil {
		f.Close()
		return nil, nil, err
	}
	return f, lay, nil
}

// layoutOf reads and verifies the header and piece table of an open
// entry file.
func (c *Cache) layoutOf(f *os.File) (*layout, error) {
	info, err := f.Stat()
	if err != nil {
		return nil, err
	}
	lay, err := readLayout(f, info.Size())
	if err != nil {
		return nil, err
	}
	if lay.stored != c.cfg.Shared {
		return nil, fmt.Errorf("%w: it holds the %s form, the cache is configured for the other (Shared %v)", errOtherForm, form(lay.stored), c.cfg.Shared)
	}
	return lay, nil
}

// checkFile reads and verifies the header of the entry file p (of size
// bytes) at re-index.
func (c *Cache) checkFile(p string) (*layout, error) {
	f, err := os.Open(p)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return c.layoutOf(f)
}

// errOtherForm marks an entry written with the other Config.Shared.
var errOtherForm = errors.New("entry of the other form")

// dropAtScan removes an entry file that failed checkFile.
func (c *Cache) dropAtScan(p, key string, err error) {
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return
	case errors.Is(err, errOldFormat), errors.Is(err, errOtherForm):
		c.stale.Add(1)
		c.log.Debug("cache: dropping an entry of another format at re-index", "key", key, "err", err)
	default:
		c.corrupt.Add(1)
		c.log.Warn("cache: dropping a damaged entry at re-index", "key", key, "err", err)
	}
	if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
		c.log.Warn("cache: remove entry", "key", key, "err", err)
	}
}

func form(stored bool) string {
	if stored {
		return "stored"
	}
	return "decoded"
}

// forget drops e from the index if it is still there (its file is gone).
func (c *Cache) forget(e *entry) {
	c.mu.Lock()
	if c.mu.entries[e.key] == e {
		c.dropLocked(e)
	}
	c.mu.Unlock()
}

// removeDamaged drops key from the index (if e is still its entry) and
// unlinks its file.
func (c *Cache) removeDamaged(key string, e *entry) {
	c.mu.Lock()
	if e != nil && c.mu.entries[key] != e {
		c.mu.Unlock() // replaced meanwhile: leave it
		return
	}
	if c.mu.busy[key] {
		c.mu.Unlock()
		return
	}
	var size int64
	if e != nil {
		c.dropLocked(e)
		size = e.size
	}
	c.mu.deleting += size
	c.mu.busy[key] = true
	c.mu.Unlock()
	c.unlink([]*entry{{key: key, size: size}})
}

// adopt indexes an entry another process wrote, evicting to stay within
// the limit.
func (c *Cache) adopt(key string, size int64, lay *layout) {
	c.mu.Lock()
	if c.mu.closed || c.mu.entries[key] != nil || c.mu.busy[key] {
		c.mu.Unlock()
		return
	}
	e := &entry{key: key, size: size, lay: lay.light()}
	e.elem = c.mu.probation.PushFront(e)
	c.mu.entries[key] = e
	c.mu.indexed += size
	var victims []*entry
	if over := c.usedLocked() - c.cfg.Size; over > 0 {
		victims = c.evictLocked(min(over, c.mu.indexed))
	}
	c.notePeakLocked()
	c.mu.Unlock()
	c.adopted.Add(1)
	c.unlink(victims)
}

// Put caches data under key, on disk and in the memory tier, unless it is
// cached already. It keeps data (the memory tier shares it): the caller
// must not modify it afterwards. Caching is best effort: a Put that does
// not fit or fails to write is counted in Stats.Skipped and logged.
func (c *Cache) Put(key string, data []byte) {
	if !validKey(key) {
		c.skipped.Add(1)
		c.log.Warn("cache: invalid key", "key", key)
		return
	}
	c.memPut(key, data)
	c.write(key, data)
}

// Write caches data under key on disk only (not in the memory tier),
// unless it is cached already. It keeps no reference to data. Caching is
// best effort, as for Put.
func (c *Cache) Write(key string, data []byte) {
	if !validKey(key) {
		c.skipped.Add(1)
		c.log.Warn("cache: invalid key", "key", key)
		return
	}
	c.write(key, data)
}

func (c *Cache) write(key string, data []byte) {
	if int64(len(data)) > maxData {
		c.skipped.Add(1)
		return
	}
	lay := newLayout(data, c.cfg.Shared)
	size := onDisk(lay.fileSize())
	if size > c.cfg.Size {
		c.skipped.Add(1)
		return
	}
	if !c.reserve(key, size) {
		return
	}
	err := c.writeEntry(key, lay, data)
	c.mu.Lock()
	c.mu.pending -= size
	delete(c.mu.busy, key)
	if err == nil && !c.mu.closed {
		e := &entry{key: key, size: size, lay: lay.light()}
		e.elem = c.mu.probation.PushFront(e)
		c.mu.entries[key] = e
		c.mu.indexed += size
	}
	c.mu.Unlock()
	if err != nil {
		c.skipped.Add(1)
		c.log.Warn("cache: write entry", "key", key, "err", err)
		return
	}
	c.puts.Add(1)
}

// Claim counts n bytes (rounded up to 4 KiB) of the cache's limit for a
// file the caller keeps in the cache's file system outside the index (a
// file image, package image), evicting entries as a Put does, under the
// limit and the free-space floor alike. It reports false, claiming
// nothing, when there is no room or the cache is closed. The caller gives
// the bytes back with Unclaim once the file is gone.
func (c *Cache) Claim(n int64) bool {
	n = onDisk(n)
	return n <= c.cfg.Size && c.reserve("", n)
}

// Unclaim gives back n bytes of an earlier Claim(n).
func (c *Cache) Unclaim(n int64) {
	c.mu.Lock()
	c.mu.claimed -= onDisk(n)
	c.mu.Unlock()
}

// reserve counts size bytes for a Put of key and marks key busy (for Claim,
// key is "" and the bytes count as claimed). It
// evicts entries to stay under the limit and above the free-space floor,
// and waits for their files to be unlinked before counting the new bytes,
// so the bytes counted never exceed the limit. It returns false (the Put
// is skipped) when key is cached or being written, the cache is closed,
// or there is no room.
func (c *Cache) reserve(key string, size int64) bool {
	floor := c.cfg.FreeRatio > 0
	for attempt := 0; ; attempt++ {
		var free, total uint64
		if floor {
			var err error
			if free, total, err = c.cfg.DiskFree(c.root); err != nil {
				c.log.Warn("cache: statfs failed; not caching", "dir", c.root, "err", err)
				c.skipped.Add(1)
				return false
			}
		}
		c.mu.Lock()
		if c.mu.closed || key != "" && (c.mu.entries[key] != nil || c.mu.busy[key]) {
			c.mu.Unlock()
			return false
		}
		need := c.usedLocked() + size - c.cfg.Size // bytes over the limit
		overLimit := need
		if floor {
			// Free space after this write; files being unlinked are
			// not counted on (conservative).
			after := int64(free) - c.mu.pending - size
			need = max(need, int64(c.cfg.FreeRatio*float64(total))-after)
		}
		if need <= 0 {
			if key == "" {
				c.mu.claimed += size
			} else {
				c.mu.pending += size
				c.mu.busy[key] = true
			}
			c.notePeakLocked()
			c.mu.Unlock()
			return true
		}
		// Entries being unlinked by others free space soon; retry a few
		// times before giving up.
		if attempt >= 8 || need > c.mu.indexed+c.mu.deleting {
			c.mu.Unlock()
			c.skipped.Add(1)
			if need > overLimit {
				c.warnFloor(free, total)
			}
			return false
		}
		victims := c.evictLocked(min(need, c.mu.indexed))
		c.mu.Unlock()
		if len(victims) == 0 {
			runtime.Gosched()
		}
		c.unlink(victims)
	}
}

// warnFloor says, at most once a minute, that the free-space floor keeps
// blocks out of the cache: otherwise a nearly full disk silently turns
// every read into a fetch from the object store.
func (c *Cache) warnFloor(free, total uint64) {
	now := time.Now().UnixNano()
	last := c.floorWarned.Load()
	if last != 0 && now-last < int64(time.Minute) || !c.floorWarned.CompareAndSwap(last, now) {
		return
	}
	c.log.Warn("cache: the disk is below the cache's free-space floor, so blocks are not being cached; "+
		"free space on it or lower --cache-free-ratio",
		"dir", c.root, "free_bytes", free, "disk_bytes", total,
		"free_ratio", fmt.Sprintf("%.3f", float64(free)/float64(max(total, 1))), "floor", c.cfg.FreeRatio)
}

// writeEntry writes key's file through a temporary file and a rename.
func (c *Cache) writeEntry(key string, lay *layout, data []byte) error {
	p := c.path(key)
	dir := filepath.Dir(p)
	var suffix [6]byte
	rand.Read(suffix[:])
	tmp := filepath.Join(dir, "."+filepath.Base(p)+".tmp"+hex.EncodeToString(suffix[:]))
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if errors.Is(err, fs.ErrNotExist) {
		if err = os.MkdirAll(dir, 0o700); err == nil {
			f, err = os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
		}
	}
	if err != nil {
		return err
	}
	_, err = f.Write(lay.header())
	if err == nil {
		_, err = f.Write(data)
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		// No fsync: after a crash a torn entry fails its checksum and is
		// dropped, which costs a fetch, not data.
		err = os.Rename(tmp, p)
	}
	if err != nil {
		os.Remove(tmp)
	}
	return err
}

// Remove drops key from the cache and deletes its file (also one another
// process wrote). Removing a missing key does nothing.
func (c *Cache) Remove(key string) {
	if !validKey(key) {
		return
	}
	c.memRemove(key)
	c.mu.Lock()
	if c.mu.closed || c.mu.busy[key] {
		c.mu.Unlock()
		return
	}
	e := c.mu.entries[key]
	if e == nil {
		e = &entry{key: key}
	} else {
		c.dropLocked(e)
	}
	c.mu.deleting += e.size
	c.mu.busy[key] = true
	c.mu.Unlock()
	c.unlink([]*entry{e})
}

// --- memory tier ---

func (c *Cache) memGet(key string) ([]byte, bool) {
	if c.cfg.MemSize == 0 {
		return nil, false
	}
	c.mem.Lock()
	defer c.mem.Unlock()
	el := c.mem.m[key]
	if el == nil {
		return nil, false
	}
	c.mem.lru.MoveToFront(el)
	return el.Value.(*memEntry).data, true
}

func (c *Cache) memPut(key string, data []byte) {
	n := int64(len(data))
	if c.cfg.MemSize == 0 || n > c.cfg.MemSize/4 || c.closed.Load() {
		return // one entry may not take over the tier
	}
	c.mem.Lock()
	defer c.mem.Unlock()
	if el := c.mem.m[key]; el != nil {
		c.mem.lru.MoveToFront(el)
		return
	}
	c.mem.m[key] = c.mem.lru.PushFront(&memEntry{key: key, data: data})
	c.mem.bytes += n
	for c.mem.bytes > c.cfg.MemSize {
		old := c.mem.lru.Back().Value.(*memEntry)
		c.mem.lru.Remove(c.mem.m[old.key])
		delete(c.mem.m, old.key)
		c.mem.bytes -= int64(len(old.data))
	}
}

func (c *Cache) memRemove(key string) {
	c.mem.Lock()
	defer c.mem.Unlock()
	if el := c.mem.m[key]; el != nil {
		c.mem.lru.Remove(el)
		delete(c.mem.m, key)
		c.mem.bytes -= int64(len(el.Value.(*memEntry).data))
	}
}
