package fuse

import (
	"syscall"
	"time"

	gofuse "github.com/hanwen/go-fuse/v2/fuse"
)

// OpObserver is told about every FUSE operation served.
//
// ObserveOp is called once per operation, after the operation's answer
// was computed and before it is sent to the kernel, with the operation's
// lower-case name ("lookup", "getattr", "read", "write", "forget", ...;
// see Ops), the time spent serving it, and its errno (0 on success).
// Operations without an answer (forget, release, releasedir) report 0.
// It is called from many goroutines at once and must not block.
type OpObserver interface {
	ObserveOp(op string, d time.Duration, errno syscall.Errno)
}

// Ops lists every operation name an OpObserver may be told about, so
// that metrics can be registered up front.
var Ops = []string{
	"lookup", "forget", "getattr", "setattr", "mknod", "mkdir", "unlink",
	"rmdir", "rename", "link", "symlink", "readlink", "access", "getxattr",
	"listxattr", "setxattr", "removexattr", "create", "tmpfile", "open",
	"read", "lseek", "getlk", "setlk", "setlkw", "release", "write",
	"copyfilerange", "ioctl", "flush", "fsync", "fallocate", "opendir",
	"readdir", "readdirplus", "releasedir", "fsyncdir", "statfs", "statx",
}

// observed times every operation of fs and reports it to o.
type observed struct {
	fs gofuse.RawFileSystem
	o  OpObserver
}

// observe wraps fs so that o sees every operation; a nil o returns fs
// itself (no cost).
func observe(fs gofuse.RawFileSystem, o OpObserver) gofuse.RawFileSystem {
	if o == nil {
		return fs
	}
	return &observed{fs: fs, o: o}
}

var _ gofuse.RawFileSystem = (*observed)(nil)

func (w *observed) done(op string, t0 time.Time, st gofuse.Status) {
	var errno syscall.Errno
	if st != gofuse.OK {
		errno = syscall.Errno(st)
	}
	w.o.ObserveOp(op, time.Since(t0), errno)
}

// op reports one operation started at t0 that answered st, and returns
// st. Callers pass time.Now() before the call they time: Go evaluates the
// arguments left to right.
func (w *observed) op(name string, t0 time.Time, st gofuse.Status) gofuse.Status {
	w.done(name, t0, st)
	return st
}

func (w *observed) String() string        { return w.fs.String() }
func (w *observed) SetDebug(debug bool)   { w.fs.SetDebug(debug) }
func (w *observed) Init(s *gofuse.Server) { w.fs.Init(s) }
func (w *observed) OnUnmount()            { w.fs.OnUnmount() }
func (w *observed) Forget(nodeid, n uint64) {
	t0 := time.Now()
	w.fs.Forget(nodeid, n)
	w.done("forget", t0, gofuse.OK)
}
func (w *observed) ReleaseDir(in *gofuse.ReleaseIn) {
	t0 := time.Now()
	w.fs.ReleaseDir(in)
	w.done("releasedir", t0, gofuse.OK)
}

func (w *observed) Release(cancel <-chan struct{}, in *gofuse.ReleaseIn) {
	t0 := time.Now()
	w.fs.Release(cancel, in)
	w.done("release", t0, gofuse.OK)
}

func (w *observed) Lookup(cancel <-chan struct{}, h *gofuse.InHeader, name string, out *gofuse.EntryOut) gofuse.Status {
	return w.op("lookup", time.Now(), w.fs.Lookup(cancel, h, name, out))
}

func (w *observed) GetAttr(cancel <-chan struct{}, in *gofuse.GetAttrIn, out *gofuse.AttrOut) gofuse.Status {
	return w.op("getattr", time.Now(), w.fs.GetAttr(cancel, in, out))
}

func (w *observed) SetAttr(cancel <-chan struct{}, in *gofuse.SetAttrIn, out *gofuse.AttrOut) gofuse.Status {
	return w.op("setattr", time.Now(), w.fs.SetAttr(cancel, in, out))
}

func (w *observed) Mknod(cancel <-chan struct{}, in *gofuse.MknodIn, name string, out *gofuse.EntryOut) gofuse.Status {
	return w.op("mknod", time.Now(), w.fs.Mknod(cancel, in, name, out))
}

