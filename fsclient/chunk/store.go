package chunk

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sync/errgroup"
	"golang.org/x/sync/semaphore"

	"github.com/skiff-fs/skiff/fsclient/cache"
	"github.com/skiff-fs/skiff/fsclient/object"
	"github.com/skiff-fs/skiff/fsclient/slice"
)

var (
	// ErrBlockMissing is wrapped (together with object.ErrNotFound) by a
	// read whose block object does not exist: committed data is lost.
	ErrBlockMissing = errors.New("data block missing")
	// ErrCorrupt is wrapped by a read whose block object fails to decode:
	// wrong length, failed authentication, bad compressed data.
	ErrCorrupt = errors.New("data block corrupt")
	// ErrChunkChanged must be wrapped by Meta.CompactChunk when the chunk's
	// records are no longer the ones the compaction read. Only then does
	// Compact delete the blocks it wrote; any other error leaves them, since
	// the commit may have happened.
	ErrChunkChanged = errors.New("chunk changed during compaction")
	// ErrClosed is returned by calls on a closed Store or FileWriter.
	ErrClosed = errors.New("chunk store closed")
)

// Meta is what the chunk layer needs from the metadata service. vfs adapts
// *meta.Meta to it.
type Meta interface {
	// NewSliceID returns a fresh, never reused slice id (> 0).
	NewSliceID(ctx context.Context) (uint64, error)
	// ReadChunk returns the chunk's records in commit order.
	ReadChunk(ctx context.Context, ino uint64, chunk uint32) ([]slice.Slice, error)
	// WriteChunk appends one record to the chunk (it wins over older
	// records where they overlap), extends the file's length to cover it
	// and sets mtime.
	WriteChunk(ctx context.Context, ino uint64, chunk uint32, s slice.Slice, mtime time.Time) error
	// CompactChunk replaces the records old with repl if old is still the
	// chunk's record list (an implementation may also accept old as a prefix
	// of it, keeping the records appended since). Otherwise it returns an
	// error wrapping ErrChunkChanged. Slices referenced by old and not by
	// repl are freed by meta once unreferenced.
	CompactChunk(ctx context.Context, ino uint64, chunk uint32, old, repl []slice.Slice) error
}

// Config configures a Store. Zero values mean the documented defaults.
type Config struct {
	// BlockSize is the volume's block size (format.Format.BlockSize), a
	// power of two between slice.MinBlockSize and slice.MaxBlockSize.
	// Default slice.DefaultBlockSize.
	BlockSize uint32
	// Compression is the volume's compression: none, lz4 or zstd.
	// Default none.
	Compression string
	// Key is the volume's data key from OpenKey; nil stores blocks
	// unencrypted.
	Key []byte
	// BlockFormat is the format new blocks are written in: 1, or 2 (with
	// checksums). Blocks of either are read whatever it is. Default
	// format.Version.
	BlockFormat int
	// OldBlocks says the volume may hold blocks of an older format than
	// BlockFormat (format.Format.OldestVersion): range reads then read a
	// block's header before its bytes. Default false.
	OldBlocks bool
	// BufferSize bounds the block memory: bytes of written, not yet
	// uploaded data held by all writers together (WriteAt waits when
	// they use it up), plus the whole blocks readers keep or are fetching
	// (which yield: read-ahead stops and readers drop blocks they have
	// read). At least BlockSize. Default 300 MiB.
	BufferSize int64
	// UploadConcurrency bounds parallel block Puts. Default 20.
	UploadConcurrency int
	// DownloadConcurrency bounds parallel block Gets. Default 32.
	DownloadConcurrency int
	// UploadAttempts is how many times a block Put is tried before the
	// write fails. Default 3.
	UploadAttempts int
	// Readahead is how far ahead of a sequential reader whole blocks are
	// fetched; the window starts at one block and doubles up to this
	// (less while more than half of BufferSize is in use). Each
	// FileReader keeps up to Readahead/BlockSize+3 whole blocks; they,
	// and whole blocks being fetched for readers, count against
	// BufferSize (Stats.Held), and read-ahead is refused while it is
	// used up. Blocks the
	// cache can serve by range are instead prefetched into the kernel's
	// page cache, 4 windows ahead. -1 turns read-ahead off. Default 8 MiB.
	Readahead int64
	// FlushAfter bounds how long written data stays only in memory: a
	// writer whose last write is this old, or whose oldest uncommitted
	// byte is half this old (a writer that never pauses), has its
	// buffered data sealed, uploaded and committed in the background. So
	// a byte written and not yet closed or fsynced is committed within
	// about FlushAfter (plus its upload and commit time), and a kill -9
	// of the client loses at most the last FlushAfter of a steady
	// writer's data. -1 turns it off. Default 5s.
	FlushAfter time.Duration
	// CompactThreshold: a chunk seen with more records than this is queued
	// for background compaction. Default 16.
	CompactThreshold int
	// Cache is the local block cache, consulted (memory, then disk) before
	// the object store; fetched blocks are put into it. It holds decoded
	// blocks, or their stored form when Cache.Shared. The Store does not
	// close it. nil: no cache.
	Cache *cache.Cache
	// CacheWrites also caches blocks as they are uploaded, so reading back
	// what this client wrote needs no Get. Default false.
	CacheWrites bool
	// Logger receives warnings (retried uploads, failed background
	// compactions). Default: discard.
	Logger *slog.Logger
}

