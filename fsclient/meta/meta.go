package meta

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/skiff-fs/skiff/fsclient/format"
	"github.com/skiff-fs/skiff/fsclient/meta/kv"
)

// Options tune a Meta. The zero value gives the production defaults.
type Options struct {
	// Logger receives background-job messages. Default: slog.Default().
	Logger *slog.Logger
	// ReadOnly refuses every change with EROFS and records no open files.
	ReadOnly bool
	// Heartbeat is how often a session proves it is alive. Default 12s.
	Heartbeat time.Duration
	// SessionTimeout is how long after its last heartbeat a session counts
	// as stale and is cleaned up by any live client. Default 60s.
	SessionTimeout time.Duration
	// SliceFreeDelay is how long slices dropped by truncate or compaction
	// wait before their blocks are deleted, so that readers holding an old
	// slice map can finish. Default 1h.
	SliceFreeDelay time.Duration
	// IDBatch is how many inode and slice ids a client reserves from the
	// shared counters at a time. Default 1000.
	IDBatch int
	// JobInterval is how often background jobs (stale sessions, deletion of
	// removed files' data, delayed slice freeing) run. Default: the smaller
	// of Heartbeat and SliceFreeDelay/2, at least 10ms.
	JobInterval time.Duration
	// OnSliceIDs, if set, runs each time this client reserves a batch of
	// slice ids from the shared counter, with the batch's last id, before
	// any id of it is handed out; an error fails the allocation. The
	// volume uses it to keep a high-water mark outside the engine.
	OnSliceIDs func(ctx context.Context, last uint64) error
	// OpTimeout bounds each operation on a Redis server: connecting,
	// every command and the retries (redis.Options.OpTimeout). While the
	// server is known down, operations fail at once. Default 15s.
	OpTimeout time.Duration
}

func (o *Options) setDefaults() {
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.Heartbeat <= 0 {
		o.Heartbeat = 12 * time.Second
	}
	if o.SessionTimeout <= 0 {
		o.SessionTimeout = 60 * time.Second
	}
	if o.SliceFreeDelay <= 0 {
		o.SliceFreeDelay = time.Hour
	}
	if o.IDBatch <= 0 {
		o.IDBatch = 1000
	}
	if o.JobInterval <= 0 {
		o.JobInterval = min(o.Heartbeat, o.SliceFreeDelay/2)
	}
	o.JobInterval = max(o.JobInterval, 10*time.Millisecond)
}

// Caller is the identity a request is checked against.
type Caller struct {
	Uid   uint32
	Gids  []uint32 // Gids[0] is the primary group
	Pid   uint32
	Umask uint16
	// KernelChecked says the kernel has already checked the mode bits
	// of this request with the caller's real credentials (a FUSE mount
	// with default_permissions): the read/write/search checks (access)
	// are skipped, since the kernel makes them even where it answers
	// from its caches. The rules the kernel cannot judge exactly, from
	// attributes that may be stale, stay: sticky directories, owner
	// rules of chmod/chown/utimes, setgid clearing, device nodes.
	// Direct callers leave it false and get every check.
	KernelChecked bool
}

// RootCaller is uid 0, gid 0, umask 0.
func RootCaller() Caller { return Caller{Uid: 0, Gids: []uint32{0}} }

func (c *Caller) gid() uint32 {
	if len(c.Gids) == 0 {
		return 0
	}
	return c.Gids[0]
}

func (c *Caller) inGroup(gid uint32) bool {
	for _, g := range c.Gids {
		if g == gid {
			return true
		}
	}
	return false
}

// Access masks.
const (
	R_OK = 4
	W_OK = 2
	X_OK = 1
)

// access checks mask (R_OK|W_OK|X_OK) against a for c.
func access(a *Attr, c *Caller, mask uint32) error {
	mask &= 7
	if mask == 0 || c.KernelChecked {
		return nil
	}
	if c.Uid == 0 {
		if mask&X_OK != 0 && a.Typ != TypeDir && a.Mode&0o111 == 0 {
			return syscall.EACCES
		}
		return nil
	}
	var perm uint32
	switch {
	case c.Uid == a.Uid:
		perm = uint32(a.Mode>>6) & 7
	case c.inGroup(a.Gid):
		perm = uint32(a.Mode>>3) & 7
	default:
		perm = uint32(a.Mode) & 7
	}
	if perm&mask != mask {
		return syscall.EACCES
	}
	return nil
}

