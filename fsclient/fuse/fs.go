package fuse

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"syscall"
	"time"

	gofuse "github.com/hanwen/go-fuse/v2/fuse"

	"github.com/skiff-fs/skiff/fsclient/vfs"
)

// blksize is st_blksize, the I/O size tools should use: one FUSE request.
const blksize = 1 << 20

// releaseFlockUnlock is FUSE_RELEASE_FLOCK_UNLOCK in ReleaseIn.ReleaseFlags.
const releaseFlockUnlock = 1 << 1

// fileSystem maps go-fuse's raw API onto a vfs.VFS.
type fileSystem struct {
	// The embedded default answers ENOSYS for the few operations skiff
	// does not offer: Statx (the kernel falls back to GETATTR) and Writev
	// (go-fuse then calls Write).
	gofuse.RawFileSystem
	v      *vfs.VFS
	log    *slog.Logger
	groups *groupCache
	pt     passthrough // passthrough.go
	// kernelChecks: the connection was mounted with
	// default_permissions, so the kernel checked the mode bits of every
	// request before sending it (vfs.Caller.KernelChecked).
	kernelChecks bool
}

var _ gofuse.RawFileSystem = (*fileSystem)(nil)

func newFileSystem(v *vfs.VFS, log *slog.Logger, kernelChecks bool) *fileSystem {
	fs := &fileSystem{RawFileSystem: gofuse.NewDefaultRawFileSystem(), v: v, log: log, groups: newGroupCache(), kernelChecks: kernelChecks}
	fs.pt.inodes = make(map[uint64]*ptInode)
	fs.pt.fhs = make(map[uint64]ptHandle)
	fs.pt.released = make(chan struct{})
	return fs
}

// reqCtx is the context of one request: it ends when the kernel
// interrupts the request (go-fuse closes the cancel channel).
type reqCtx struct{ cancel <-chan struct{} }

func (reqCtx) Deadline() (time.Time, bool) { return time.Time{}, false }
func (c reqCtx) Done() <-chan struct{}     { return c.cancel }
func (reqCtx) Value(any) any               { return nil }
func (c reqCtx) Err() error {
	select {
	case <-c.cancel:
		return context.Canceled
	default:
		return nil
	}
}

// ctxOf is the context of an operation. Only blocking lock requests end
// at a FUSE interrupt (the kernel restarts them, so callers do not see
// EINTR). Every other operation runs to its end: go-fuse notes that Go
// programs get interrupts all the time (runtime preemption signals), an
// EINTR from rename(2) or read(2) of a file surprises most programs, and
// a process killed by a fatal signal stops waiting anyway.
func ctxOf(cancel <-chan struct{}) context.Context { return context.Background() }

// interruptible is the context of a request that may wait indefinitely.
func interruptible(cancel <-chan struct{}) context.Context { return reqCtx{cancel} }

func (fs *fileSystem) caller(h *gofuse.InHeader, umask uint32) vfs.Caller {
	c := fs.groups.caller(&h.Caller, umask)
	c.KernelChecked = fs.kernelChecks
	return c
}

func (fs *fileSystem) st(op string, ino uint64, err error) gofuse.Status {
	return status(fs.log, op, ino, err)
}

func fillAttr(ino vfs.Ino, a *vfs.Attr, out *gofuse.Attr) {
	out.Ino = uint64(ino)
	out.Size = a.Size
	out.Blocks = (a.Size + 511) / 512
	out.Atime, out.Atimensec = uint64(a.Atime), a.Atimensec
	out.Mtime, out.Mtimensec = uint64(a.Mtime), a.Mtimensec
	out.Ctime, out.Ctimensec = uint64(a.Ctime), a.Ctimensec
	out.Mode = a.SMode()
	out.Nlink = a.Nlink
	out.Uid, out.Gid = a.Uid, a.Gid
	out.Rdev = a.Rdev
	out.Blksize = blksize
}

func (fs *fileSystem) entry(ino vfs.Ino, a *vfs.Attr, out *gofuse.EntryOut) {
	out.NodeId = uint64(ino)
	out.Generation = 1
	out.SetEntryTimeout(fs.v.EntryTimeout(a))
	out.SetAttrTimeout(fs.v.AttrTimeout())
	fillAttr(ino, a, &out.Attr)
	// The kernel now holds one more reference to ino until it forgets it.
	fs.v.Referenced(context.Background(), ino, a)
}

func (fs *fileSystem) String() string { return "skiff" }