func (c *Config) validate() error {
	if c.BlockSize == 0 {
		c.BlockSize = slice.DefaultBlockSize
	}
	if c.BlockSize < slice.MinBlockSize || c.BlockSize > slice.MaxBlockSize || c.BlockSize&(c.BlockSize-1) != 0 {
		return fmt.Errorf("block size %d is invalid: use a power of two between 64K and 16M", c.BlockSize)
	}
	if c.Compression == "" {
		c.Compression = "none"
	}
	if _, ok := codecByName[c.Compression]; !ok {
		return fmt.Errorf("unknown compression %q: use one of none, lz4, zstd", c.Compression)
	}
	if err := c.validateBlockFormat(); err != nil {
		return err
	}
	if c.Key != nil && len(c.Key) != KeySize {
		return fmt.Errorf("data key is %d bytes, want %d", len(c.Key), KeySize)
	}
	if c.BufferSize == 0 {
		c.BufferSize = 300 << 20
	}
	if c.BufferSize < int64(c.BlockSize) {
		return fmt.Errorf("write buffer size %d is smaller than the block size %d", c.BufferSize, c.BlockSize)
	}
	switch {
	case c.FlushAfter == 0:
		c.FlushAfter = 5 * time.Second
	case c.FlushAfter < 0:
		c.FlushAfter = -1
	}
	switch {
	case c.Readahead == 0:
		c.Readahead = 8 << 20
	case c.Readahead < 0:
		c.Readahead = -1
	}
	for _, f := range []struct {
		v    *int
		def  int
		name string
	}{
		{&c.UploadConcurrency, 20, "upload concurrency"},
		{&c.DownloadConcurrency, 32, "download concurrency"},
		{&c.UploadAttempts, 3, "upload attempts"},
		{&c.CompactThreshold, 16, "compaction threshold"},
	} {
		if *f.v == 0 {
			*f.v = f.def
		}
		if *f.v < 0 {
			return fmt.Errorf("%s %d is negative", f.name, *f.v)
		}
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return nil
}

// Stats is a snapshot of a Store's counters.
type Stats struct {
	BlocksPut      int64 // block objects stored
	BytesPut       int64 // stored (encoded) bytes put
	PutErrors      int64 // failed Put attempts (retried or not)
	BlocksGot      int64 // block Gets (whole blocks and ranges)
	BytesGot       int64 // stored bytes read
	FetchCollapsed int64 // reads that joined a fetch already in flight
	BlocksDeleted  int64 // Delete calls for block objects
	Buffered       int64 // bytes of write buffer in use now
	BufferedPeak   int64 // most bytes of write buffer ever in use
	BufferWaits    int64 // writes that waited for buffer space
	Held           int64 // bytes of whole blocks readers hold or are fetching now (reader.go)
	Compactions    int64 // chunks compacted
	CompactLost    int64 // compactions that lost the race with a writer
}

type counters struct {
	blocksPut, bytesPut, putErrors, blocksGot, bytesGot, collapsed, deleted atomic.Int64
	buffered, bufferedPeak, bufferWaits, compactions, compactLost           atomic.Int64
}

// genSlots is the number of view generation counters. A commit bumps the
// counter of its (inode, chunk); readers compare it with the one their
// cached view was read under. Collisions only cost a spurious re-read.
const genSlots = 4096

// Store reads and writes a volume's blocks. It is safe for concurrent use.
//
// Lock order: FileWriter.flushMu → FileWriter.mu → wslice.mu → Store.mu,
// and FileReader.mu → Store.mu.
// Store.mu is never held while another lock is taken.
type Store struct {
	obj     object.Store
	cfg     Config
	log     *slog.Logger
	tf      *transform
	budget  *semaphore.Weighted
	upSem   chan struct{}
	downSem chan struct{}
	gens    [genSlots]atomic.Uint64
	stats   counters

	uploading atomic.Int64 // block uploads started and not finished
	held      atomic.Int64 // Stats.Held: whole blocks of FileReaders, kept or being fetched
	bufs      chan []byte  // free block buffers (cap BlockSize), at most BufferSize/BlockSize
	encBufs   chan []byte  // free encoding buffers (cap encodeBound(BlockSize)), at most UploadConcurrency

	ctx    context.Context // canceled by Close; parent of background work
	cancel context.CancelFunc
	wg     sync.WaitGroup // every goroutine the Store starts

	compactQ chan compactJob

	versions versionMemo // block formats learnt by range reads (Config.OldBlocks)

	mu struct {
		sync.Mutex
		closed   bool
		fetches  map[string]*fetch
		writers  map[*FileWriter]struct{}
		compacts map[chunkRef]bool // queued or running
	}
}

type chunkRef struct {
	ino   uint64
	chunk uint32
}

// New returns a Store over obj, which must already be scoped to the
// volume's prefix (object.WithPrefix): block keys are slice.BlockKey.
// Close it to stop its background work.
func New(obj object.Store, cfg Config) (*Store, error) {
	if obj == nil {
		return nil, errors.New("no object store given")
	}
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	tf, err := newTransform(cfg.Compression, cfg.Key, cfg.BlockFormat)
	if err != nil {
		return nil, err
	}
	s := &Store{
		obj:      obj,
		cfg:      cfg,
		log:      cfg.Logger,
		tf:       tf,
		budget:   semaphore.NewWeighted(cfg.BufferSize),
		upSem:    make(chan struct{}, cfg.UploadConcurrency),
		downSem:  make(chan struct{}, cfg.DownloadConcurrency),
		compactQ: make(chan compactJob, 256),
		bufs:     make(chan []byte, cfg.BufferSize/int64(cfg.BlockSize)),
		encBufs:  make(chan []byte, cfg.UploadConcurrency),
	}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	s.mu.fetches = make(map[string]*fetch)
	s.mu.writers = make(map[*FileWriter]struct{})
	s.mu.compacts = make(map[chunkRef]bool)
	s.wg.Add(2)
	go s.compactWorker()
	go s.flushWorker()
	return s, nil
}

// Cache is Config.Cache (nil without a block cache).
func (s *Store) Cache() *cache.Cache { return s.cfg.Cache }

// BlockSize is the volume's block size.
func (s *Store) BlockSize() uint32 { return s.cfg.BlockSize }

// Stats returns a snapshot of the counters.
func (s *Store) Stats() Stats {
	c := &s.stats
	return Stats{
		BlocksPut: c.blocksPut.Load(), BytesPut: c.bytesPut.Load(), PutErrors: c.putErrors.Load(),
		BlocksGot: c.blocksGot.Load(), BytesGot: c.bytesGot.Load(), FetchCollapsed: c.collapsed.Load(),
		BlocksDeleted: c.deleted.Load(), Buffered: c.buffered.Load(), BufferedPeak: c.bufferedPeak.Load(),
		BufferWaits: c.bufferWaits.Load(), Compactions: c.compactions.Load(), CompactLost: c.compactLost.Load(),
		Held: s.held.Load(),
	}
}

// Close stops background compaction, cancels uploads and fetches still
// running and waits for every goroutine of the Store. It does not flush
// writers: Flush or Close them first. Close is idempotent.
func (s *Store) Close() error {
	s.mu.Lock()
	closed := s.mu.closed
	s.mu.closed = true
	s.mu.Unlock()
	if closed {
		return nil
	}
	s.cancel()
	s.wg.Wait()
	s.tf.close()
	return nil
}

func (s *Store) genSlot(ino uint64, chunk uint32) *atomic.Uint64 {
	h := ino*0x9E3779B97F4A7C15 ^ uint64(chunk)*0xBF58476D1CE4E5B9
	return &s.gens[(h>>32)%genSlots]
}

// changed tells readers of (ino, chunk) in this process to re-read its
// records.
func (s *Store) changed(ino uint64, chunk uint32) { s.genSlot(ino, chunk).Add(1) }

// flushWorker flushes writers idle for FlushAfter, and writers whose
// oldest uncommitted byte is FlushAfter/2 old: with ticks of at most
// FlushAfter/4, that byte's commit starts before it is 3/4 FlushAfter old.
func (s *Store) flushWorker() {
	defer s.wg.Done()
	if s.cfg.FlushAfter < 0 {
		return
	}
	tick := time.NewTicker(max(min(s.cfg.FlushAfter/4, time.Second), 10*time.Millisecond))
	defer tick.Stop()
	for {
		select {
		case <-s.ctx.Done():
			return
		case now := <-tick.C:
			s.mu.Lock()
			ws := make([]*FileWriter, 0, len(s.mu.writers))
			for w := range s.mu.writers {
				ws = append(ws, w)
			}
			s.mu.Unlock()
			for _, w := range ws {
				if w.idleSince(now, s.cfg.FlushAfter) || w.agedSince(now, s.cfg.FlushAfter/2) {
					// An error stays with the writer; its owner's next
					// Flush or Close reports it.
					w.Flush(s.ctx)
				}
			}
		}
	}
}

// goroutine runs f in a goroutine that Close waits for. It returns false,
// without running f, once the Store is closed.
func (s *Store) goroutine(f func()) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.mu.closed {
		return false
	}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		f()
	}()
	return true
}

