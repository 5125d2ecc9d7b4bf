package fuse

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"log/slog"
	"os"
	"strconv"
	"sync"
	"syscall"

	gofuse "github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"

	"github.com/skiff-fs/skiff/fsclient/meta"
	"github.com/skiff-fs/skiff/fsclient/vfs"
)

// ConnOptions configure ServeConn.
type ConnOptions struct {
	Options
	// MaxWrite is the largest WRITE (and READ) the server accepts, in
	// bytes. It must match what the connection's owner negotiated with the
	// kernel. Default 1 MiB.
	MaxWrite int
	// Handles are the file and directory handles the kernel holds from a
	// previous server of the same connection. ServeConn opens each again
	// (as root, without O_TRUNC/O_CREAT/O_EXCL) under the same number.
	Handles []Handle
	// NextFh is the first handle number this server gives out; it must be
	// above every number the kernel may still hold. Default: one above the
	// largest of Handles.
	NextFh uint64
	// KernelChecksPermissions says the connection was mounted with
	// DefaultPermissions: the kernel checks mode bits, so skiff skips
	// them (vfs.Caller.KernelChecked). Without it skiff checks every
	// request itself, which the kernel's caches can bypass.
	KernelChecksPermissions bool
}

// Handle is a file or directory handle as the kernel knows it.
type Handle struct {
	Fh    uint64 `json:"fh"`
	Ino   uint64 `json:"ino"`   // the kernel's node id
	Flags uint32 `json:"flags"` // open(2) flags of the OPEN or CREATE
	Dir   bool   `json:"dir,omitempty"`
}

// ConnServer serves a vfs.VFS on a connection that another process
// mounted and owns (see package supervisor): a SOCK_SEQPACKET socket that
// carries FUSE messages exactly as /dev/fuse would.
type ConnServer struct {
	srv   *gofuse.Server
	conn  *os.File
	fs    *handleFS
	done  chan struct{}
	close sync.Once
	lost  []Handle
}

// ServeConn serves v on conn, a socket whose peer relays a FUSE connection
// (it may equally be a /dev/fuse descriptor mounted by the caller). It
// blocks until the first request, FUSE INIT, has been answered: the
// connection's owner sends it (the kernel's, or the one it recorded when a
// previous server of the connection died). conn stays owned by the caller;
// ServeConn serves a duplicate.
//
// Kernel handle numbers are this package's, not vfs's: the server maps
// each to a vfs handle, so that a later server can take over the kernel's
// handles (ConnOptions.Handles).
func ServeConn(v *vfs.VFS, conn *os.File, opts ConnOptions) (*ConnServer, error) {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.MaxBackground <= 0 {
		opts.MaxBackground = 64
	}
	if opts.MaxWrite <= 0 {
		opts.MaxWrite = 1 << 20
	}
	hfs := &handleFS{fileSystem: newFileSystem(v, opts.Logger, opts.KernelChecksPermissions)}
	hfs.mu.m = make(map[uint64]uint64)
	hfs.mu.next = opts.NextFh
	lost := hfs.adopt(opts.Handles, opts.Logger)

	fd, err := syscall.Dup(int(conn.Fd()))
	if err != nil {
		return nil, fmt.Errorf("serve connection: dup: %w", err)
	}
	// go-fuse reads and writes the descriptor with blocking system calls.
	if err := syscall.SetNonblock(fd, false); err != nil {
		syscall.Close(fd)
		return nil, fmt.Errorf("serve connection: %w", err)
	}
	name := v.Name()
	if name == "" {
		name = "volume"
	}
	mo := &gofuse.MountOptions{
		MaxBackground: opts.MaxBackground,
		MaxWrite:      opts.MaxWrite,
		MaxReadAhead:  max(opts.MaxReadAhead, 0),
		FsName:        "skiff:" + name,
		Name:          "skiff",
		EnableLocks:   true,
		Debug:         opts.Debug,
		Logger:        log.New(io.Discard, "", 0),
	}
	if opts.Debug {
		mo.Logger = slog.NewLogLogger(opts.Logger.Handler(), slog.LevelDebug)
	}
	// "/dev/fd/N" tells go-fuse to serve an open descriptor instead of
	// mounting; it takes ownership of fd.
	srv, err := gofuse.NewServer(observe(hfs, opts.Observer), "/dev/fd/"+strconv.Itoa(fd), mo)
	if err != nil {
		return nil, fmt.Errorf("serve connection: %w", err)
	}
	s := &ConnServer{srv: srv, conn: conn, fs: hfs, done: make(chan struct{}), lost: lost}
	go func() {
		srv.Serve()
		close(s.done)
	}()
	return s, nil
}

// Lost lists the handles of ConnOptions.Handles that could not be opened
// again (the file was removed meanwhile); the kernel gets EBADF for them.
func (s *ConnServer) Lost() []Handle { return s.lost }

// Done is closed when serving stopped: the connection was closed by its
// owner, the file system was unmounted, or Close was called.
func (s *ConnServer) Done() <-chan struct{} { return s.done }