// Entry is one directory entry.
type Entry struct {
	Name string
	Ino  Ino
	Attr Attr // the full attributes with Readdir(plus); else only Typ
}

// Meta is the POSIX metadata model of one volume over a kv.Engine. It is
// safe for concurrent use.
type Meta struct {
	engine    kv.Engine
	ownEngine bool
	closed    atomic.Bool
	opts      Options
	log       *slog.Logger

	inodes idAlloc
	slices idAlloc

	fmtMu struct {
		sync.Mutex
		f *format.Format
	}

	deleter struct {
		sync.Mutex
		fn func(ctx context.Context, id uint64, size uint32) error
	}

	// open counts this client's open handles per inode; see openfile.go.
	open struct {
		sync.Mutex
		files map[Ino]*openFile
	}

	// flight: slice ids handed out and not yet committed (slicefloor.go).
	flight sliceFlight
	// health: this client's record of unbroken heartbeats (session.go).
	health heartbeatHealth

	sess struct {
		sync.Mutex
		id     uint64
		info   SessionInfo
		cancel context.CancelFunc
		wg     sync.WaitGroup
		wake   chan struct{}
	}
}

// New returns a Meta over engine. The caller keeps ownership of engine:
// Close does not close it, so several Metas (clients) may share one engine.
func New(engine kv.Engine, opts Options) *Meta {
	opts.setDefaults()
	m := &Meta{engine: engine, opts: opts, log: opts.Logger}
	m.inodes = idAlloc{key: keyNextInode, batch: uint64(opts.IDBatch)}
	m.slices = idAlloc{key: keyNextSlice, batch: uint64(opts.IDBatch), reserved: m.slicesReserved, handed: m.flight.add}
	m.open.files = make(map[Ino]*openFile)
	m.sess.wake = make(chan struct{}, 1)
	return m
}

// Name describes the engine, without any password.
func (m *Meta) Name() string { return m.engine.Name() }

// Engine returns the underlying engine (for tools such as fsck).
func (m *Meta) Engine() kv.Engine { return m.engine }

// Key schema; see doc.go.
const (
	keySetting     = "setting"
	keyNextInode   = "nextInode"
	keyNextSlice   = "nextSlice"
	keyNextSession = "nextSession"
	keyUsedSpace   = "usedSpace"
	keyUsedInodes  = "usedInodes"
	keySessions    = "sessions"
	keySessInfo    = "sessinfo"
	keyDelFiles    = "delfiles"
	keyDelSlices   = "delslices"
)

func inodeKey(ino Ino) string   { return "i" + strconv.FormatUint(uint64(ino), 10) }
func dirKey(ino Ino) string     { return "d" + strconv.FormatUint(uint64(ino), 10) }
func symlinkKey(ino Ino) string { return "s" + strconv.FormatUint(uint64(ino), 10) }
func xattrKey(ino Ino) string   { return "x" + strconv.FormatUint(uint64(ino), 10) }
func openKey(ino Ino) string    { return "o" + strconv.FormatUint(uint64(ino), 10) }
func sessOpenKey(sid uint64) string {
	return "sessopen" + strconv.FormatUint(sid, 10)
}
func chunkKey(ino Ino, chunk uint32) string {
	return "c" + strconv.FormatUint(uint64(ino), 10) + "_" + strconv.FormatUint(uint64(chunk), 10)
}

// parseInoKey parses "<prefix><decimal>" strictly.
func parseInoKey(key, prefix string) (Ino, bool) {
	s, ok := strings.CutPrefix(key, prefix)
	if !ok || s == "" || s[0] < '1' || s[0] > '9' {
		return 0, false
	}
	n, err := strconv.ParseUint(s, 10, 64)
	return Ino(n), err == nil
}