// --- write buffer budget ---

// reserve takes n bytes of the write budget, waiting (and honouring ctx)
// while it is used up. When nothing is uploading, waiting could last
// forever because the budget is held by partly filled blocks, so it makes
// every writer upload those.
func (s *Store) reserve(ctx context.Context, n int64) error {
	if !s.budget.TryAcquire(n) {
		s.stats.bufferWaits.Add(1)
		for {
			if s.uploading.Load() == 0 {
				s.sealPartials()
			}
			wctx, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
			err := s.budget.Acquire(wctx, n)
			cancel()
			if err == nil {
				break
			}
			if ctx.Err() != nil {
				return ctx.Err()
			}
			if s.ctx.Err() != nil {
				return ErrClosed
			}
		}
	}
	cur := s.stats.buffered.Add(n)
	for {
		p := s.stats.bufferedPeak.Load()
		if cur <= p || s.stats.bufferedPeak.CompareAndSwap(p, cur) {
			break
		}
	}
	return nil
}

func (s *Store) release(n int64) {
	if n == 0 {
		return
	}
	s.stats.buffered.Add(-n)
	s.budget.Release(n)
}

// sealPartials makes every writer start uploading its partly filled
// blocks, which frees their buffers.
func (s *Store) sealPartials() {
	s.mu.Lock()
	ws := make([]*FileWriter, 0, len(s.mu.writers))
	for w := range s.mu.writers {
		ws = append(ws, w)
	}
	s.mu.Unlock()
	for _, w := range ws {
		w.sealAll()
	}
}

