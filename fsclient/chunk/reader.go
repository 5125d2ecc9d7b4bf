package chunk

import (
	"context"
	"fmt"
	"io"
	"sort"
	"sync"

	"golang.org/x/sync/errgroup"

	"github.com/skiff-fs/skiff/fsclient/slice"
)

// maxViews bounds the resolved chunk views a FileReader keeps.
const maxViews = 1024

// FileReader reads one file. It caches each chunk's resolved records and
// the whole blocks it fetched last (its read-ahead window plus three). It
// is safe for concurrent use.
type FileReader struct {
	s   *Store
	ino uint64
	m   Meta

	mu struct {
		sync.Mutex
		views    map[uint32]*view
		lastEnd  int64               // where the previous read ended
		window   int64               // read-ahead bytes; grows while reads are sequential
		blocks   []cachedBlock       // recently fetched whole blocks
		clock    uint64              // stamps block use
		fetching map[string]*pending // whole blocks being fetched
		advised  map[string]bool     // blocks the cache was asked to prefetch
	}
}

// pending is a whole-block fetch of one FileReader.
type pending struct {
	done chan struct{}
	data []byte // shared, read-only; set before done is closed
	err  error
}

// view is a chunk's resolved records as read under generation gen.
type view struct {
	gen    uint64
	pieces []slice.Slice // slice.Resolve output: sorted, contiguous from 0
}

type cachedBlock struct {
	key   string
	data  []byte // shared, read-only
	used  bool   // read at least once (not only read ahead)
	stamp uint64 // last use, or when it was cached
}

// NewReader returns a reader for inode ino that reads records through m.
func (s *Store) NewReader(ino uint64, m Meta) *FileReader {
	r := &FileReader{s: s, ino: ino, m: m}
	r.mu.views = make(map[uint32]*view)
	r.mu.lastEnd = 0 // reading from the start is sequential
	r.mu.blocks = make([]cachedBlock, max(0, s.cfg.Readahead)/int64(s.cfg.BlockSize)+3)
	r.mu.fetching = make(map[string]*pending)
	r.mu.advised = make(map[string]bool)
	return r
}

// Invalidate drops the cached records of one chunk; the next read of it
// asks meta again. Commits by this process's writers invalidate for
// themselves; vfs calls this when it learns of other changes (truncate,
// another client's write).
func (r *FileReader) Invalidate(chunk uint32) {
	r.mu.Lock()
	delete(r.mu.views, chunk)
	r.mu.Unlock()
}

// InvalidateAll drops every cached view.
func (r *FileReader) InvalidateAll() {
	r.mu.Lock()
	clear(r.mu.views)
	r.mu.Unlock()
}

// Close drops the reader's caches (and gives their memory back to the
// budget). Reads after Close still work.
func (r *FileReader) Close() {
	r.mu.Lock()
	clear(r.mu.views)
	for i := range r.mu.blocks {
		r.setSlotLocked(i, cachedBlock{})
	}
	r.mu.Unlock()
}