func (w *observed) Mkdir(cancel <-chan struct{}, in *gofuse.MkdirIn, name string, out *gofuse.EntryOut) gofuse.Status {
	return w.op("mkdir", time.Now(), w.fs.Mkdir(cancel, in, name, out))
}

func (w *observed) Unlink(cancel <-chan struct{}, h *gofuse.InHeader, name string) gofuse.Status {
	return w.op("unlink", time.Now(), w.fs.Unlink(cancel, h, name))
}

func (w *observed) Rmdir(cancel <-chan struct{}, h *gofuse.InHeader, name string) gofuse.Status {
	return w.op("rmdir", time.Now(), w.fs.Rmdir(cancel, h, name))
}

func (w *observed) Rename(cancel <-chan struct{}, in *gofuse.RenameIn, oldName, newName string) gofuse.Status {
	return w.op("rename", time.Now(), w.fs.Rename(cancel, in, oldName, newName))
}

func (w *observed) Link(cancel <-chan struct{}, in *gofuse.LinkIn, name string, out *gofuse.EntryOut) gofuse.Status {
	return w.op("link", time.Now(), w.fs.Link(cancel, in, name, out))
}

func (w *observed) Symlink(cancel <-chan struct{}, h *gofuse.InHeader, target, name string, out *gofuse.EntryOut) gofuse.Status {
	return w.op("symlink", time.Now(), w.fs.Symlink(cancel, h, target, name, out))
}

func (w *observed) Readlink(cancel <-chan struct{}, h *gofuse.InHeader) ([]byte, gofuse.Status) {
	t0 := time.Now()
	b, st := w.fs.Readlink(cancel, h)
	w.done("readlink", t0, st)
	return b, st
}

func (w *observed) Access(cancel <-chan struct{}, in *gofuse.AccessIn) gofuse.Status {
	return w.op("access", time.Now(), w.fs.Access(cancel, in))
}

func (w *observed) GetXAttr(cancel <-chan struct{}, h *gofuse.InHeader, attr string, dest []byte) (uint32, gofuse.Status) {
	t0 := time.Now()
	n, st := w.fs.GetXAttr(cancel, h, attr, dest)
	w.done("getxattr", t0, st)
	return n, st
}

func (w *observed) ListXAttr(cancel <-chan struct{}, h *gofuse.InHeader, dest []byte) (uint32, gofuse.Status) {
	t0 := time.Now()
	n, st := w.fs.ListXAttr(cancel, h, dest)
	w.done("listxattr", t0, st)
	return n, st
}

func (w *observed) SetXAttr(cancel <-chan struct{}, in *gofuse.SetXAttrIn, attr string, data []byte) gofuse.Status {
	return w.op("setxattr", time.Now(), w.fs.SetXAttr(cancel, in, attr, data))
}

func (w *observed) RemoveXAttr(cancel <-chan struct{}, h *gofuse.InHeader, attr string) gofuse.Status {
	return w.op("removexattr", time.Now(), w.fs.RemoveXAttr(cancel, h, attr))
}

func (w *observed) Create(cancel <-chan struct{}, in *gofuse.CreateIn, name string, out *gofuse.CreateOut) gofuse.Status {
	return w.op("create", time.Now(), w.fs.Create(cancel, in, name, out))
}

func (w *observed) Tmpfile(cancel <-chan struct{}, in *gofuse.CreateIn, out *gofuse.CreateOut) gofuse.Status {
	return w.op("tmpfile", time.Now(), w.fs.Tmpfile(cancel, in, out))
}

func (w *observed) Open(cancel <-chan struct{}, in *gofuse.OpenIn, out *gofuse.OpenOut) gofuse.Status {
	return w.op("open", time.Now(), w.fs.Open(cancel, in, out))
}

func (w *observed) Read(cancel <-chan struct{}, in *gofuse.ReadIn, buf []byte) (gofuse.ReadResult, gofuse.Status) {
	t0 := time.Now()
	r, st := w.fs.Read(cancel, in, buf)
	w.done("read", t0, st)
	return r, st
}

func (w *observed) Lseek(cancel <-chan struct{}, in *gofuse.LseekIn, out *gofuse.LseekOut) gofuse.Status {
	return w.op("lseek", time.Now(), w.fs.Lseek(cancel, in, out))
}