// getBuf returns an empty block buffer with room for at least n bytes.
// Full-size buffers are reused: the free list holds at most as many as
// the write budget can fill, so the buffers a Store keeps stay within
// about its BufferSize (plus the ones being filled), and a steady stream
// of writes allocates nothing once warmed up.
func (s *Store) getBuf(n int) []byte {
	if n == int(s.cfg.BlockSize) {
		select {
		case b := <-s.bufs:
			return b[:0]
		default:
		}
	}
	return make([]byte, 0, n)
}

func (s *Store) putBuf(b []byte) {
	if cap(b) == int(s.cfg.BlockSize) {
		select {
		case s.bufs <- b[:0]:
		default: // enough kept: left to the GC
		}
	}
}

// encode encodes a block into a reused buffer; give it back with putEnc
// once the stored form is no longer needed.
func (s *Store) encode(key string, plain []byte) []byte {
	var buf []byte
	select {
	case buf = <-s.encBufs:
	default:
		if len(plain) == int(s.cfg.BlockSize) {
			buf = make([]byte, s.tf.encodeBound(len(plain)))
		}
	}
	return s.tf.encodeTo(key, plain, buf)
}

func (s *Store) putEnc(b []byte) {
	if cap(b) == s.tf.encodeBound(int(s.cfg.BlockSize)) {
		select {
		case s.encBufs <- b[:cap(b)]:
		default:
		}
	}
}

