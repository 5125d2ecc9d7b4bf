package vfs

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/skiff-fs/skiff/fsclient/chunk"
	"github.com/skiff-fs/skiff/fsclient/meta"
	"github.com/skiff-fs/skiff/fsclient/volume"
)

// Aliases so that the FUSE layer needs only this package.
type (
	// Ino is an inode number as the mount shows it: RootIno is the
	// mount's root (the volume's root, or Config.Subdir).
	Ino = meta.Ino
	// Attr is an inode's attributes.
	Attr = meta.Attr
	// Caller is the identity an operation is checked against.
	Caller = meta.Caller
	// StatFS is the volume's capacity and usage.
	StatFS = meta.StatFS
)

// RootIno is the root of the mount.
const RootIno Ino = 1

// SetAttr bits: meta's (FUSE FATTR values) plus SetSize.
const (
	SetMode     = meta.SetMode
	SetUID      = meta.SetUID
	SetGID      = meta.SetGID
	SetSize     = 1 << 3
	SetAtime    = meta.SetAtime
	SetMtime    = meta.SetMtime
	SetAtimeNow = meta.SetAtimeNow
	SetMtimeNow = meta.SetMtimeNow
	SetCtime    = meta.SetCtime
)

// Config configures a VFS. Zero values mean the documented defaults.
type Config struct {
	// AttrTimeout is how long the kernel may cache attributes. Default 1s,
	// which keeps several clients of one volume close to each other.
	AttrTimeout time.Duration
	// EntryTimeout is how long the kernel may cache a name → inode entry
	// of a non-directory. Default 1s.
	EntryTimeout time.Duration
	// DirEntryTimeout is the same for entries naming directories.
	// Default 1s.
	DirEntryTimeout time.Duration
	// ReadOnly refuses every change with EROFS.
	ReadOnly bool
	// Subdir is a directory of the volume ("a/b") to show as the root.
	// ".." at the root stays at the root. Default: the volume's root.
	Subdir string
	// Images keeps file images (package image) of files wholly in the
	// block cache, for the FUSE layer to hand to the kernel (Image). Only
	// with a block cache private to the pod (not Shared).
	Images bool
	// Logger receives errors of background work (flush at release).
	// Default: discard.
	Logger *slog.Logger
}