// ReadAt reads len(p) bytes at off of a file whose length is fileSize,
// following io.ReaderAt: fewer bytes than len(p) come with io.EOF. Holes,
// and bytes past the chunk's stored data but below fileSize, read as
// zeros. p belongs to the caller again when ReadAt returns; on error its
// contents are undefined. A missing block object gives an error wrapping
// ErrBlockMissing and object.ErrNotFound; a damaged one, ErrCorrupt.
//
// A read that starts where the previous one ended, or near it (within the
// read-ahead window or one block, so reads the kernel sent together and
// that arrive out of order still count), is sequential: it fetches whole
// blocks and starts fetching the blocks after the furthest read
// (read-ahead, growing up to Config.Readahead). Other reads of a volume without
// compression or encryption fetch only the bytes they need, unless the
// cache holds the whole block; with a cache, they also start fetching the
// whole block into it.
func (r *FileReader) ReadAt(ctx context.Context, p []byte, off int64, fileSize uint64) (int, error) {
	if off < 0 {
		return 0, fmt.Errorf("read inode %d: negative offset %d", r.ino, off)
	}
	if uint64(off) >= fileSize {
		return 0, io.EOF
	}
	n, eof := len(p), error(nil)
	if uint64(off)+uint64(n) > fileSize {
		n, eof = int(fileSize-uint64(off)), io.EOF
	}
	ranges, err := slice.Split(off, int64(n))
	if err != nil {
		return 0, err
	}
	r.mu.Lock()
	// Near where the stream has got to is sequential too: the kernel's
	// asynchronous read-ahead sends several reads at once, and they may
	// arrive out of order.
	slack := max(r.mu.window, int64(r.s.cfg.BlockSize))
	last := r.mu.lastEnd
	seq := off == last || (last > 0 && off > last-slack && off < last+slack)
	if seq {
		r.mu.lastEnd = max(last, off+int64(n))
	} else {
		r.mu.lastEnd = off + int64(n)
	}
	streamEnd := r.mu.lastEnd
	switch {
	case !seq || r.s.cfg.Readahead < 0:
		r.mu.window = 0
	case r.mu.window == 0:
		r.mu.window = int64(r.s.cfg.BlockSize)
	default:
		r.mu.window = min(2*r.mu.window, r.s.readaheadLimit())
	}
	window := r.mu.window
	r.mu.Unlock()

	var tasks []blockRead
	for _, rg := range ranges {
		v, err := r.view(ctx, rg.Chunk)
		if err != nil {
			return 0, err
		}
		dst := p[rg.Buf : rg.Buf+int64(rg.Len)]
		at := walk(v, rg.Off, rg.Len, r.s.cfg.BlockSize, func(pos uint32, br blockRead) {
			br.dst = dst[pos-rg.Off : pos-rg.Off+br.n]
			tasks = append(tasks, br)
		}, func(pos, end uint32) {
			clear(dst[pos-rg.Off : end-rg.Off])
		})
		clear(dst[at-rg.Off:]) // past the chunk's data: zeros up to the file size
	}
	if seq && window > 0 {
		r.readAhead(ctx, streamEnd, window, fileSize)
	}
	if len(tasks) == 1 {
		err = r.readBlock(ctx, tasks[0], seq)
	} else {
		g, gctx := errgroup.WithContext(ctx)
		g.SetLimit(r.s.cfg.DownloadConcurrency)
		for _, t := range tasks {
			g.Go(func() error { return r.readBlock(gctx, t, seq) })
		}
		err = g.Wait()
	}
	if err != nil {
		return 0, fmt.Errorf("read inode %d at %d: %w", r.ino, off, err)
	}
	return n, eof
}

// blockRead copies bytes [off, off+n) of one block into dst.
type blockRead struct {
	key    string
	length uint32 // the block's length
	off    uint32
	n      uint32
	dst    []byte
}

// walk visits the chunk bytes [off, off+n) of view v: data calls for each
// piece of a block that holds them (pos: its chunk offset), hole for each
// hole. It returns where the chunk's data ends (at most off+n); the rest
// reads as zeros.
func walk(v *view, off, n, bs uint32, data func(pos uint32, br blockRead), hole func(pos, end uint32)) uint32 {
	end := off + n
	ps := v.pieces
	i := sort.Search(len(ps), func(i int) bool { return ps[i].End() > off })
	at := off
	for ; i < len(ps) && ps[i].Pos < end; i++ {
		pc := ps[i]
		s, e := max(pc.Pos, off), min(pc.End(), end)
		at = e
		if pc.ID == 0 {
			hole(s, e)
			continue
		}
		so := pc.Off + (s - pc.Pos) // offset within the stored slice
		for s < e {
			bi := so / bs
			blen := min(bs, pc.Size-bi*bs)
			boff := so - bi*bs
			k := min(e-s, blen-boff)
			data(s, blockRead{key: slice.BlockKey(pc.ID, int(bi), blen), length: blen, off: boff, n: k})
			s += k
			so += k
		}
	}
	return at
}