// --- uploads ---

// putBlock encodes and stores one block, retrying failed Puts.
func (s *Store) putBlock(ctx context.Context, key string, plain []byte) error {
	select {
	case s.upSem <- struct{}{}:
	case <-ctx.Done():
		return fmt.Errorf("upload block %s: %w", key, ctx.Err())
	}
	defer func() { <-s.upSem }()
	data := s.encode(key, plain)
	defer s.putEnc(data) // Put does not retain data
	var err error
	for attempt := 1; ; attempt++ {
		if err = s.obj.Put(ctx, key, data); err == nil {
			s.stats.blocksPut.Add(1)
			s.stats.bytesPut.Add(int64(len(data)))
			if c := s.cfg.Cache; c != nil && s.cfg.CacheWrites {
				// Disk only: both buffers are reused, and a block just
				// written is in the page cache anyway.
				if c.Shared() {
					c.Write(key, data)
				} else {
					c.Write(key, plain)
				}
			}
			return nil
		}
		s.stats.putErrors.Add(1)
		if attempt >= s.cfg.UploadAttempts || ctx.Err() != nil {
			break
		}
		wait := time.Duration(50<<attempt) * time.Millisecond
		s.log.Warn("block upload failed, retrying", "key", key, "store", s.obj.String(), "attempt", attempt, "wait", wait, "err", err)
		select {
		case <-time.After(wait):
		case <-ctx.Done():
		}
	}
	return fmt.Errorf("upload block %s to %s: %w", key, s.obj, err)
}