func (fs *fileSystem) SetDebug(bool) {}

func (fs *fileSystem) Init(s *gofuse.Server) {
	fs.pt.mu.Lock()
	fs.pt.srv = s
	fs.pt.mu.Unlock()
}

func (fs *fileSystem) OnUnmount() {}

func (fs *fileSystem) Lookup(cancel <-chan struct{}, h *gofuse.InHeader, name string, out *gofuse.EntryOut) gofuse.Status {
	ino, a, err := fs.v.Lookup(ctxOf(cancel), fs.caller(h, 0), vfs.Ino(h.NodeId), name)
	if err != nil {
		if errors.Is(err, syscall.ENOENT) {
			return gofuse.ENOENT // not cached: another client may create it
		}
		return fs.st("lookup", h.NodeId, err)
	}
	fs.entry(ino, &a, out)
	return gofuse.OK
}

// Forget: skiff keeps no per-inode state for the kernel's lookups
// (inode numbers are never reused). The kernel may have dropped the
// inode's pages, so vfs forgets what it knew of them.
func (fs *fileSystem) Forget(nodeid, nlookup uint64) {
	fs.v.ForgetCache(vfs.Ino(nodeid))
	fs.v.Forget(context.Background(), vfs.Ino(nodeid), nlookup)
}

func (fs *fileSystem) GetAttr(cancel <-chan struct{}, in *gofuse.GetAttrIn, out *gofuse.AttrOut) gofuse.Status {
	a, err := fs.v.GetAttr(ctxOf(cancel), vfs.Ino(in.NodeId))
	if err != nil {
		return fs.st("getattr", in.NodeId, err)
	}
	out.SetTimeout(fs.v.AttrTimeout())
	fillAttr(vfs.Ino(in.NodeId), &a, &out.Attr)
	return gofuse.OK
}

func (fs *fileSystem) SetAttr(cancel <-chan struct{}, in *gofuse.SetAttrIn, out *gofuse.AttrOut) gofuse.Status {
	set := in.Valid & (gofuse.FATTR_MODE | gofuse.FATTR_UID | gofuse.FATTR_GID | gofuse.FATTR_SIZE |
		gofuse.FATTR_ATIME | gofuse.FATTR_MTIME | gofuse.FATTR_ATIME_NOW | gofuse.FATTR_MTIME_NOW | gofuse.FATTR_CTIME)
	// "Now" arrives as ATIME|ATIME_NOW: it needs only write permission,
	// an explicit time needs ownership, so pass "now" alone.
	if set&gofuse.FATTR_ATIME_NOW != 0 {
		set &^= gofuse.FATTR_ATIME
	}
	if set&gofuse.FATTR_MTIME_NOW != 0 {
		set &^= gofuse.FATTR_MTIME
	}
	a := vfs.Attr{
		Mode: uint16(in.Mode & 0o7777), Uid: in.Uid, Gid: in.Gid,
		Atime: int64(in.Atime), Atimensec: in.Atimensec,
		Mtime: int64(in.Mtime), Mtimensec: in.Mtimensec,
		Ctime: int64(in.Ctime), Ctimensec: in.Ctimensec,
	}
	var fh uint64
	if in.Valid&gofuse.FATTR_FH != 0 {
		fh = in.Fh
	}
	r, err := fs.v.SetAttr(ctxOf(cancel), fs.caller(&in.InHeader, 0), vfs.Ino(in.NodeId), fh, set, in.Size, a)
	if err != nil {
		return fs.st("setattr", in.NodeId, err)
	}
	out.SetTimeout(fs.v.AttrTimeout())
	fillAttr(vfs.Ino(in.NodeId), &r, &out.Attr)
	return gofuse.OK
}

func (fs *fileSystem) Mknod(cancel <-chan struct{}, in *gofuse.MknodIn, name string, out *gofuse.EntryOut) gofuse.Status {
	ino, a, err := fs.v.Mknod(ctxOf(cancel), fs.caller(&in.InHeader, in.Umask), vfs.Ino(in.NodeId), name, in.Mode, in.Rdev)
	if err != nil {
		return fs.st("mknod", in.NodeId, err)
	}
	fs.entry(ino, &a, out)
	return gofuse.OK
}

func (fs *fileSystem) Mkdir(cancel <-chan struct{}, in *gofuse.MkdirIn, name string, out *gofuse.EntryOut) gofuse.Status {
	ino, a, err := fs.v.Mkdir(ctxOf(cancel), fs.caller(&in.InHeader, in.Umask), vfs.Ino(in.NodeId), name, in.Mode)
	if err != nil {
		return fs.st("mkdir", in.NodeId, err)
	}
	fs.entry(ino, &a, out)
	return gofuse.OK
}