// Close stops reading requests, waits until every request being served
// has been answered, and returns. The connection stays open (its owner
// closes it). Open vfs handles stay open: close the VFS afterwards.
func (s *ConnServer) Close() error {
	var err error
	s.close.Do(func() {
		err = syscall.Shutdown(int(s.conn.Fd()), syscall.SHUT_RD)
		if errors.Is(err, syscall.ENOTCONN) || errors.Is(err, syscall.ENOTSOCK) {
			err = nil
		}
	})
	<-s.done
	return err
}

// Handles lists the kernel handles the server has open (for tests and
// diagnostics).
func (s *ConnServer) Handles() int {
	s.fs.mu.Lock()
	defer s.fs.mu.Unlock()
	return len(s.fs.mu.m)
}

// handleFS numbers handles for the kernel itself and maps each number to
// the vfs handle behind it, so a new server can take over the numbers a
// dead one gave out.
type handleFS struct {
	*fileSystem
	mu struct {
		sync.Mutex
		m    map[uint64]uint64 // kernel fh -> vfs fh (0: lost)
		next uint64            // last kernel fh given out
	}
}

var _ gofuse.RawFileSystem = (*handleFS)(nil)

// adopt opens hs again and registers them under their kernel numbers; it
// returns those it could not open.
func (h *handleFS) adopt(hs []Handle, log *slog.Logger) []Handle {
	ctx := context.Background()
	var lost []Handle
	for _, hd := range hs {
		var vfh uint64
		var err error
		if hd.Dir {
			vfh, err = h.v.OpenDir(ctx, meta.RootCaller(), vfs.Ino(hd.Ino))
		} else {
			vfh, _, err = h.v.Open(ctx, meta.RootCaller(), vfs.Ino(hd.Ino), hd.Flags&^uint32(syscall.O_TRUNC|syscall.O_CREAT|syscall.O_EXCL))
		}
		if err != nil {
			log.Error("fuse: cannot open a handle again after a hand-over; its users get EBADF", "fh", hd.Fh, "ino", hd.Ino, "err", err)
			lost = append(lost, hd)
			vfh = 0
		}
		h.mu.m[hd.Fh] = vfh
		h.mu.next = max(h.mu.next, hd.Fh)
	}
	return lost
}

// vfh is the vfs handle of kernel handle kfh (0, which vfs never gives
// out, when unknown: vfs answers EBADF).
func (h *handleFS) vfh(kfh uint64) uint64 {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.mu.m[kfh]
}

// add registers vfs handle vfh and returns its kernel number.
func (h *handleFS) add(vfh uint64) uint64 {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.mu.next++
	h.mu.m[h.mu.next] = vfh
	return h.mu.next
}

// drop forgets kernel handle kfh and returns its vfs handle.
func (h *handleFS) drop(kfh uint64) uint64 {
	h.mu.Lock()
	defer h.mu.Unlock()
	v := h.mu.m[kfh]
	delete(h.mu.m, kfh)
	return v
}

func (h *handleFS) Open(cancel <-chan struct{}, in *gofuse.OpenIn, out *gofuse.OpenOut) gofuse.Status {
	st := h.fileSystem.Open(cancel, in, out)
	if st.Ok() {
		out.Fh = h.add(out.Fh)
	}
	return st
}

func (h *handleFS) Create(cancel <-chan struct{}, in *gofuse.CreateIn, name string, out *gofuse.CreateOut) gofuse.Status {
	st := h.fileSystem.Create(cancel, in, name, out)
	if st.Ok() {
		out.Fh = h.add(out.Fh)
	}
	return st
}

func (h *handleFS) Tmpfile(cancel <-chan struct{}, in *gofuse.CreateIn, out *gofuse.CreateOut) gofuse.Status {
	st := h.fileSystem.Tmpfile(cancel, in, out)
	if st.Ok() {
		out.Fh = h.add(out.Fh)
	}
	return st
}

func (h *handleFS) OpenDir(cancel <-chan struct{}, in *gofuse.OpenIn, out *gofuse.OpenOut) gofuse.Status {
	st := h.fileSystem.OpenDir(cancel, in, out)
	if st.Ok() {
		out.Fh = h.add(out.Fh)
	}
	return st
}

func (h *handleFS) Read(cancel <-chan struct{}, in *gofuse.ReadIn, buf []byte) (gofuse.ReadResult, gofuse.Status) {
	in.Fh = h.vfh(in.Fh)
	return h.fileSystem.Read(cancel, in, buf)
}

func (h *handleFS) Write(cancel <-chan struct{}, in *gofuse.WriteIn, data []byte) (uint32, gofuse.Status) {
	in.Fh = h.vfh(in.Fh)
	return h.fileSystem.Write(cancel, in, data)
}

func (h *handleFS) Ioctl(cancel <-chan struct{}, in *gofuse.IoctlIn, inbuf []byte, out *gofuse.IoctlOut, outbuf []byte) gofuse.Status {
	in.Fh = h.vfh(in.Fh)
	return h.fileSystem.Ioctl(cancel, in, inbuf, out, outbuf)
}