func (w *observed) GetLk(cancel <-chan struct{}, in *gofuse.LkIn, out *gofuse.LkOut) gofuse.Status {
	return w.op("getlk", time.Now(), w.fs.GetLk(cancel, in, out))
}

func (w *observed) SetLk(cancel <-chan struct{}, in *gofuse.LkIn) gofuse.Status {
	return w.op("setlk", time.Now(), w.fs.SetLk(cancel, in))
}

func (w *observed) SetLkw(cancel <-chan struct{}, in *gofuse.LkIn) gofuse.Status {
	return w.op("setlkw", time.Now(), w.fs.SetLkw(cancel, in))
}

func (w *observed) Write(cancel <-chan struct{}, in *gofuse.WriteIn, data []byte) (uint32, gofuse.Status) {
	t0 := time.Now()
	n, st := w.fs.Write(cancel, in, data)
	w.done("write", t0, st)
	return n, st
}

// Writev is go-fuse's first try at a WRITE; on ENOSYS it calls Write,
// which reports the operation, so an ENOSYS here is not reported.
func (w *observed) Writev(cancel <-chan struct{}, in *gofuse.WriteIn, data [][]byte) (uint32, gofuse.Status) {
	t0 := time.Now()
	n, st := w.fs.Writev(cancel, in, data)
	if st != gofuse.ENOSYS {
		w.done("write", t0, st)
	}
	return n, st
}

func (w *observed) CopyFileRange(cancel <-chan struct{}, in *gofuse.CopyFileRangeIn) (uint32, gofuse.Status) {
	t0 := time.Now()
	n, st := w.fs.CopyFileRange(cancel, in)
	w.done("copyfilerange", t0, st)
	return n, st
}

func (w *observed) Ioctl(cancel <-chan struct{}, in *gofuse.IoctlIn, inbuf []byte, out *gofuse.IoctlOut, outbuf []byte) gofuse.Status {
	return w.op("ioctl", time.Now(), w.fs.Ioctl(cancel, in, inbuf, out, outbuf))
}

func (w *observed) Flush(cancel <-chan struct{}, in *gofuse.FlushIn) gofuse.Status {
	return w.op("flush", time.Now(), w.fs.Flush(cancel, in))
}

func (w *observed) Fsync(cancel <-chan struct{}, in *gofuse.FsyncIn) gofuse.Status {
	return w.op("fsync", time.Now(), w.fs.Fsync(cancel, in))
}

func (w *observed) Fallocate(cancel <-chan struct{}, in *gofuse.FallocateIn) gofuse.Status {
	return w.op("fallocate", time.Now(), w.fs.Fallocate(cancel, in))
}

func (w *observed) OpenDir(cancel <-chan struct{}, in *gofuse.OpenIn, out *gofuse.OpenOut) gofuse.Status {
	return w.op("opendir", time.Now(), w.fs.OpenDir(cancel, in, out))
}

func (w *observed) ReadDir(cancel <-chan struct{}, in *gofuse.ReadIn, out *gofuse.DirEntryList) gofuse.Status {
	return w.op("readdir", time.Now(), w.fs.ReadDir(cancel, in, out))
}

func (w *observed) ReadDirPlus(cancel <-chan struct{}, in *gofuse.ReadIn, out *gofuse.DirEntryList) gofuse.Status {
	return w.op("readdirplus", time.Now(), w.fs.ReadDirPlus(cancel, in, out))
}

func (w *observed) FsyncDir(cancel <-chan struct{}, in *gofuse.FsyncIn) gofuse.Status {
	return w.op("fsyncdir", time.Now(), w.fs.FsyncDir(cancel, in))
}

func (w *observed) StatFs(cancel <-chan struct{}, h *gofuse.InHeader, out *gofuse.StatfsOut) gofuse.Status {
	return w.op("statfs", time.Now(), w.fs.StatFs(cancel, h, out))
}

func (w *observed) Statx(cancel <-chan struct{}, in *gofuse.StatxIn, out *gofuse.StatxOut) gofuse.Status {
	return w.op("statx", time.Now(), w.fs.Statx(cancel, in, out))
}