func parseChunkKey(key string) (Ino, uint32, bool) {
	s, ok := strings.CutPrefix(key, "c")
	if !ok {
		return 0, 0, false
	}
	a, b, ok := strings.Cut(s, "_")
	if !ok {
		return 0, 0, false
	}
	ino, err1 := strconv.ParseUint(a, 10, 64)
	idx, err2 := strconv.ParseUint(b, 10, 32)
	if err1 != nil || err2 != nil || ino == 0 || strconv.FormatUint(ino, 10) != a || strconv.FormatUint(idx, 10) != b {
		return 0, 0, false
	}
	return Ino(ino), uint32(idx), true
}

// idAlloc hands out ids from a shared counter, reserving batch at a time.
type idAlloc struct {
	key   string
	batch uint64
	mu    sync.Mutex
	next  uint64 // next id to hand out
	end   uint64 // last reserved id
	// reserved, if set, runs (under mu) after a batch [first, last] is
	// reserved and before any of its ids is handed out.
	reserved func(ctx context.Context, first, last uint64) error
	// handed, if set, runs (under mu) for each id handed out.
	handed func(id uint64)
}

func (a *idAlloc) get(ctx context.Context, e kv.Engine) (uint64, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.next == 0 || a.next > a.end {
		v, err := e.Incr(ctx, a.key, int64(a.batch))
		if err != nil {
			return 0, fmt.Errorf("reserve ids from %s: %w", a.key, err)
		}
		if a.reserved != nil {
			if err := a.reserved(ctx, uint64(v)-a.batch+1, uint64(v)); err != nil {
				return 0, fmt.Errorf("reserve ids from %s: %w", a.key, err)
			}
		}
		a.end = uint64(v)
		a.next = a.end - a.batch + 1
	}
	id := a.next
	a.next++
	if a.handed != nil {
		a.handed(id)
	}
	return id, nil
}

// NewSliceID returns a volume-wide unique slice id (never 0).
func (m *Meta) NewSliceID(ctx context.Context) (uint64, error) {
	return m.slices.get(ctx, m.engine)
}

func (m *Meta) newInode(ctx context.Context) (Ino, error) {
	id, err := m.inodes.get(ctx, m.engine)
	return Ino(id), err
}

// txn wraps a kv.Tx with an attribute cache, so that an operation touching
// the same inode twice (rename within one directory) sees one copy, and
// with the post-commit effects of the operation.
type txn struct {
	tx    kv.Tx
	m     *Meta
	now   time.Time
	attrs map[Ino]*Attr
	dirty []Ino
	fx    effects
}

// effects is work done after a successful commit.
type effects struct {
	inodes int64 // usage delta
	space  int64
	wake   bool // data was queued for deletion
}

func (t *txn) attr(ino Ino) (*Attr, error) {
	if a, ok := t.attrs[ino]; ok {
		if a == nil {
			return nil, syscall.ENOENT
		}
		return a, nil
	}
	b, err := t.tx.Get(inodeKey(ino))
	if err != nil {
		return nil, fmt.Errorf("read inode %d: %w", ino, err)
	}
	if b == nil {
		return nil, syscall.ENOENT
	}
	a, err := decodeAttr(b)
	if err != nil {
		return nil, fmt.Errorf("inode %d: %w", ino, err)
	}
	t.attrs[ino] = &a
	return &a, nil
}

// dir loads a directory's attributes: ENOTDIR for other types, ENOENT for
// a removed directory.
func (t *txn) dir(ino Ino) (*Attr, error) {
	a, err := t.attr(ino)
	if err != nil {
		return nil, err
	}
	if a.Typ != TypeDir {
		return nil, syscall.ENOTDIR
	}
	if a.Nlink == 0 {
		return nil, syscall.ENOENT
	}
	return a, nil
}

func (t *txn) touch(ino Ino) {
	for _, d := range t.dirty {
		if d == ino {
			return
		}
	}
	t.dirty = append(t.dirty, ino)
}

func (t *txn) create(ino Ino, a Attr) {
	t.attrs[ino] = &a
	t.touch(ino)
}