func (fs *fileSystem) Unlink(cancel <-chan struct{}, h *gofuse.InHeader, name string) gofuse.Status {
	return fs.st("unlink", h.NodeId, fs.v.Unlink(ctxOf(cancel), fs.caller(h, 0), vfs.Ino(h.NodeId), name))
}

func (fs *fileSystem) Rmdir(cancel <-chan struct{}, h *gofuse.InHeader, name string) gofuse.Status {
	return fs.st("rmdir", h.NodeId, fs.v.Rmdir(ctxOf(cancel), fs.caller(h, 0), vfs.Ino(h.NodeId), name))
}

func (fs *fileSystem) Rename(cancel <-chan struct{}, in *gofuse.RenameIn, oldName, newName string) gofuse.Status {
	err := fs.v.Rename(ctxOf(cancel), fs.caller(&in.InHeader, 0), vfs.Ino(in.NodeId), oldName, vfs.Ino(in.Newdir), newName, in.Flags)
	return fs.st("rename", in.NodeId, err)
}

func (fs *fileSystem) Link(cancel <-chan struct{}, in *gofuse.LinkIn, name string, out *gofuse.EntryOut) gofuse.Status {
	a, err := fs.v.Link(ctxOf(cancel), fs.caller(&in.InHeader, 0), vfs.Ino(in.Oldnodeid), vfs.Ino(in.NodeId), name)
	if err != nil {
		return fs.st("link", in.Oldnodeid, err)
	}
	fs.entry(vfs.Ino(in.Oldnodeid), &a, out)
	return gofuse.OK
}

func (fs *fileSystem) Symlink(cancel <-chan struct{}, h *gofuse.InHeader, target, name string, out *gofuse.EntryOut) gofuse.Status {
	ino, a, err := fs.v.Symlink(ctxOf(cancel), fs.caller(h, 0), vfs.Ino(h.NodeId), name, target)
	if err != nil {
		return fs.st("symlink", h.NodeId, err)
	}
	fs.entry(ino, &a, out)
	return gofuse.OK
}

func (fs *fileSystem) Readlink(cancel <-chan struct{}, h *gofuse.InHeader) ([]byte, gofuse.Status) {
	t, err := fs.v.Readlink(ctxOf(cancel), vfs.Ino(h.NodeId))
	if err != nil {
		return nil, fs.st("readlink", h.NodeId, err)
	}
	return []byte(t), gofuse.OK
}

func (fs *fileSystem) Access(cancel <-chan struct{}, in *gofuse.AccessIn) gofuse.Status {
	return fs.st("access", in.NodeId, fs.v.Access(ctxOf(cancel), fs.caller(&in.InHeader, 0), vfs.Ino(in.NodeId), in.Mask))
}

func (fs *fileSystem) GetXAttr(cancel <-chan struct{}, h *gofuse.InHeader, name string, dest []byte) (uint32, gofuse.Status) {
	val, err := fs.v.GetXattr(ctxOf(cancel), fs.caller(h, 0), vfs.Ino(h.NodeId), name)
	if err != nil {
		return 0, fs.st("getxattr", h.NodeId, err)
	}
	if len(dest) == 0 {
		return uint32(len(val)), gofuse.OK
	}
	if len(dest) < len(val) {
		return uint32(len(val)), gofuse.ERANGE
	}
	return uint32(copy(dest, val)), gofuse.OK
}

func (fs *fileSystem) ListXAttr(cancel <-chan struct{}, h *gofuse.InHeader, dest []byte) (uint32, gofuse.Status) {
	names, err := fs.v.ListXattr(ctxOf(cancel), fs.caller(h, 0), vfs.Ino(h.NodeId))
	if err != nil {
		return 0, fs.st("listxattr", h.NodeId, err)
	}
	var b []byte
	for _, n := range names {
		b = append(append(b, n...), 0)
	}
	if len(dest) == 0 {
		return uint32(len(b)), gofuse.OK
	}
	if len(dest) < len(b) {
		return uint32(len(b)), gofuse.ERANGE
	}
	return uint32(copy(dest, b)), gofuse.OK
}