// DeleteSlice deletes every block object of slice id, whose stored size is
// size. Deleting blocks that are already gone is not an error. Meta's
// background job calls it once no record references the slice.
func (s *Store) DeleteSlice(ctx context.Context, id uint64, size uint32) error {
	if id == 0 || size == 0 {
		return nil
	}
	g, ctx := errgroup.WithContext(ctx)
	g.SetLimit(s.cfg.UploadConcurrency)
	for _, b := range slice.Blocks(size, s.cfg.BlockSize) {
		key := slice.BlockKey(id, b.Index, b.Len)
		g.Go(func() error {
			if s.cfg.Cache != nil {
				s.cfg.Cache.Remove(key)
			}
			s.stats.deleted.Add(1)
			if err := s.obj.Delete(ctx, key); err != nil {
				return fmt.Errorf("delete block %s from %s: %w", key, s.obj, err)
			}
			return nil
		})
	}
	return g.Wait()
}

// --- downloads ---

// fetch is one download that any number of readers wait for.
type fetch struct {
	done    chan struct{}
	data    []byte // read-only once done is closed
	err     error
	waiters int // guarded by Store.mu
	cancel  context.CancelFunc
}

// collapse returns the result of get for id, running get at most once at a
// time per id however many callers ask: later callers wait for the running
// call. get runs under the Store's context, not a caller's, so one caller
// giving up does not fail the others; it is canceled when every caller
// has given up. The returned bytes are shared and must not be modified.
func (s *Store) collapse(ctx context.Context, id string, get func(ctx context.Context) ([]byte, error)) ([]byte, error) {
	s.mu.Lock()
	if s.mu.closed {
		s.mu.Unlock()
		return nil, ErrClosed
	}
	f := s.mu.fetches[id]
	if f == nil {
		fctx, cancel := context.WithCancel(s.ctx)
		f = &fetch{done: make(chan struct{}), cancel: cancel}
		s.mu.fetches[id] = f
		s.wg.Add(1) // s.mu is held and the Store is open: see goroutine
		go func() {
			defer s.wg.Done()
			data, err := get(fctx)
			s.mu.Lock()
			if s.mu.fetches[id] == f {
				delete(s.mu.fetches, id)
			}
			s.mu.Unlock()
			f.data, f.err = data, err
			cancel()
			close(f.done)
		}()
	} else {
		s.stats.collapsed.Add(1)
	}
	f.waiters++
	s.mu.Unlock()
	select {
	case <-f.done:
		return f.data, f.err
	case <-ctx.Done():
		s.mu.Lock()
		f.waiters--
		if f.waiters == 0 {
			f.cancel()
			if s.mu.fetches[id] == f {
				delete(s.mu.fetches, id)
			}
		}
		s.mu.Unlock()
		return nil, ctx.Err()
	}
}