// remove deletes an inode and everything keyed by it except chunk data,
// which the caller queues for deletion. Its xattr bytes leave the usage.
func (t *txn) remove(ino Ino) error {
	x, err := t.tx.HGetAll(xattrKey(ino))
	if err != nil {
		return fmt.Errorf("read xattrs of %d: %w", ino, err)
	}
	t.fx.space -= xattrBytes(x)
	t.attrs[ino] = nil
	t.tx.Delete(inodeKey(ino), xattrKey(ino), symlinkKey(ino), openKey(ino), dirKey(ino))
	return nil
}

func (t *txn) flush() {
	for _, ino := range t.dirty {
		if a := t.attrs[ino]; a != nil {
			t.tx.Set(inodeKey(ino), encodeAttr(a))
		}
	}
}

// dentry reads one entry of directory parent; ENOENT when missing.
func (t *txn) dentry(parent Ino, name string) (uint8, Ino, error) {
	b, err := t.tx.HGet(dirKey(parent), name)
	if err != nil {
		return 0, 0, fmt.Errorf("read entry %d/%q: %w", parent, name, err)
	}
	if b == nil {
		return 0, 0, syscall.ENOENT
	}
	typ, ino, err := decodeDentry(b)
	if err != nil {
		return 0, 0, fmt.Errorf("entry %d/%q: %w", parent, name, err)
	}
	return typ, ino, nil
}

func setTime(sec *int64, nsec *uint32, now time.Time) {
	*sec = now.Unix()
	*nsec = uint32(now.Nanosecond())
}

func (t *txn) mtime(a *Attr) {
	setTime(&a.Mtime, &a.Mtimensec, t.now)
	setTime(&a.Ctime, &a.Ctimensec, t.now)
}

func (t *txn) ctime(a *Attr) { setTime(&a.Ctime, &a.Ctimensec, t.now) }

// update runs fn in one engine transaction (re-running it on conflicts)
// and then applies its effects. fn must only touch t.
func (m *Meta) update(ctx context.Context, fn func(t *txn) error) error {
	if m.opts.ReadOnly {
		return syscall.EROFS
	}
	var t *txn
	var err error
	for attempt := 0; ; attempt++ {
		err = m.engine.Update(ctx, func(tx kv.Tx) error {
			t = &txn{tx: tx, m: m, now: time.Now(), attrs: make(map[Ino]*Attr)}
			if err := fn(t); err != nil {
				return err
			}
			t.flush()
			return nil
		})
		if !errors.Is(err, kv.ErrConflict) || attempt >= 5 {
			break
		}
		// The engine already retried; back off a little before trying again.
		d := time.Duration(rand.Int64N(int64(time.Millisecond) << attempt))
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(d):
		}
	}
	if err != nil {
		return err
	}
	m.apply(ctx, t.fx)
	return nil
}

func (m *Meta) view(ctx context.Context, fn func(t *txn) error) error {
	return m.engine.View(ctx, func(tx kv.Tx) error {
		t := &txn{tx: tx, m: m, now: time.Now(), attrs: make(map[Ino]*Attr)}
		return fn(t)
	})
}

// apply performs post-commit effects. Usage counters are best effort: a
// failure is logged, never returned, as the change itself is committed.
func (m *Meta) apply(ctx context.Context, fx effects) {
	if fx.inodes != 0 {
		if _, err := m.engine.Incr(ctx, keyUsedInodes, fx.inodes); err != nil {
			m.log.Warn("meta: update inode usage", "err", err)
		}
	}
	if fx.space != 0 {
		if _, err := m.engine.Incr(ctx, keyUsedSpace, fx.space); err != nil {
			m.log.Warn("meta: update space usage", "err", err)
		}
	}
	if fx.wake {
		m.wakeJobs()
	}
}

// usage is the space a file of size bytes is accounted for.
func usage(size uint64) int64 { return int64((size + 4095) &^ 4095) }

func validName(name string) error {
	switch {
	case name == "" || strings.ContainsAny(name, "/\x00"):
		return syscall.EINVAL
	case len(name) > 255:
		return syscall.ENAMETOOLONG
	}
	return nil
}
