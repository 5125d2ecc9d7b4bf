package vfs

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"sync"
	"syscall"

	"github.com/skiff-fs/skiff/fsclient/chunk"
	"github.com/skiff-fs/skiff/fsclient/meta"
)

// openFile is the state of one inode open here: its reader and writer,
// shared by every handle of the inode, and what this client knows of its
// size beyond what meta says.
//
// Lock order: VFS.mu → (never held while taking these); openFile.rw →
// openFile.appendMu → openFile.mu.
type openFile struct {
	ino     meta.Ino // volume inode
	refs    int      // handles (guarded by VFS.mu)
	writers int      // of which open for writing (guarded by VFS.mu)

	// rw: reads and writes share it; truncate, fallocate and the end of
	// the last handle take it exclusively.
	rw       sync.RWMutex
	appendMu sync.Mutex // serialises O_APPEND writes: offset, then write
	r        *chunk.FileReader

	mu struct {
		sync.Mutex
		w        *chunk.FileWriter // created by the first write
		size     uint64            // file size including unflushed writes
		mtime    int64             // meta's mtime (ns) when size was learnt
		mode     uint16            // last known permission bits
		writes   uint64            // writes so far
		flushed  uint64            // writes covered by the last good flush
		posix    map[uint64]bool   // lock owners holding POSIX locks
		flock    map[uint64]bool   // lock owners holding flocks
		released bool

		ctime   int64       // meta's ctime (ns) in the attributes seen last
		capsGen uint64      // moves whenever caps is dropped
		caps    *capsAnswer // meta's last answer for capsXattr, or nil
	}
}

func mtimeNs(a *Attr) int64 { return a.Mtime*1e9 + int64(a.Mtimensec) }
func ctimeNs(a *Attr) int64 { return a.Ctime*1e9 + int64(a.Ctimensec) }

// saw reconciles attributes just read from meta. While writes are not
// flushed, the size is at least what this client has written. Otherwise a
// size or mtime that differs from what we knew means another client
// changed the file: cached slice views are dropped.
func (of *openFile) saw(a *Attr) {
	of.mu.Lock()
	defer of.mu.Unlock()
	of.mu.mode = a.Mode
	if ct := ctimeNs(a); ct != of.mu.ctime {
		// An xattr, the owner or the mode may have changed.
		of.dropCapsLocked()
		of.mu.ctime = ct
	}
	if a.Typ != meta.TypeFile {
		return
	}
	if of.mu.writes != of.mu.flushed {
		a.Size = max(a.Size, of.mu.size)
		return
	}
	if a.Size != of.mu.size || mtimeNs(a) != of.mu.mtime {
		of.r.InvalidateAll()
		of.mu.size, of.mu.mtime = a.Size, mtimeNs(a)
	}
}

func (of *openFile) dirty() bool {
	of.mu.Lock()
	defer of.mu.Unlock()
	return of.mu.writes != of.mu.flushed
}

func (of *openFile) size() uint64 {
	of.mu.Lock()
	defer of.mu.Unlock()
	return of.mu.size
}

// flush commits every write made so far.
func (of *openFile) flush(ctx context.Context) error {
	of.mu.Lock()
	w, gen := of.mu.w, of.mu.writes
	of.mu.Unlock()
	if w == nil {
		return nil
	}
	if err := w.Flush(ctx); err != nil {
		return err
	}
	of.mu.Lock()
	of.mu.flushed = max(of.mu.flushed, gen)
	of.mu.Unlock()
	return nil
}

func (of *openFile) writer(v *VFS) *chunk.FileWriter {
	of.mu.Lock()
	defer of.mu.Unlock()
	if of.mu.w == nil {
		of.mu.w = v.cs.NewWriter(uint64(of.ino), v.cm)
	}
	return of.mu.w
}

// handle is one open file description.
type handle struct {
	fh     uint64
	ino    meta.Ino // volume inode
	of     *openFile
	flags  uint32
	append bool
	write  bool
	cache  openCache
}

func (v *VFS) file(ino meta.Ino) *openFile {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.mu.files[ino]
}

func (v *VFS) handle(fh uint64) *handle {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.mu.handles[fh]
}