// readAhead starts fetching, in the background, the whole blocks holding
// the window bytes after off that are neither cached nor being fetched.
func (r *FileReader) readAhead(ctx context.Context, off, window int64, fileSize uint64) {
	// Blocks the cache serves by range are only prefetched into the page
	// cache, which holds no memory of ours: look further ahead for them.
	far := window
	if r.s.rangeFromCache() {
		far = prefetchFactor * window
	}
	n := min(far, int64(fileSize)-off)
	if n <= 0 {
		return
	}
	ranges, err := slice.Split(off, n)
	if err != nil {
		return
	}
	seen := map[string]bool{}
	for _, rg := range ranges {
		v, err := r.view(ctx, rg.Chunk)
		if err != nil {
			return
		}
		walk(v, rg.Off, rg.Len, r.s.cfg.BlockSize, func(pos uint32, br blockRead) {
			if !seen[br.key] {
				seen[br.key] = true
				beyond := rg.Buf+int64(pos-rg.Off) >= window
				r.readAheadBlock(ctx, br.key, br.length, beyond)
			}
		}, func(uint32, uint32) {})
	}
}

// prefetchFactor is how many read-ahead windows ahead blocks in the
// cache are prefetched into the page cache.
const prefetchFactor = 4

// readAheadBlock starts reading one block ahead of a sequential reader: a
// block the cache can serve by range is only prefetched into the page
// cache (the reads then copy straight from it, nothing is allocated);
// others are fetched whole into the reader's blocks, unless the block is
// beyond the read-ahead window (looked at for prefetching only).
func (r *FileReader) readAheadBlock(ctx context.Context, key string, length uint32, beyond bool) {
	c := r.s.cfg.Cache
	if c != nil && r.s.rangeFromCache() && c.Has(key) {
		r.mu.Lock()
		done := r.mu.advised[key]
		if !done {
			if len(r.mu.advised) >= 4*len(r.mu.blocks) {
				clear(r.mu.advised)
			}
			r.mu.advised[key] = true
		}
		r.mu.Unlock()
		if !done {
			r.s.goroutine(func() { c.Prefetch(key) })
		}
		return
	}
	// Read-ahead is refused while the budget is used up: it would only
	// push out blocks being read.
	if !beyond && !r.s.overBudget(int64(length)) {
		r.wholeBlock(ctx, key, length, false)
	}
}

func (r *FileReader) readBlock(ctx context.Context, t blockRead, seq bool) error {
	r.mu.Lock()
	data := r.cachedLocked(t.key, true)
	r.mu.Unlock()
	if data != nil {
		copy(t.dst, data[t.off:t.off+t.n])
		return nil
	}
	if r.s.readCached(t.key, t.length, t.dst, t.off) {
		return nil
	}
	var err error
	if !seq && t.n < t.length && r.s.tf.plainLayout() && !r.s.cachedWhole(t.key, t.length) {
		data, err = r.s.blockRange(ctx, t.key, t.length, t.off, t.n)
	} else {
		data, err = r.wholeBlock(ctx, t.key, t.length, true)
		data = data[min(int(t.off), len(data)):]
	}
	if err != nil {
		return err
	}
	copy(t.dst, data[:t.n])
	return nil
}