func (fs *fileSystem) SetXAttr(cancel <-chan struct{}, in *gofuse.SetXAttrIn, name string, data []byte) gofuse.Status {
	err := fs.v.SetXattr(ctxOf(cancel), fs.caller(&in.InHeader, 0), vfs.Ino(in.NodeId), name, data, in.Flags)
	return fs.st("setxattr", in.NodeId, err)
}

func (fs *fileSystem) RemoveXAttr(cancel <-chan struct{}, h *gofuse.InHeader, name string) gofuse.Status {
	return fs.st("removexattr", h.NodeId, fs.v.RemoveXattr(ctxOf(cancel), fs.caller(h, 0), vfs.Ino(h.NodeId), name))
}

func (fs *fileSystem) Create(cancel <-chan struct{}, in *gofuse.CreateIn, name string, out *gofuse.CreateOut) gofuse.Status {
	ctx := ctxOf(cancel)
	c := fs.caller(&in.InHeader, in.Umask)
	ino, fh, a, err := fs.v.Create(ctx, c, vfs.Ino(in.NodeId), name, in.Mode, in.Flags)
	if errors.Is(err, syscall.EEXIST) && in.Flags&syscall.O_EXCL == 0 {
		// Created meanwhile (by another client): open it, as open(2) does.
		ino, _, err = fs.v.Lookup(ctx, c, vfs.Ino(in.NodeId), name)
		if err == nil {
			if !fs.ptBegin(uint64(ino)) {
				return gofuse.Status(syscall.ETXTBSY)
			}
			if fh, a, err = fs.v.Open(ctx, c, ino, in.Flags); err != nil {
				fs.ptAbort(uint64(ino))
			}
		}
	}
	if err != nil {
		return fs.st("create", in.NodeId, err)
	}
	if !fs.openCreated(uint64(ino), fh, &out.OpenOut) {
		return gofuse.Status(syscall.ETXTBSY)
	}
	fs.entry(ino, &a, &out.EntryOut)
	out.Fh = fh
	return gofuse.OK
}

// openCreated notes a handle made by CREATE or TMPFILE (never passthrough;
// one that opened an existing file may meet passthrough readers). It
// reports false, having released fh, when the open must fail (ETXTBSY).
func (fs *fileSystem) openCreated(node, fh uint64, out *gofuse.OpenOut) bool {
	mode, id := fs.ptOpen(node, fh, true, nil)
	if mode == modeBusy {
		fs.v.Release(context.Background(), fh)
		return false
	}
	ptFlags(out, mode, id)
	return true
}

func (fs *fileSystem) Tmpfile(cancel <-chan struct{}, in *gofuse.CreateIn, out *gofuse.CreateOut) gofuse.Status {
	ino, fh, a, err := fs.v.Tmpfile(ctxOf(cancel), fs.caller(&in.InHeader, in.Umask), vfs.Ino(in.NodeId), in.Mode, in.Flags)
	if err != nil {
		return fs.st("tmpfile", in.NodeId, err)
	}
	if !fs.openCreated(uint64(ino), fh, &out.OpenOut) {
		return gofuse.Status(syscall.ETXTBSY)
	}
	fs.entry(ino, &a, &out.EntryOut)
	out.Fh = fh
	return gofuse.OK
}

func (fs *fileSystem) Open(cancel <-chan struct{}, in *gofuse.OpenIn, out *gofuse.OpenOut) gofuse.Status {
	write := in.Flags&syscall.O_ACCMODE != syscall.O_RDONLY || in.Flags&syscall.O_TRUNC != 0
	if write && !fs.ptBegin(in.NodeId) {
		return gofuse.Status(syscall.ETXTBSY)
	}
	fh, _, err := fs.v.Open(ctxOf(cancel), fs.caller(&in.InHeader, 0), vfs.Ino(in.NodeId), in.Flags)
	if err != nil {
		if write {
			fs.ptAbort(in.NodeId)
		}
		return fs.st("open", in.NodeId, err)
	}
	out.Fh = fh
	// A file image, when there is one, serves the reads (passthrough.go).
	switch mode, id := fs.ptOpen(in.NodeId, fh, write, func() (*os.File, bool) { return fs.v.Image(fh) }); mode {
	case modeBusy:
		fs.v.Release(context.Background(), fh)
		return gofuse.Status(syscall.ETXTBSY)
	case modePass, modeRouted:
		ptFlags(out, mode, id)
		return gofuse.OK
	}
	// Without FOPEN_KEEP_CACHE the kernel drops its cached pages of the
	// file, so a file changed by another client reads fresh. vfs allows
	// keeping them only while meta shows the file unchanged since an
	// earlier open here (re-reads of the same files every epoch).
	if fs.v.KeepCache(fh) {
		out.OpenFlags |= gofuse.FOPEN_KEEP_CACHE
	}
	return gofuse.OK
}