func (h *handleFS) Lseek(cancel <-chan struct{}, in *gofuse.LseekIn, out *gofuse.LseekOut) gofuse.Status {
	in.Fh = h.vfh(in.Fh)
	return h.fileSystem.Lseek(cancel, in, out)
}

func (h *handleFS) GetLk(cancel <-chan struct{}, in *gofuse.LkIn, out *gofuse.LkOut) gofuse.Status {
	in.Fh = h.vfh(in.Fh)
	return h.fileSystem.GetLk(cancel, in, out)
}

func (h *handleFS) SetLk(cancel <-chan struct{}, in *gofuse.LkIn) gofuse.Status {
	in.Fh = h.vfh(in.Fh)
	return h.fileSystem.SetLk(cancel, in)
}

func (h *handleFS) SetLkw(cancel <-chan struct{}, in *gofuse.LkIn) gofuse.Status {
	in.Fh = h.vfh(in.Fh)
	return h.fileSystem.SetLkw(cancel, in)
}

func (h *handleFS) Release(cancel <-chan struct{}, in *gofuse.ReleaseIn) {
	in.Fh = h.drop(in.Fh)
	if in.Fh != 0 {
		h.fileSystem.Release(cancel, in)
	}
}

func (h *handleFS) ReleaseDir(in *gofuse.ReleaseIn) {
	in.Fh = h.drop(in.Fh)
	if in.Fh != 0 {
		h.fileSystem.ReleaseDir(in)
	}
}

func (h *handleFS) CopyFileRange(cancel <-chan struct{}, in *gofuse.CopyFileRangeIn) (uint32, gofuse.Status) {
	in.FhIn = h.vfh(in.FhIn)
	in.FhOut = h.vfh(in.FhOut)
	return h.fileSystem.CopyFileRange(cancel, in)
}

func (h *handleFS) Flush(cancel <-chan struct{}, in *gofuse.FlushIn) gofuse.Status {
	in.Fh = h.vfh(in.Fh)
	return h.fileSystem.Flush(cancel, in)
}

func (h *handleFS) Fsync(cancel <-chan struct{}, in *gofuse.FsyncIn) gofuse.Status {
	in.Fh = h.vfh(in.Fh)
	return h.fileSystem.Fsync(cancel, in)
}

func (h *handleFS) Fallocate(cancel <-chan struct{}, in *gofuse.FallocateIn) gofuse.Status {
	in.Fh = h.vfh(in.Fh)
	return h.fileSystem.Fallocate(cancel, in)
}

func (h *handleFS) ReadDir(cancel <-chan struct{}, in *gofuse.ReadIn, out *gofuse.DirEntryList) gofuse.Status {
	in.Fh = h.vfh(in.Fh)
	return h.fileSystem.ReadDir(cancel, in, out)
}

func (h *handleFS) ReadDirPlus(cancel <-chan struct{}, in *gofuse.ReadIn, out *gofuse.DirEntryList) gofuse.Status {
	in.Fh = h.vfh(in.Fh)
	return h.fileSystem.ReadDirPlus(cancel, in, out)
}

func (h *handleFS) FsyncDir(cancel <-chan struct{}, in *gofuse.FsyncIn) gofuse.Status {
	in.Fh = h.vfh(in.Fh)
	return h.fileSystem.FsyncDir(cancel, in)
}

func (h *handleFS) SetAttr(cancel <-chan struct{}, in *gofuse.SetAttrIn, out *gofuse.AttrOut) gofuse.Status {
	if in.Valid&gofuse.FATTR_FH != 0 {
		in.Fh = h.vfh(in.Fh)
	}
	return h.fileSystem.SetAttr(cancel, in, out)
}

// PollHackFh is the handle go-fuse gives its poll-hack file (see
// DisablePoll): it never reaches the file system.
const PollHackFh = ^uint64(0)

// DisablePoll makes the kernel learn, once per connection, that the file
// system does not support FUSE_POLL: it opens go-fuse's hack file at the
// root of the mount and polls it with plain system calls, go-fuse
// answers ENOSYS, and the kernel never sends POLL again.
//
// A Go process that serves a connection (or relays one) and also opens
// files on that mount needs it before its first os.Open there: the
// runtime registers every opened file with epoll, epoll_ctl on a FUSE
// file sends POLL and waits for the answer in a state the runtime cannot
// preempt, and a garbage collection that stops the world meanwhile stops
// the goroutines that would answer — a deadlock. fuse.Mount does this
// itself (go-fuse's WaitMount); ServeConn's owner must.
func DisablePoll(mountpoint string) error {
	fd, err := syscall.Open(mountpoint+"/.go-fuse-epoll-hack", syscall.O_RDONLY|syscall.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("disable FUSE poll on %s: %w", mountpoint, err)
	}
	defer syscall.Close(fd)
	if _, err := unix.Poll([]unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}, 0); err != nil {
		return fmt.Errorf("disable FUSE poll on %s: %w", mountpoint, err)
	}
	return nil
}