// newHandle registers a handle of ino opened with flags, whose meta Open
// (or Create) succeeded and returned a.
func (v *VFS) newHandle(ino meta.Ino, flags uint32, a *Attr, oc openCache) *handle {
	v.mu.Lock()
	of := v.mu.files[ino]
	if of == nil {
		of = &openFile{ino: ino, r: v.cs.NewReader(uint64(ino), v.cm)}
		of.mu.size, of.mu.mtime, of.mu.mode, of.mu.ctime = a.Size, mtimeNs(a), a.Mode, ctimeNs(a)
		v.mu.files[ino] = of
	}
	of.refs++
	v.mu.nextFh++
	h := &handle{fh: v.mu.nextFh, ino: ino, of: of, flags: flags,
		append: flags&syscall.O_APPEND != 0, write: flags&syscall.O_ACCMODE != syscall.O_RDONLY, cache: oc}
	if h.write {
		of.writers++
	}
	v.mu.handles[h.fh] = h
	v.mu.Unlock()
	of.saw(a)
	if h.write && v.img != nil {
		// The image would go stale with the first write.
		v.img.store.Remove(uint64(ino))
	}
	return h
}

// Open opens a regular file and returns a handle for Read, Write, Flush,
// Fsync and Release. With O_TRUNC the file is truncated.
func (v *VFS) Open(ctx context.Context, c Caller, ino Ino, flags uint32) (uint64, Attr, error) {
	if v.cfg.ReadOnly && (flags&syscall.O_ACCMODE != syscall.O_RDONLY || flags&syscall.O_TRUNC != 0) {
		return 0, Attr{}, syscall.EROFS
	}
	real := v.in(ino)
	a, err := v.m.Open(ctx, c, real, flags)
	if err != nil {
		return 0, Attr{}, err
	}
	if a.Typ != meta.TypeFile {
		// The kernel opens only regular files through FUSE; refuse the rest.
		_ = v.m.Release(ctx, real)
		if a.Typ == meta.TypeDir {
			return 0, Attr{}, syscall.EISDIR
		}
		return 0, Attr{}, syscall.EINVAL
	}
	// The kernel keeps its pages of the file when meta shows the file
	// as it was at an earlier open here (pagecache.go); not while this
	// client holds unflushed writes to it, nor when truncating.
	oc := openCache{stamp: stampOf(&a), valid: true}
	if of := v.file(real); flags&syscall.O_TRUNC == 0 && (of == nil || !of.dirty()) {
		oc.keep = v.pc.keep(real, oc.stamp)
	}
	h := v.newHandle(real, flags, &a, oc)
	if flags&syscall.O_TRUNC != 0 && a.Size > 0 {
		if err := v.truncate(ctx, c, real, h, 0); err != nil {
			v.Release(ctx, h.fh)
			return 0, Attr{}, err
		}
		a.Size = 0
	}
	return h.fh, a, nil
}

// Create creates and opens a regular file; EEXIST when name exists.
func (v *VFS) Create(ctx context.Context, c Caller, parent Ino, name string, mode, flags uint32) (Ino, uint64, Attr, error) {
	if err := v.roErr(); err != nil {
		return 0, 0, Attr{}, err
	}
	ino, a, err := v.m.Create(ctx, c, v.in(parent), name, uint16(mode&0o7777), flags)
	if err != nil {
		return 0, 0, Attr{}, err
	}
	h := v.newHandle(ino, flags, &a, openCache{})
	return v.out(ino), h.fh, a, nil
}

// Read reads len(p) bytes at off through handle fh. It returns fewer at
// the end of the file. Unflushed writes to the file are flushed first, so
// a reader sees this client's writes.
func (v *VFS) Read(ctx context.Context, fh uint64, off int64, p []byte) (int, error) {
	h := v.handle(fh)
	if h == nil {
		return 0, syscall.EBADF
	}
	if off < 0 {
		return 0, syscall.EINVAL
	}
	of := h.of
	of.rw.RLock()
	defer of.rw.RUnlock()
	if of.dirty() {
		if err := of.flush(ctx); err != nil {
			return 0, err
		}
	}
	n, err := of.r.ReadAt(ctx, p, off, of.size())
	if errors.Is(err, chunk.ErrBlockMissing) {
		// The cached slice map may predate a compaction (here or by
		// another client) whose old slices were freed meanwhile: reload
		// it once. A block still missing then is data loss.
		of.r.InvalidateAll()
		n, err = of.r.ReadAt(ctx, p, off, of.size())
	}
	if err == io.EOF {
		err = nil
	}
	return n, err
}