func (fs *fileSystem) Read(cancel <-chan struct{}, in *gofuse.ReadIn, buf []byte) (gofuse.ReadResult, gofuse.Status) {
	if int(in.Size) < len(buf) {
		buf = buf[:in.Size]
	}
	n, err := fs.v.Read(ctxOf(cancel), in.Fh, int64(in.Offset), buf)
	if err != nil {
		return nil, fs.st("read", in.NodeId, err)
	}
	return gofuse.ReadResultData(buf[:n]), gofuse.OK
}

// IoctlBuildImage is the ioctl(2) request that asks a skiff mount to build
// the file image of an open file now and to answer once it is ready
// (vfs.BuildImage): 0 when the image is ready, ENODATA when the file gets
// none, ENOTSUP when the mount keeps no images. It is _IO('s', 1).
const IoctlBuildImage = 's'<<8 | 1

func (fs *fileSystem) Ioctl(cancel <-chan struct{}, in *gofuse.IoctlIn, inbuf []byte, out *gofuse.IoctlOut, outbuf []byte) gofuse.Status {
	if in.Cmd != IoctlBuildImage {
		return gofuse.Status(syscall.ENOTTY)
	}
	err := fs.v.BuildImage(ctxOf(cancel), in.Fh)
	if en := syscall.Errno(0); errors.As(err, &en) && (en == syscall.ENODATA || en == syscall.ENOTSUP) {
		return gofuse.Status(en) // answers, not failures: nothing to log
	}
	return fs.st("ioctl", in.NodeId, err)
}

func (fs *fileSystem) Lseek(cancel <-chan struct{}, in *gofuse.LseekIn, out *gofuse.LseekOut) gofuse.Status {
	off, err := fs.v.Lseek(ctxOf(cancel), in.Fh, in.Offset, in.Whence)
	if err != nil {
		return fs.st("lseek", in.NodeId, err)
	}
	out.Offset = off
	return gofuse.OK
}

func (fs *fileSystem) GetLk(cancel <-chan struct{}, in *gofuse.LkIn, out *gofuse.LkOut) gofuse.Status {
	lk := in.Lk
	err := fs.v.Getlk(ctxOf(cancel), in.Fh, in.Owner, &lk.Typ, &lk.Start, &lk.End, &lk.Pid)
	if err != nil {
		return fs.st("getlk", in.NodeId, err)
	}
	out.Lk = lk
	return gofuse.OK
}

func (fs *fileSystem) SetLk(cancel <-chan struct{}, in *gofuse.LkIn) gofuse.Status {
	return fs.setLk(cancel, in, false)
}

func (fs *fileSystem) SetLkw(cancel <-chan struct{}, in *gofuse.LkIn) gofuse.Status {
	return fs.setLk(cancel, in, true)
}

func (fs *fileSystem) setLk(cancel <-chan struct{}, in *gofuse.LkIn, block bool) gofuse.Status {
	ctx := ctxOf(cancel)
	if block {
		ctx = interruptible(cancel)
	}
	var err error
	if in.LkFlags&gofuse.LK_FLOCK != 0 {
		err = fs.v.Flock(ctx, in.Fh, in.Owner, in.Lk.Typ, block)
	} else {
		err = fs.v.Setlk(ctx, in.Fh, in.Owner, block, in.Lk.Typ, in.Lk.Start, in.Lk.End, in.Lk.Pid)
	}
	return fs.st("setlk", in.NodeId, err)
}

func (fs *fileSystem) Release(cancel <-chan struct{}, in *gofuse.ReleaseIn) {
	var owner uint64
	if in.ReleaseFlags&releaseFlockUnlock != 0 {
		owner = in.LockOwner
	}
	// The kernel does not wait for RELEASE: finish it whatever happens.
	fs.v.ReleaseLocks(context.Background(), in.Fh, owner)
	fs.ptRelease(in.Fh)
}

func (fs *fileSystem) Write(cancel <-chan struct{}, in *gofuse.WriteIn, data []byte) (uint32, gofuse.Status) {
	n, err := fs.v.Write(ctxOf(cancel), fs.caller(&in.InHeader, 0), in.Fh, int64(in.Offset), data)
	if err != nil && n == 0 {
		return 0, fs.st("write", in.NodeId, err)
	}
	if err != nil {
		fs.st("write", in.NodeId, err) // log it; report the bytes written
	}
	return uint32(n), gofuse.OK
}

