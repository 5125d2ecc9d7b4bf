package fuse

import (
	"errors"
	"fmt"
	"io"
	"log"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"

	gofuse "github.com/hanwen/go-fuse/v2/fuse"

	"github.com/skiff-fs/skiff/fsclient/vfs"
)

// Options configure a mount. Zero values mean the documented defaults.
type Options struct {
	// AllowOther lets users other than the mounting one use the mount.
	// Every mount has default_permissions: the kernel checks the mode
	// bits of every access, including those it serves from its caches
	// (see "Permissions" in the package documentation). Non-root mounts
	// need user_allow_other in /etc/fuse.conf for it.
	AllowOther bool
	// MaxReadAhead is the kernel's read-ahead window for the files of
	// the mount, in bytes. Default DefaultReadAhead (4 MiB); negative
	// keeps the kernel's default (128 KiB). FUSE's INIT can only lower
	// the kernel's 128 KiB, so Mount sets the window on the mount's
	// backing device after mounting (SetReadAhead, as root; otherwise it
	// logs a warning and the kernel's default stays). ServeConn cannot:
	// the connection's owner calls SetReadAhead.
	MaxReadAhead int
	// MaxBackground bounds the kernel's asynchronous requests (read-ahead,
	// direct I/O). Default 64.
	MaxBackground int
	// Debug logs every FUSE request and reply at debug level.
	Debug bool
	// Logger receives errors (and with Debug the request log).
	// Default: discard.
	Logger *slog.Logger
	// Passthrough lets the kernel read files that have a file image
	// (vfs.Config.Images) directly from it (passthrough.go). It is turned
	// off at the first refusal by the kernel.
	Passthrough bool
	// Observer, when set, is told about every operation served (name,
	// duration, errno), e.g. for metrics. Nil costs nothing.
	Observer OpObserver
}

// DefaultPermissions is the mount option that makes the kernel check
// permissions from the attributes skiff returns. Mount always sets it; a
// connection's owner that mounts by itself (package supervisor) sets it
// too and says so in ConnOptions.KernelChecksPermissions.
const DefaultPermissions = "default_permissions"

// Server is a mounted and serving skiff file system.
type Server struct {
	srv        *gofuse.Server
	fs         *fileSystem
	v          *vfs.VFS
	mountpoint string
	log        *slog.Logger
	done       chan struct{}
	unmountMu  sync.Mutex
}

// Mount checks the mountpoint, mounts v there and serves it until it is
// unmounted. When Mount returns, the file system is ready. As root it
// mounts with mount(2) itself, otherwise through fusermount3.
func Mount(v *vfs.VFS, mountpoint string, opts Options) (*Server, error) {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.MaxBackground <= 0 {
		opts.MaxBackground = 64
	}
	if opts.MaxReadAhead == 0 {
		opts.MaxReadAhead = DefaultReadAhead
	}
	abs, err := filepath.Abs(mountpoint)
	if err != nil {
		return nil, err
	}
	if err := CheckMountpoint(abs); err != nil {
		return nil, err
	}
	root := os.Geteuid() == 0
	name := v.Name()
	if name == "" {
		name = "volume"
	}
	mo := &gofuse.MountOptions{
		AllowOther:    opts.AllowOther,
		MaxBackground: opts.MaxBackground,
		MaxWrite:      1 << 20,
		MaxReadAhead:  max(opts.MaxReadAhead, 0),
		FsName:        "skiff:" + name,
		Name:          "skiff",
		DirectMount:   root,
		EnableLocks:   true,
		Debug:         opts.Debug,
		Logger:        log.New(io.Discard, "", 0),
		Options:       []string{DefaultPermissions},
	}
	if opts.Debug {
		mo.Logger = slog.NewLogLogger(opts.Logger.Handler(), slog.LevelDebug)
	}
	if v.ReadOnly() {
		mo.Options = append(mo.Options, "ro")
		if root {
			mo.DirectMountFlags = syscall.MS_NOSUID | syscall.MS_NODEV | syscall.MS_RDONLY
		}
	}
	fs := newFileSystem(v, opts.Logger, true)
	fs.pt.on = opts.Passthrough
	srv, err := gofuse.NewServer(observe(fs, opts.Observer), abs, mo)
	if err != nil {
		return nil, fmt.Errorf("mount %s on %s: %w", name, abs, explainMountError(err, root))
	}
	s := &Server{srv: srv, fs: fs, v: v, mountpoint: abs, log: opts.Logger, done: make(chan struct{})}
	go func() {
		srv.Serve()
		close(s.done)
	}()
	if err := srv.WaitMount(); err != nil {
		_ = srv.Unmount()
		return nil, fmt.Errorf("mount %s on %s: %w", name, abs, err)
	}
	// The kernel applied INIT's read-ahead (NewServer answered it), so
	// the window set now stays.
	if opts.MaxReadAhead > 0 {
		if err := SetReadAhead(abs, opts.MaxReadAhead); err != nil {
			opts.Logger.Warn("fuse: the kernel's read-ahead stays at its default; sequential reads are slower", "err", err)
		}
	}
	return s, nil
}

func explainMountError(err error, root bool) error {
	if !root && errors.Is(err, exec.ErrNotFound) {
		return fmt.Errorf("%w: install fuse3 (fusermount3), or mount as root", err)
	}
	if errors.Is(err, syscall.EPERM) {
		return fmt.Errorf("%w: mounting needs root, or fusermount3 with /etc/fuse.conf allowing it (user_allow_other for --allow-other)", err)
	}
	return err
}