// Write writes p at off through handle fh (at the end of the file for
// O_APPEND handles). The data is committed by Flush, Fsync or Release. A
// write by a non-root caller clears setuid, and setgid when group-exec is
// set, as Linux does.
func (v *VFS) Write(ctx context.Context, c Caller, fh uint64, off int64, p []byte) (int, error) {
	h := v.handle(fh)
	if h == nil {
		return 0, syscall.EBADF
	}
	if v.cfg.ReadOnly {
		return 0, syscall.EROFS
	}
	if off < 0 {
		return 0, syscall.EINVAL
	}
	of := h.of
	of.rw.RLock()
	defer of.rw.RUnlock()
	if c.Uid != 0 {
		if err := v.killPriv(ctx, of); err != nil {
			return 0, err
		}
	}
	w := of.writer(v)
	if h.append {
		of.appendMu.Lock()
		defer of.appendMu.Unlock()
		off = int64(of.size())
	}
	if uint64(off)+uint64(len(p)) > maxFileSize {
		return 0, syscall.EFBIG
	}
	n, err := w.WriteAt(ctx, p, off)
	if n > 0 {
		of.mu.Lock()
		of.mu.writes++
		of.mu.size = max(of.mu.size, uint64(off)+uint64(n))
		of.mu.Unlock()
	}
	return n, err
}

// maxFileSize is the largest file meta accepts (64 MiB chunks, 2^32 of them).
const maxFileSize = uint64(64<<20) << 32

// killPriv clears setuid/setgid of a file written by a non-root caller.
func (v *VFS) killPriv(ctx context.Context, of *openFile) error {
	of.mu.Lock()
	mode := of.mu.mode
	of.mu.Unlock()
	if mode&0o6000 == 0 {
		return nil
	}
	a, err := v.m.GetAttr(ctx, of.ino)
	if err != nil {
		return err
	}
	nm := a.Mode &^ 0o4000
	if a.Mode&0o010 != 0 {
		nm &^= 0o2000
	}
	if nm != a.Mode {
		if a, err = v.m.SetAttr(ctx, meta.RootCaller(), of.ino, meta.SetMode, Attr{Mode: nm}); err != nil {
			return err
		}
	}
	of.mu.Lock()
	of.mu.mode = a.Mode
	of.dropCapsLocked()
	of.mu.Unlock()
	return nil
}

// Flush commits the writes of the file (close(2) of one descriptor) and
// drops the POSIX locks lockOwner holds on it.
func (v *VFS) Flush(ctx context.Context, fh uint64, lockOwner uint64) error {
	h := v.handle(fh)
	if h == nil {
		return syscall.EBADF
	}
	err := h.of.flush(ctx)
	if lerr := v.unlockPosix(ctx, h.of, lockOwner); err == nil {
		err = lerr
	}
	return err
}

// Fsync commits the writes of the file.
func (v *VFS) Fsync(ctx context.Context, fh uint64) error {
	h := v.handle(fh)
	if h == nil {
		return syscall.EBADF
	}
	return h.of.flush(ctx)
}

// Release closes handle fh. flockOwner, if not 0, is the owner whose flock
// the handle held. The last handle of an inode flushes and closes its
// writer and tells meta (which frees an unlinked file's data). Errors are
// logged: nobody waits for them.
func (v *VFS) Release(ctx context.Context, fh uint64) {
	v.ReleaseLocks(ctx, fh, 0)
}

