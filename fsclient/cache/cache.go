package cache

import (
	"container/list"
	"crypto/rand"
	"encoding/binary"
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
)

const (
	headerSize = 16
	magic      = "skc1"
	flagStored = 1 << 0
	// blocksDir is the sub-directory holding entries, so the cache
	// directory can hold other files (a lock, a README) later.
	blocksDir = "blocks"
	// protectedShare is the part of Size the protected segment may use.
	protectedShare = 0.8
	// allocUnit is what a file's size is rounded up to when counted.
	allocUnit = 4096
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

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

func statfs(dir string) (free, total uint64, err error) {
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		return 0, 0, err
	}
	return st.Bavail * uint64(st.Bsize), st.Blocks * uint64(st.Bsize), nil
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
	Adopted    int64 // entries found on disk that another process wrote
	Entries    int64 // entries in the index now
	Bytes      int64 // bytes the index's entries use on disk now
	Limit      int64 // Config.Size
	Peak       int64 // most bytes ever counted (index, reserved, being unlinked)
	MemEntries int64
	MemBytes   int64
}

// Cache is a local block cache. It is safe for concurrent use.
type Cache struct {
	cfg  Config
	root string // Dir/blocks
	log  *slog.Logger

	hits, memHits, misses, puts, skipped, evictions, corrupt, adopted atomic.Int64
	closed                                                            atomic.Bool

	mu struct {
		sync.Mutex
		closed    bool
		entries   map[string]*entry
		probation list.List // of *entry, most recently used at the front
		protected list.List
		protBytes int64
		indexed   int64           // bytes of the entries in the index
		pending   int64           // bytes reserved by Puts writing now
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
	size      int64 // counted bytes (file size rounded up to allocUnit)
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
		Adopted: c.adopted.Load(), Limit: c.cfg.Size,
	}
	c.mu.Lock()
	s.Entries, s.Bytes, s.Peak = int64(len(c.mu.entries)), c.mu.indexed, c.mu.peak
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
		all = append(all, found{key, onDisk(info.Size()), accessTime(info)})
		return nil
	})
	if err != nil {
		return fmt.Errorf("cache: scan %s: %w", c.root, err)
	}
	sort.Slice(all, func(i, j int) bool { return all[i].atime.Before(all[j].atime) })
	c.mu.Lock()
	for _, f := range all {
		e := &entry{key: f.key, size: f.size}
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

func (c *Cache) usedLocked() int64 { return c.mu.indexed + c.mu.pending + c.mu.deleting }

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

// Get returns the data cached under key. The result is shared and
// read-only. A damaged entry is removed and reported as a miss.
func (c *Cache) Get(key string) ([]byte, bool) {
	if data, ok := c.memGet(key); ok {
		c.hits.Add(1)
		c.memHits.Add(1)
		return data, true
	}
	if !validKey(key) {
		c.misses.Add(1)
		return nil, false
	}
	c.mu.Lock()
	if c.mu.closed || c.mu.busy[key] {
		c.mu.Unlock()
		c.misses.Add(1)
		return nil, false
	}
	e := c.mu.entries[key]
	if e != nil {
		c.touchLocked(e)
	}
	c.mu.Unlock()

	data, size, err := c.readEntry(key)
	switch {
	case err == nil && e == nil:
		c.adopt(key, size)
	case errors.Is(err, fs.ErrNotExist):
		// Evicted by another process, or never there.
		if e != nil {
			c.forget(e)
		}
	case err != nil:
		c.corrupt.Add(1)
		c.log.Warn("cache: dropping a damaged entry; the block will be fetched again", "key", key, "err", err)
		c.removeDamaged(key, e)
	}
	if err != nil {
		c.misses.Add(1)
		return nil, false
	}
	c.hits.Add(1)
	c.memPut(key, data)
	return data, true
}

// readEntry reads and verifies the file of key; it returns the data and
// the counted size.
func (c *Cache) readEntry(key string) ([]byte, int64, error) {
	f, err := os.Open(c.path(key))
	if err != nil {
		return nil, 0, err
	}
	defer f.Close()
	info, err := f.Stat()
	if err != nil {
		return nil, 0, err
	}
	size := info.Size()
	if size < headerSize || size > headerSize+1<<30 {
		return nil, 0, fmt.Errorf("file is %d bytes", size)
	}
	buf := make([]byte, size)
	if _, err := io.ReadFull(f, buf); err != nil {
		return nil, 0, fmt.Errorf("read: %w", err)
	}
	if string(buf[:4]) != magic {
		return nil, 0, errors.New("bad magic")
	}
	if stored := buf[4]&flagStored != 0; stored != c.cfg.Shared {
		return nil, 0, fmt.Errorf("entry holds the %s form, the cache is configured for the other (Shared %v)", form(stored), c.cfg.Shared)
	}
	if n := binary.LittleEndian.Uint32(buf[8:]); int64(n) != size-headerSize {
		return nil, 0, fmt.Errorf("header says %d bytes, file holds %d", n, size-headerSize)
	}
	data := buf[headerSize:]
	if sum := crc32.Checksum(data, castagnoli); sum != binary.LittleEndian.Uint32(buf[12:]) {
		return nil, 0, fmt.Errorf("checksum mismatch: %08x, header says %08x", sum, binary.LittleEndian.Uint32(buf[12:]))
	}
	return data, onDisk(size), nil
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
func (c *Cache) adopt(key string, size int64) {
	c.mu.Lock()
	if c.mu.closed || c.mu.entries[key] != nil || c.mu.busy[key] {
		c.mu.Unlock()
		return
	}
	e := &entry{key: key, size: size}
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
	size := onDisk(int64(headerSize + len(data)))
	if size > c.cfg.Size {
		c.skipped.Add(1)
		return
	}
	if !c.reserve(key, size) {
		return
	}
	err := c.writeEntry(key, data)
	c.mu.Lock()
	c.mu.pending -= size
	delete(c.mu.busy, key)
	if err == nil && !c.mu.closed {
		e := &entry{key: key, size: size}
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

// reserve counts size bytes for a Put of key and marks key busy. It
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
		if c.mu.closed || c.mu.entries[key] != nil || c.mu.busy[key] {
			c.mu.Unlock()
			return false
		}
		need := c.usedLocked() + size - c.cfg.Size // bytes over the limit
		if floor {
			// Free space after this write; files being unlinked are
			// not counted on (conservative).
			after := int64(free) - c.mu.pending - size
			need = max(need, int64(c.cfg.FreeRatio*float64(total))-after)
		}
		if need <= 0 {
			c.mu.pending += size
			c.mu.busy[key] = true
			c.notePeakLocked()
			c.mu.Unlock()
			return true
		}
		// Entries being unlinked by others free space soon; retry a few
		// times before giving up.
		if attempt >= 8 || need > c.mu.indexed+c.mu.deleting {
			c.mu.Unlock()
			c.skipped.Add(1)
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

// writeEntry writes key's file through a temporary file and a rename.
func (c *Cache) writeEntry(key string, data []byte) error {
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
	var hdr [headerSize]byte
	copy(hdr[:], magic)
	if c.cfg.Shared {
		hdr[4] = flagStored
	}
	binary.LittleEndian.PutUint32(hdr[8:], uint32(len(data)))
	binary.LittleEndian.PutUint32(hdr[12:], crc32.Checksum(data, castagnoli))
	_, err = f.Write(hdr[:])
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