// Mountpoint is the absolute path of the mount.
func (s *Server) Mountpoint() string { return s.mountpoint }

// Done is closed when the file system is no longer served (unmounted).
func (s *Server) Done() <-chan struct{} { return s.done }

// Wait blocks until the file system is unmounted (by Unmount, umount(8)
// or skiff umount) and every request has been answered.
func (s *Server) Wait() { <-s.done }

// Unmount unmounts the file system and waits until serving stopped. It
// fails with EBUSY while files of the mount are in use; see
// UnmountLazy.
func (s *Server) Unmount() error {
	s.unmountMu.Lock()
	defer s.unmountMu.Unlock()
	select {
	case <-s.done:
		return nil
	default:
	}
	if err := s.srv.Unmount(); err != nil {
		return fmt.Errorf("unmount %s: %w", s.mountpoint, err)
	}
	<-s.done
	return nil
}

// UnmountLazy detaches the mount at once (umount -l): processes still
// using it keep it until they let go, new ones no longer see it. It does
// not wait.
func (s *Server) UnmountLazy() error {
	return Unmount(s.mountpoint, true)
}

// Unmount unmounts the file system at mountpoint (skiff umount). With
// lazy it detaches it even while in use (umount -l).
func Unmount(mountpoint string, lazy bool) error {
	abs, err := filepath.Abs(mountpoint)
	if err != nil {
		return err
	}
	flags := 0
	if lazy {
		flags = syscall.MNT_DETACH
	}
	err = syscall.Unmount(abs, flags)
	if err == nil {
		return nil
	}
	if errors.Is(err, syscall.EPERM) && os.Geteuid() != 0 {
		args := []string{"-u"}
		if lazy {
			args = append(args, "-z")
		}
		out, ferr := exec.Command("fusermount3", append(args, abs)...).CombinedOutput()
		if ferr == nil {
			return nil
		}
		return fmt.Errorf("unmount %s: fusermount3: %v: %s", abs, ferr, out)
	}
	switch {
	case errors.Is(err, syscall.EINVAL):
		return fmt.Errorf("unmount %s: not a mount point", abs)
	case errors.Is(err, syscall.EBUSY):
		return fmt.Errorf("unmount %s: the file system is in use (close the files and leave the directory, or use --force to detach it lazily)", abs)
	case errors.Is(err, syscall.ENOENT):
		return fmt.Errorf("unmount %s: no such directory", abs)
	}
	return fmt.Errorf("unmount %s: %w", abs, err)
}

// CheckMountpoint fails with a one-line message naming the fix when
// mountpoint cannot take a mount: it is missing, not a directory, already
// mounted (or a dead mount), not empty, or /dev/fuse is missing.
func CheckMountpoint(mountpoint string) error {
	if _, err := os.Stat("/dev/fuse"); err != nil {
		return fmt.Errorf("/dev/fuse is missing: load the fuse kernel module (modprobe fuse) or, in a container, run privileged or pass --device /dev/fuse")
	}
	var st syscall.Stat_t
	if err := syscall.Stat(mountpoint, &st); err != nil {
		switch {
		case errors.Is(err, syscall.ENOENT):
			return fmt.Errorf("mountpoint %s does not exist: create it first (mkdir -p %s)", mountpoint, mountpoint)
		case errors.Is(err, syscall.ENOTCONN):
			return fmt.Errorf("mountpoint %s is a dead FUSE mount (transport endpoint is not connected): run skiff umount --force %s first", mountpoint, mountpoint)
		}
		return fmt.Errorf("mountpoint %s: %w", mountpoint, err)
	}
	if st.Mode&syscall.S_IFMT != syscall.S_IFDIR {
		return fmt.Errorf("mountpoint %s is not a directory: mount on an empty directory", mountpoint)
	}
	if mounted, err := isMountpoint(mountpoint, &st); err == nil && mounted {
		return fmt.Errorf("mountpoint %s is already a mount point: unmount it first (skiff umount %s) or choose another directory", mountpoint, mountpoint)
	}
	f, err := os.Open(mountpoint)
	if err != nil {
		return fmt.Errorf("mountpoint %s: %w", mountpoint, err)
	}
	defer f.Close()
	names, err := f.Readdirnames(1)
	if err != nil && err != io.EOF {
		return fmt.Errorf("mountpoint %s: %w", mountpoint, err)
	}
	if len(names) > 0 {
		return fmt.Errorf("mountpoint %s is not empty (it holds %q): mount on an empty directory", mountpoint, names[0])
	}
	return nil
}

// isMountpoint reports whether dir (with stat st) is the root of a mount:
// its device differs from its parent's, or it is listed in mountinfo.
func isMountpoint(dir string, st *syscall.Stat_t) (bool, error) {
	var pst syscall.Stat_t
	if err := syscall.Stat(filepath.Dir(dir), &pst); err != nil {
		return false, err
	}
	if pst.Dev != st.Dev {
		return true, nil
	}
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return false, err
	}
	return mountinfoHas(string(b), dir), nil
}

// mountinfoHas reports whether /proc/self/mountinfo content lists dir as
// a mount point (field 5, octal-escaped).
func mountinfoHas(info, dir string) bool {
	for _, line := range strings.Split(info, "\n") {
		f := strings.Fields(line)
		if len(f) > 4 && unescapeMountinfo(f[4]) == dir {
			return true
		}
	}
	return false
}

// unescapeMountinfo undoes the octal escapes (\040 for a space) of
// mountinfo paths.
func unescapeMountinfo(s string) string {
	if !strings.Contains(s, "\\") {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+4 <= len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}