// ReleaseLocks is Release that also drops the flock of flockOwner (0: none).
func (v *VFS) ReleaseLocks(ctx context.Context, fh uint64, flockOwner uint64) {
	v.mu.Lock()
	h := v.mu.handles[fh]
	if h == nil {
		v.mu.Unlock()
		return
	}
	delete(v.mu.handles, fh)
	if h.cache.told {
		v.pc.record(h.ino, h.cache.stamp)
	}
	of := h.of
	of.refs--
	if h.write {
		of.writers--
	}
	last := of.refs == 0
	if last {
		delete(v.mu.files, h.ino)
	}
	v.mu.Unlock()
	if flockOwner != 0 {
		if err := v.unlockFlock(ctx, of, flockOwner); err != nil {
			v.log.Warn("vfs: release flock", "ino", h.ino, "err", err)
		}
	}
	if last {
		of.rw.Lock()
		of.mu.Lock()
		w := of.mu.w
		of.mu.w = nil
		of.mu.released = true
		of.mu.Unlock()
		if w != nil {
			if err := w.Close(ctx); err != nil {
				v.log.Error("vfs: data written to a file was lost when it was closed", "ino", h.ino, "err", err)
			}
		}
		of.r.Close()
		of.rw.Unlock()
	}
	if err := v.m.Release(ctx, h.ino); err != nil && !errors.Is(err, syscall.EBADF) {
		v.log.Warn("vfs: release", "ino", h.ino, "err", err)
	}
	if last && h.cache.valid {
		// A file read here may now be wholly cached: worth an image. (A
		// file written here has moved on from the stamp: never an image's.)
		st := h.cache.stamp
		st.size = of.size()
		v.wantImage(h.ino, st)
	}
}

// truncate sets a file's size. Through a handle open for writing no write
// permission is needed (ftruncate of a file created read-only).
func (v *VFS) truncate(ctx context.Context, c Caller, ino meta.Ino, h *handle, size uint64) error {
	of := v.file(ino)
	if of != nil {
		of.rw.Lock()
		defer of.rw.Unlock()
		if err := of.flush(ctx); err != nil {
			return err
		}
	}
	a, err := v.m.Truncate(ctx, c, ino, size)
	if errors.Is(err, syscall.EACCES) && h != nil && h.write && h.ino == ino {
		if a, err = v.m.Truncate(ctx, meta.RootCaller(), ino, size); err == nil && c.Uid != 0 && a.Mode&0o6000 != 0 {
			// Root skips the clearing meta does for others: do it here.
			nm := a.Mode &^ 0o4000
			if a.Mode&0o010 != 0 {
				nm &^= 0o2000
			}
			a, err = v.m.SetAttr(ctx, meta.RootCaller(), ino, meta.SetMode, Attr{Mode: nm})
		}
	}
	if err != nil {
		return err
	}
	if of != nil {
		of.mu.Lock()
		of.mu.size, of.mu.mtime, of.mu.mode = a.Size, mtimeNs(&a), a.Mode
		of.dropCapsLocked()
		of.mu.Unlock()
		of.r.InvalidateAll()
	}
	return nil
}

// Fallocate modes (Linux values).
const (
	FallocKeepSize  = meta.FallocKeepSize
	FallocPunchHole = meta.FallocPunchHole
)

// Fallocate allocates (mode 0: the size grows to off+length),
// FallocKeepSize (nothing to do: blocks are allocated on write) or
// FallocPunchHole|FallocKeepSize (the range reads as zeros).
func (v *VFS) Fallocate(ctx context.Context, c Caller, fh uint64, mode uint32, off, length uint64) error {
	if err := v.roErr(); err != nil {
		return err
	}
	h := v.handle(fh)
	if h == nil {
		return syscall.EBADF
	}
	if !h.write {
		return syscall.EBADF
	}
	if mode > 0xff {
		return syscall.EOPNOTSUPP
	}
	of := h.of
	of.rw.Lock()
	defer of.rw.Unlock()
	if err := of.flush(ctx); err != nil {
		return err
	}
	err := v.m.Fallocate(ctx, c, h.ino, uint8(mode), off, length)
	if errors.Is(err, syscall.EACCES) {
		err = v.m.Fallocate(ctx, meta.RootCaller(), h.ino, uint8(mode), off, length)
	}
	if err != nil {
		return err
	}
	a, err := v.m.GetAttr(ctx, h.ino)
	if err != nil {
		return err
	}
	of.mu.Lock()
	of.mu.size, of.mu.mtime = a.Size, mtimeNs(&a)
	of.dropCapsLocked()
	of.mu.Unlock()
	of.r.InvalidateAll()
	return nil
}