// getObject reads limit bytes of key from off (limit -1: all), under the
// download semaphore. size is a capacity hint.
func (s *Store) getObject(ctx context.Context, key string, off, limit int64, size int) ([]byte, error) {
	select {
	case s.downSem <- struct{}{}:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	defer func() { <-s.downSem }()
	s.stats.blocksGot.Add(1)
	rc, err := s.obj.Get(ctx, key, off, limit)
	if err != nil {
		return nil, s.getError(key, err)
	}
	defer rc.Close()
	buf := bytes.NewBuffer(make([]byte, 0, size+bytes.MinRead))
	_, err = buf.ReadFrom(rc)
	s.stats.bytesGot.Add(int64(buf.Len()))
	if err != nil {
		return nil, s.getError(key, err)
	}
	return buf.Bytes(), nil
}

func (s *Store) getError(key string, err error) error {
	if errors.Is(err, object.ErrNotFound) {
		return fmt.Errorf("%w: %s in %s: %w", ErrBlockMissing, key, s.obj, err)
	}
	return fmt.Errorf("read block %s from %s: %w", key, s.obj, err)
}

// block returns the whole plain content of a block (shared, read-only),
// from the cache if it holds the block, else from the object store (and
// then caches it).
func (s *Store) block(ctx context.Context, key string, length uint32) ([]byte, error) {
	return s.collapse(ctx, key, func(ctx context.Context) ([]byte, error) {
		if data, ok := s.cached(key, length); ok {
			return data, nil
		}
		stored, err := s.getObject(ctx, key, 0, -1, storedBound(length))
		if err != nil {
			return nil, err
		}
		plain, err := s.decodeFetched(key, stored, length)
		if err == nil && s.cfg.Cache != nil {
			if s.cfg.Cache.Shared() {
				s.cfg.Cache.Put(key, stored)
			} else {
				s.cfg.Cache.Put(key, plain)
			}
		}
		return plain, err
	})
}

// cached returns the plain content of a block from the cache. An entry
// that passed the cache's checksum but does not decode to the block (it
// was written for another volume or key) is removed: the caller fetches
// the block again.
func (s *Store) cached(key string, length uint32) ([]byte, bool) {
	c := s.cfg.Cache
	if c == nil {
		return nil, false
	}
	data, ok := c.Get(key)
	if !ok {
		return nil, false
	}
	var err error
	if c.Shared() {
		if data, err = s.tf.decode(key, data, length); err == nil {
			return data, true
		}
	} else if len(data) == int(length) {
		return data, true
	} else {
		err = fmt.Errorf("cached block %s holds %d bytes, its key says %d", key, len(data), length)
	}
	s.log.Warn("dropping a cached block that does not match its key; fetching it again", "key", key, "cache", c.Dir(), "err", err)
	c.Remove(key)
	return nil, false
}

// rangeFromCache reports whether the cache can serve byte ranges of
// blocks: it holds decoded blocks, or stored blocks in the plain layout
// (a header byte, then the plain bytes). A cache holding compressed or
// encrypted stored forms cannot: those must be read and decoded whole.
func (s *Store) rangeFromCache() bool {
	c := s.cfg.Cache
	return c != nil && (!c.Shared() || s.tf.plainLayout())
}

// readCached fills dst with bytes [off, off+len(dst)) of a block from the
// cache, reading only the pieces of the entry that hold them. It reports
// false when the cache cannot serve the range.
func (s *Store) readCached(key string, length uint32, dst []byte, off uint32) bool {
	if !s.rangeFromCache() {
		return false
	}
	if s.cfg.Cache.Shared() {
		return s.readCachedStored(key, length, dst, off)
	}
	return s.cfg.Cache.ReadAt(key, int64(length), dst, int64(off))
}

// readaheadLimit is how far a sequential reader's window may grow now:
// Config.Readahead, shrinking towards one block as the buffer budget
// (write buffers plus readers' blocks) fills up beyond half (memory
// pressure).
func (s *Store) readaheadLimit() int64 {
	ra, half := s.cfg.Readahead, s.cfg.BufferSize/2
	if used := s.memUsed(); used > half {
		ra = int64(float64(ra) * float64(s.cfg.BufferSize-used) / float64(half))
	}
	return max(ra, int64(s.cfg.BlockSize))
}

// cachedWhole reports whether a random read of part of a block should
// read the whole block: yes when the cache holds it. Otherwise, with a
// cache, it starts fetching the whole block into the cache in the
// background (whole-block prefetch), and the caller reads its range now.
func (s *Store) cachedWhole(key string, length uint32) bool {
	c := s.cfg.Cache
	if c == nil {
		return false
	}
	if c.Has(key) {
		return true
	}
	s.mu.Lock()
	running := s.mu.fetches[key] != nil
	s.mu.Unlock()
	if !running {
		s.goroutine(func() { s.block(s.ctx, key, length) })
	}
	return false
}

// blockRange returns bytes [off, off+n) of a block of length bytes stored
// in the plain layout with one range read (shared, read-only), verified
// when the block has checksums (fetchRange).
func (s *Store) blockRange(ctx context.Context, key string, length, off, n uint32) ([]byte, error) {
	id := fmt.Sprintf("%s@%d+%d", key, off, n)
	return s.collapse(ctx, id, func(ctx context.Context) ([]byte, error) {
		return s.fetchRange(ctx, key, length, off, n)
	})
}