func (fs *fileSystem) CopyFileRange(cancel <-chan struct{}, in *gofuse.CopyFileRangeIn) (uint32, gofuse.Status) {
	if in.Flags != 0 {
		return 0, gofuse.EINVAL
	}
	n, err := fs.v.CopyFileRange(ctxOf(cancel), fs.caller(&in.InHeader, 0), in.FhIn, int64(in.OffIn), in.FhOut, int64(in.OffOut), min(in.Len, 1<<30))
	if err != nil && n == 0 {
		return 0, fs.st("copy_file_range", in.NodeId, err)
	}
	return uint32(n), gofuse.OK
}

func (fs *fileSystem) Flush(cancel <-chan struct{}, in *gofuse.FlushIn) gofuse.Status {
	return fs.st("flush", in.NodeId, fs.v.Flush(ctxOf(cancel), in.Fh, in.LockOwner))
}

func (fs *fileSystem) Fsync(cancel <-chan struct{}, in *gofuse.FsyncIn) gofuse.Status {
	return fs.st("fsync", in.NodeId, fs.v.Fsync(ctxOf(cancel), in.Fh))
}

func (fs *fileSystem) Fallocate(cancel <-chan struct{}, in *gofuse.FallocateIn) gofuse.Status {
	err := fs.v.Fallocate(ctxOf(cancel), fs.caller(&in.InHeader, 0), in.Fh, in.Mode, in.Offset, in.Length)
	return fs.st("fallocate", in.NodeId, err)
}

func (fs *fileSystem) OpenDir(cancel <-chan struct{}, in *gofuse.OpenIn, out *gofuse.OpenOut) gofuse.Status {
	fh, err := fs.v.OpenDir(ctxOf(cancel), fs.caller(&in.InHeader, 0), vfs.Ino(in.NodeId))
	if err != nil {
		return fs.st("opendir", in.NodeId, err)
	}
	out.Fh = fh
	return gofuse.OK
}

func (fs *fileSystem) ReadDir(cancel <-chan struct{}, in *gofuse.ReadIn, out *gofuse.DirEntryList) gofuse.Status {
	return fs.readDir(cancel, in, out, false)
}

func (fs *fileSystem) ReadDirPlus(cancel <-chan struct{}, in *gofuse.ReadIn, out *gofuse.DirEntryList) gofuse.Status {
	return fs.readDir(cancel, in, out, true)
}

func (fs *fileSystem) readDir(cancel <-chan struct{}, in *gofuse.ReadIn, out *gofuse.DirEntryList, plus bool) gofuse.Status {
	es, err := fs.v.ReadDir(ctxOf(cancel), in.Fh, in.Offset, plus)
	if err != nil {
		return fs.st("readdir", in.NodeId, err)
	}
	for i := range es {
		e := &es[i]
		de := gofuse.DirEntry{Name: e.Name, Ino: uint64(e.Ino), Mode: e.Attr.SMode(), Off: e.Off}
		if !plus {
			if !out.AddDirEntry(de) {
				break
			}
			continue
		}
		eo := out.AddDirLookupEntry(de)
		if eo == nil {
			break
		}
		if e.Name != "." && e.Name != ".." {
			fs.entry(e.Ino, &e.Attr, eo)
		}
	}
	return gofuse.OK
}

func (fs *fileSystem) ReleaseDir(in *gofuse.ReleaseIn) { fs.v.ReleaseDir(in.Fh) }

func (fs *fileSystem) FsyncDir(cancel <-chan struct{}, in *gofuse.FsyncIn) gofuse.Status {
	return gofuse.OK // directory changes are committed when made
}

func (fs *fileSystem) StatFs(cancel <-chan struct{}, h *gofuse.InHeader, out *gofuse.StatfsOut) gofuse.Status {
	st, err := fs.v.StatFS(ctxOf(cancel))
	if err != nil {
		return fs.st("statfs", h.NodeId, err)
	}
	const bsize = 4096
	out.Bsize, out.Frsize, out.NameLen = bsize, bsize, 255
	out.Blocks = st.TotalBytes / bsize
	out.Bfree = st.AvailBytes / bsize
	out.Bavail = out.Bfree
	out.Files = st.Inodes
	out.Ffree = st.Inodes - min(st.UsedInodes, st.Inodes)
	return gofuse.OK
}