// CopyFileRange copies length bytes from fhIn at offIn to fhOut at offOut
// through the chunk layer and returns the bytes copied (fewer at the end
// of the input).
func (v *VFS) CopyFileRange(ctx context.Context, c Caller, fhIn uint64, offIn int64, fhOut uint64, offOut int64, length uint64) (uint64, error) {
	hin, hout := v.handle(fhIn), v.handle(fhOut)
	if hin == nil || hout == nil || !hout.write || hout.append {
		return 0, syscall.EBADF
	}
	if offIn < 0 || offOut < 0 {
		return 0, syscall.EINVAL
	}
	if hin.ino == hout.ino && offIn < offOut+int64(length) && offOut < offIn+int64(length) {
		return 0, syscall.EINVAL // overlapping ranges of one file
	}
	buf := make([]byte, min(length, 4<<20))
	var done uint64
	for done < length {
		p := buf[:min(uint64(len(buf)), length-done)]
		n, err := v.Read(ctx, fhIn, offIn+int64(done), p)
		if err != nil {
			return done, err
		}
		if n == 0 {
			break
		}
		m, err := v.Write(ctx, c, fhOut, offOut+int64(done), p[:n])
		done += uint64(m)
		if err != nil {
			return done, err
		}
		if n < len(p) {
			break
		}
	}
	return done, nil
}

// Lseek whence values for data and holes.
const (
	SeekData = 3
	SeekHole = 4
)

// Lseek answers SEEK_DATA and SEEK_HOLE: every byte below the size
// counts as data (holes are not tracked), so the only hole is at the end.
func (v *VFS) Lseek(ctx context.Context, fh uint64, off uint64, whence uint32) (uint64, error) {
	h := v.handle(fh)
	if h == nil {
		return 0, syscall.EBADF
	}
	a, err := v.GetAttr(ctx, v.out(h.ino))
	if err != nil {
		return 0, err
	}
	if off >= a.Size {
		return 0, syscall.ENXIO
	}
	switch whence {
	case SeekData:
		return off, nil
	case SeekHole:
		return a.Size, nil
	}
	return 0, syscall.EINVAL
}

// FlushAll commits the writes of every open file (on shutdown, before
// unmounting). It returns the first error.
func (v *VFS) FlushAll(ctx context.Context) error {
	v.mu.Lock()
	files := make([]*openFile, 0, len(v.mu.files))
	for _, of := range v.mu.files {
		files = append(files, of)
	}
	v.mu.Unlock()
	var first error
	for _, of := range files {
		if err := of.flush(ctx); err != nil {
			v.log.Error("vfs: flush at shutdown failed", "ino", of.ino, "err", err)
			if first == nil {
				first = err
			}
		}
	}
	return first
}

// Close flushes and closes every open file, as if each handle were
// released (after the kernel connection is gone), and stops building file
// images. The volume stays open.
func (v *VFS) Close(ctx context.Context) error {
	v.stopImages()
	err := v.FlushAll(ctx)
	v.mu.Lock()
	fhs := make([]uint64, 0, len(v.mu.handles))
	for fh := range v.mu.handles {
		fhs = append(fhs, fh)
	}
	clear(v.mu.dirs)
	v.mu.Unlock()
	for _, fh := range fhs {
		v.Release(ctx, fh)
	}
	return err
}

// Tmpfile creates an open regular file in no directory (O_TMPFILE): it is
// created under a hidden name in parent and unlinked at once.
func (v *VFS) Tmpfile(ctx context.Context, c Caller, parent Ino, mode, flags uint32) (Ino, uint64, Attr, error) {
	name := fmt.Sprintf(".skiff-tmpfile-%x", rand.Uint64())
	ino, fh, _, err := v.Create(ctx, c, parent, name, mode, flags)
	if err != nil {
		return 0, 0, Attr{}, err
	}
	if err := v.m.Unlink(ctx, meta.RootCaller(), v.in(parent), name); err != nil {
		v.Release(ctx, fh)
		return 0, 0, Attr{}, err
	}
	a, err := v.GetAttr(ctx, ino)
	if err != nil {
		v.Release(ctx, fh)
		return 0, 0, Attr{}, err
	}
	return ino, fh, a, nil
}