// wholeBlock returns a whole block through the reader's cache; with wait
// false it only starts fetching it. A reader fetches each block once at a
// time (and the Store collapses fetches across readers). The fetch runs
// under the Store's context, so a caller that gives up fails no one else,
// and its result lands in the cache for the next read.
func (r *FileReader) wholeBlock(ctx context.Context, key string, length uint32, wait bool) ([]byte, error) {
	r.mu.Lock()
	if data := r.cachedLocked(key, wait); data != nil {
		r.mu.Unlock()
		return data, nil
	}
	f := r.mu.fetching[key]
	if f == nil {
		f = &pending{done: make(chan struct{})}
		r.mu.fetching[key] = f
		// The block counts against the budget from the start of its
		// download until the reader drops it.
		r.s.held.Add(int64(length))
		started := r.s.goroutine(func() {
			data, err := r.s.block(r.s.ctx, key, length)
			r.mu.Lock()
			defer r.mu.Unlock()
			r.s.held.Add(-int64(length))
			if err == nil {
				r.rememberLocked(key, data)
			}
			delete(r.mu.fetching, key)
			f.data, f.err = data, err
			close(f.done)
		})
		if !started {
			r.s.held.Add(-int64(length))
			delete(r.mu.fetching, key)
			r.mu.Unlock()
			return nil, ErrClosed
		}
	}
	r.mu.Unlock()
	if !wait {
		return nil, nil
	}
	select {
	case <-f.done:
		if f.err == nil {
			r.mu.Lock()
			r.cachedLocked(key, true)
			r.mu.Unlock()
		}
		return f.data, f.err
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// cachedLocked returns a cached block, if any; use marks it read.
func (r *FileReader) cachedLocked(key string, use bool) []byte {
	for i := range r.mu.blocks {
		if b := &r.mu.blocks[i]; b.key == key {
			if use {
				r.mu.clock++
				b.used, b.stamp = true, r.mu.clock
			}
			return b.data
		}
	}
	return nil
}

// rememberLocked caches a block. It replaces an empty slot, else the block
// read longest ago, else (all were only read ahead) the oldest: blocks read
// ahead stay until read, whatever order their fetches finished in. Over
// the budget it first drops blocks already read, and keeps nothing when
// that does not make room (the read that waits for the block still gets
// it; a later read of it fetches it again).
func (r *FileReader) rememberLocked(key string, data []byte) {
	if r.cachedLocked(key, false) != nil {
		return
	}
	if !r.shedLocked(int64(len(data))) {
		return
	}
	victim := 0
	for i, b := range r.mu.blocks {
		v := r.mu.blocks[victim]
		switch {
		case b.key == "":
			victim = i
		case v.key == "":
		case b.used != v.used:
			if b.used {
				victim = i
			}
		case b.stamp < v.stamp:
			victim = i
		}
		if r.mu.blocks[victim].key == "" {
			break
		}
	}
	r.mu.clock++
	r.setSlotLocked(victim, cachedBlock{key: key, data: data, stamp: r.mu.clock})
}

// view returns the chunk's resolved records, from the cache while no
// commit of this process has changed the chunk since they were read.
func (r *FileReader) view(ctx context.Context, chunk uint32) (*view, error) {
	gen := r.s.genSlot(r.ino, chunk).Load() // before reading meta: a racing commit makes the view stale
	r.mu.Lock()
	v := r.mu.views[chunk]
	r.mu.Unlock()
	if v != nil && v.gen == gen {
		return v, nil
	}
	recs, err := r.m.ReadChunk(ctx, r.ino, chunk)
	if err != nil {
		return nil, fmt.Errorf("read records of inode %d chunk %d: %w", r.ino, chunk, err)
	}
	for i, rec := range recs {
		if err := rec.Valid(); err != nil {
			return nil, fmt.Errorf("inode %d chunk %d record %d: %w: metadata is corrupt", r.ino, chunk, i, err)
		}
	}
	v = &view{gen: gen, pieces: slice.Resolve(recs)}
	r.mu.Lock()
	if len(r.mu.views) >= maxViews {
		clear(r.mu.views)
	}
	r.mu.views[chunk] = v
	r.mu.Unlock()
	if len(recs) > r.s.cfg.CompactThreshold {
		r.s.CompactLater(r.m, r.ino, chunk)
	}
	return v, nil
}

// --- memory budget of readers ---

// memUsed is the block memory counted against Config.BufferSize: write
// buffers not yet uploaded, plus the whole blocks readers keep or are
// fetching.
func (s *Store) memUsed() int64 { return s.stats.buffered.Load() + s.held.Load() }

// overBudget reports whether n more bytes of block memory would exceed
// Config.BufferSize.
func (s *Store) overBudget(n int64) bool { return s.memUsed()+n > s.cfg.BufferSize }

// setSlotLocked puts b in slot i of the reader's blocks, keeping
// Store.held in step.
func (r *FileReader) setSlotLocked(i int, b cachedBlock) {
	r.s.held.Add(int64(len(b.data)) - int64(len(r.mu.blocks[i].data)))
	r.mu.blocks[i] = b
}

// shedLocked drops blocks this reader has already read, least recently
// used first, until n more bytes fit in the budget or none is left. It
// reports whether n bytes fit.
func (r *FileReader) shedLocked(n int64) bool {
	for r.s.overBudget(n) {
		victim := -1
		for i, b := range r.mu.blocks {
			if b.key != "" && b.used && (victim < 0 || b.stamp < r.mu.blocks[victim].stamp) {
				victim = i
			}
		}
		if victim < 0 {
			return false
		}
		r.setSlotLocked(victim, cachedBlock{})
	}
	return true
}