// Negative durations are refused; zero means the default.
func (c *Config) validate() error {
	for _, d := range []struct {
		v    *time.Duration
		name string
	}{{&c.AttrTimeout, "attribute timeout"}, {&c.EntryTimeout, "entry timeout"}, {&c.DirEntryTimeout, "directory entry timeout"}} {
		if *d.v < 0 {
			return fmt.Errorf("%s %v is negative", d.name, *d.v)
		}
		if *d.v == 0 {
			*d.v = time.Second
		}
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return nil
}

// VFS is the file system over one volume: inodes, open files and
// directory handles. It is safe for concurrent use.
type VFS struct {
	m    *meta.Meta
	cs   *chunk.Store
	cm   chunk.Meta
	cfg  Config
	log  *slog.Logger
	root meta.Ino // the volume inode shown as RootIno
	name string
	pc   pageCache // what the kernel's page cache holds (pagecache.go)
	sp   specials  // the kernel's references to special nodes (special.go)
	img  *images   // nil without Config.Images (image.go)

	dirEntriesRead atomic.Int64 // DirEntriesRead (dir.go)

	mu struct {
		sync.Mutex
		files   map[meta.Ino]*openFile // by volume inode
		handles map[uint64]*handle
		dirs    map[uint64]*dirHandle
		nextFh  uint64
	}
}

// New returns a VFS over v. With cfg.Subdir it resolves the sub-directory
// now and fails when it is missing. v must have a session
// (v.Meta.NewSession) unless the volume was opened read-only.
func New(v *volume.Volume, cfg Config) (*VFS, error) {
	if v == nil || v.Meta == nil || v.Chunks == nil {
		return nil, errors.New("vfs: no volume given")
	}
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	fs := &VFS{m: v.Meta, cs: v.Chunks, cm: v.ChunkMeta(), cfg: cfg, log: cfg.Logger, root: meta.RootIno}
	if v.Format != nil {
		fs.name = v.Format.Name
	}
	fs.mu.files = make(map[meta.Ino]*openFile)
	fs.mu.handles = make(map[uint64]*handle)
	fs.mu.dirs = make(map[uint64]*dirHandle)
	ctx := context.Background()
	if _, err := v.Meta.GetAttr(ctx, meta.RootIno); err != nil {
		return nil, fmt.Errorf("vfs: read the volume's root: %w", err)
	}
	if sub := strings.Trim(path.Clean("/"+cfg.Subdir), "/"); sub != "" {
		ino := meta.RootIno
		for _, name := range strings.Split(sub, "/") {
			child, a, err := v.Meta.Lookup(ctx, meta.RootCaller(), ino, name)
			if errors.Is(err, syscall.ENOENT) {
				return nil, fmt.Errorf("sub-directory %q does not exist in volume %q: create it first (mkdir it on a mount of the whole volume)", cfg.Subdir, fs.name)
			}
			if err != nil {
				return nil, fmt.Errorf("resolve sub-directory %q: %w", cfg.Subdir, err)
			}
			if a.Typ != meta.TypeDir {
				return nil, fmt.Errorf("sub-directory %q of volume %q is not a directory", cfg.Subdir, fs.name)
			}
			ino = child
		}
		fs.root = ino
	}
	if err := fs.startImages(); err != nil {
		return nil, err
	}
	return fs, nil
}

// Name is the volume's name.
func (v *VFS) Name() string { return v.name }

// AttrTimeout, EntryTimeout and DirEntryTimeout are the cache timeouts the
// kernel should use.
func (v *VFS) AttrTimeout() time.Duration { return v.cfg.AttrTimeout }

// EntryTimeout is the kernel's entry cache timeout for an inode of typ.
func (v *VFS) EntryTimeout(a *Attr) time.Duration {
	if a.Typ == meta.TypeDir {
		return v.cfg.DirEntryTimeout
	}
	return v.cfg.EntryTimeout
}

// ReadOnly reports whether the mount refuses changes.
func (v *VFS) ReadOnly() bool { return v.cfg.ReadOnly }

// BlockSize is the volume's block size (the preferred I/O size).
func (v *VFS) BlockSize() uint32 { return v.cs.BlockSize() }

// in maps a mount inode to a volume inode; out the other way. The mount's
// root and the volume's root swap numbers (under a sub-directory the
// volume's root is unreachable, so the swap is never seen).
func (v *VFS) in(ino Ino) meta.Ino {
	switch ino {
	case RootIno:
		return v.root
	case v.root:
		return meta.RootIno
	}
	return ino
}

func (v *VFS) out(ino meta.Ino) Ino { return v.in(ino) }

func (v *VFS) roErr() error {
	if v.cfg.ReadOnly {
		return syscall.EROFS
	}
	return nil
}

// Lookup resolves name in parent. ".." of the root is the root.
func (v *VFS) Lookup(ctx context.Context, c Caller, parent Ino, name string) (Ino, Attr, error) {
	p := v.in(parent)
	if name == ".." && p == v.root {
		name = "."
	}
	ino, a, err := v.m.Lookup(ctx, c, p, name)
	if err != nil {
		return 0, Attr{}, err
	}
	v.sawAttr(ino, &a)
	return v.out(ino), a, nil
}

// GetAttr returns an inode's attributes. For a file open here with
// unflushed writes, the size includes them.
func (v *VFS) GetAttr(ctx context.Context, ino Ino) (Attr, error) {
	real := v.in(ino)
	a, err := v.m.GetAttr(ctx, real)
	if err != nil {
		if errors.Is(err, syscall.ENOENT) {
			if a, ok := v.removedDir(real); ok {
				return a, nil
			}
		}
		return Attr{}, err
	}
	v.sawAttr(real, &a)
	return a, nil
}

// sawAttr reconciles fresh attributes with the open-file state of ino.
func (v *VFS) sawAttr(ino meta.Ino, a *Attr) {
	if of := v.file(ino); of != nil {
		of.saw(a)
	}
}

// SetAttr changes mode, owner, times and (SetSize) the size. fh is the
// handle the change was made through (0: none): a truncate through a
// handle open for writing needs no write permission on the file.
func (v *VFS) SetAttr(ctx context.Context, c Caller, ino Ino, fh uint64, set uint32, size uint64, in Attr) (Attr, error) {
	if err := v.roErr(); err != nil {
		return Attr{}, err
	}
	real := v.in(ino)
	var h *handle
	if fh != 0 {
		h = v.handle(fh)
	}
	if set&SetSize != 0 {
		if err := v.truncate(ctx, c, real, h, size); err != nil {
			return Attr{}, err
		}
	}
	rest := set &^ SetSize
	if rest == 0 {
		return v.GetAttr(ctx, ino)
	}
	if rest&SetMode != 0 && c.Uid != 0 {
		// The kernel clears setuid/setgid after a write or truncate by
		// a non-owner with a SETATTR of the mode from the writer: allow a
		// change that only drops those bits.
		cur, err := v.m.GetAttr(ctx, real)
		if err != nil {
			return Attr{}, err
		}
		if cur.Uid != c.Uid && rest&^(SetMode|SetCtime) == 0 && in.Mode != cur.Mode && in.Mode == cur.Mode&^(in.Mode^cur.Mode) && (in.Mode^cur.Mode)&^0o6000 == 0 {
			c = meta.RootCaller()
		}
	}
	a, err := v.m.SetAttr(ctx, c, real, rest, in)
	if err != nil {
		return Attr{}, err
	}
	v.sawAttr(real, &a)
	return a, nil
}

// Mknod creates a regular file, fifo, socket or device node. mode carries
// the type (S_IFMT bits) and permissions.
func (v *VFS) Mknod(ctx context.Context, c Caller, parent Ino, name string, mode, rdev uint32) (Ino, Attr, error) {
	if err := v.roErr(); err != nil {
		return 0, Attr{}, err
	}
	var typ uint8
	switch mode & syscall.S_IFMT {
	case 0, syscall.S_IFREG:
		typ = meta.TypeFile
	case syscall.S_IFIFO:
		typ = meta.TypeFIFO
	case syscall.S_IFSOCK:
		typ = meta.TypeSocket
	case syscall.S_IFCHR:
		typ = meta.TypeCharDev
	case syscall.S_IFBLK:
		typ = meta.TypeBlockDev
	case syscall.S_IFDIR:
		return v.Mkdir(ctx, c, parent, name, mode)
	default:
		return 0, Attr{}, syscall.EINVAL
	}
	ino, a, err := v.m.Mknod(ctx, c, v.in(parent), name, typ, uint16(mode&0o7777), rdev)
	if err != nil {
		return 0, Attr{}, err
	}
	return v.out(ino), a, nil
}

// Mkdir creates a directory.
func (v *VFS) Mkdir(ctx context.Context, c Caller, parent Ino, name string, mode uint32) (Ino, Attr, error) {
	if err := v.roErr(); err != nil {
		return 0, Attr{}, err
	}
	ino, a, err := v.m.Mkdir(ctx, c, v.in(parent), name, uint16(mode&0o7777))
	if err != nil {
		return 0, Attr{}, err
	}
	return v.out(ino), a, nil
}

// Symlink creates name in parent pointing to target.
func (v *VFS) Symlink(ctx context.Context, c Caller, parent Ino, name, target string) (Ino, Attr, error) {
	if err := v.roErr(); err != nil {
		return 0, Attr{}, err
	}
	ino, a, err := v.m.Symlink(ctx, c, v.in(parent), name, target)
	if err != nil {
		return 0, Attr{}, err
	}
	return v.out(ino), a, nil
}

// Readlink returns a symlink's target.
func (v *VFS) Readlink(ctx context.Context, ino Ino) (string, error) {
	return v.m.ReadLink(ctx, v.in(ino))
}

// Unlink removes a non-directory. An open file stays readable and
// writable through its handles until the last one is released.
func (v *VFS) Unlink(ctx context.Context, c Caller, parent Ino, name string) error {
	if err := v.roErr(); err != nil {
		return err
	}
	return v.m.Unlink(ctx, c, v.in(parent), name)
}

// Rmdir removes an empty directory.
func (v *VFS) Rmdir(ctx context.Context, c Caller, parent Ino, name string) error {
	if err := v.roErr(); err != nil {
		return err
	}
	if name == ".." && v.in(parent) == v.root {
		return syscall.ENOTEMPTY
	}
	return v.m.Rmdir(ctx, c, v.in(parent), name)
}

// Rename moves parent/name to newParent/newName; flags are
// meta.RenameNoReplace or meta.RenameExchange.
func (v *VFS) Rename(ctx context.Context, c Caller, parent Ino, name string, newParent Ino, newName string, flags uint32) error {
	if err := v.roErr(); err != nil {
		return err
	}
	return v.m.Rename(ctx, c, v.in(parent), name, v.in(newParent), newName, flags)
}

// Link adds the hard link newParent/newName to ino.
func (v *VFS) Link(ctx context.Context, c Caller, ino, newParent Ino, newName string) (Attr, error) {
	if err := v.roErr(); err != nil {
		return Attr{}, err
	}
	a, err := v.m.Link(ctx, c, v.in(ino), v.in(newParent), newName)
	if err != nil {
		return Attr{}, err
	}
	v.sawAttr(v.in(ino), &a)
	return a, nil
}

// Access checks mask (R_OK|W_OK|X_OK) for c on ino.
func (v *VFS) Access(ctx context.Context, c Caller, ino Ino, mask uint32) error {
	if mask&meta.W_OK != 0 && v.cfg.ReadOnly {
		return syscall.EROFS
	}
	return v.m.Access(ctx, c, v.in(ino), mask)
}

// StatFS returns the volume's capacity and usage.
func (v *VFS) StatFS(ctx context.Context) (StatFS, error) { return v.m.StatFS(ctx) }

// GetXattr returns an extended attribute (ENODATA when missing). The
// answer for security.capability of a file open here may come from the
// open file (see xattr.go).
func (v *VFS) GetXattr(ctx context.Context, c Caller, ino Ino, name string) ([]byte, error) {
	real := v.in(ino)
	of := (*openFile)(nil)
	if name == capsXattr {
		of = v.file(real)
	}
	if of == nil {
		return v.m.GetXattr(ctx, c, real, name)
	}
	if val, ok := of.cachedCaps(&c); ok {
		if val == nil {
			return nil, syscall.ENODATA
		}
		return val, nil
	}
	gen := of.capsGeneration()
	val, err := v.m.GetXattr(ctx, c, real, name)
	if err == nil || errors.Is(err, syscall.ENODATA) {
		of.rememberCaps(gen, &c, val)
	}
	return val, err
}

// ListXattr lists the names of ino's extended attributes.
func (v *VFS) ListXattr(ctx context.Context, c Caller, ino Ino) ([]string, error) {
	return v.m.ListXattr(ctx, c, v.in(ino))
}

// SetXattr sets an extended attribute; flags are meta.XattrCreate or
// meta.XattrReplace.
func (v *VFS) SetXattr(ctx context.Context, c Caller, ino Ino, name string, value []byte, flags uint32) error {
	if err := v.roErr(); err != nil {
		return err
	}
	err := v.m.SetXattr(ctx, c, v.in(ino), name, value, flags)
	v.xattrChanged(v.in(ino))
	return err
}

// RemoveXattr removes an extended attribute (ENODATA when missing).
func (v *VFS) RemoveXattr(ctx context.Context, c Caller, ino Ino, name string) error {
	if err := v.roErr(); err != nil {
		return err
	}
	err := v.m.RemoveXattr(ctx, c, v.in(ino), name)
	v.xattrChanged(v.in(ino))
	return err
}
