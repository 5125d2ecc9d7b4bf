// Package fuse serves a vfs.VFS to the kernel with go-fuse's raw API
// (fuse.RawFileSystem) and mounts it: Mount checks the mountpoint, mounts
// (mount(2) as root, fusermount3 otherwise) and serves until Unmount,
// umount(8) or skiff umount. It is the only package that imports go-fuse.
//
// # Errors
//
// This is the one place where errors become errnos (see status), and
// only file-system errnos reach applications: a syscall.Errno passes
// through when it is a file-system outcome (ENOENT, EACCES, ENOSPC,
// EDQUOT, ...) and does not come from a socket; a lost or corrupt data
// block is EIO logged loudly as data loss; cancellation (a FUSE
// interrupt, which ends the request's context) is EINTR; an expired
// context deadline is ETIMEDOUT; anything else — network errnos
// (ECONNREFUSED, ECONNRESET, EPIPE, ENETUNREACH, EHOSTUNREACH, a socket's
// ETIMEDOUT), any errno inside a net.OpError, an unreachable or hung
// Redis — is EIO logged once with the operation and inode. ENOSYS is never returned for an unknown error; the
// operations skiff does not implement (statx, ioctl, writev) answer ENOSYS
// from go-fuse's default, which makes the kernel fall back or give up
// cleanly.
//
// # Callers
//
// Each request is checked as the calling process: uid and gid from the
// request header, supplementary groups from /proc/<pid>/status (cached for
// a second per pid; only the primary group when unreadable, e.g. a pid in
// another namespace), umask from create, mkdir and mknod requests.
// The supplementary groups serve the rules meta keeps (see Permissions);
// the kernel's own checks use the process's real groups.
//
// # Permissions
//
// Every mount, Mount's and a supervisor's, has default_permissions: the
// kernel checks the mode bits (read, write, search; owner, group and
// supplementary groups, capabilities) with the caller's real credentials
// before it sends a request, and also where it sends none: opening a
// FIFO, socket or device node, and walking entries it has cached. skiff
// alone could not: it is not asked then, so a user denied a moment ago
// would get in through the kernel's caches. Requests carry
// vfs.Caller.KernelChecked, and meta skips the mode checks the kernel
// made; it keeps the rules the kernel judges from attributes that may be
// stale or does not know: sticky directories, the owner rules of chmod,
// chown and utimes, clearing setgid, device nodes only for root.
// ServeConn does the same only when its owner says the connection was
// mounted so (ConnOptions.KernelChecksPermissions); otherwise meta checks
// everything. The kernel refreshes the attributes it checks once the
// attribute timeout (vfs.Config.AttrTimeout, 1 s) has passed, so a chmod
// or chown by another client of the volume takes effect here within it;
// one through this mount at once.
//
// # Caching
//
// Entries and attributes are given to the kernel with the VFS's timeouts;
// failed lookups are not cached (another client may create the name).
// An open keeps the kernel's page cache of the file (FOPEN_KEEP_CACHE)
// only when vfs finds the file unchanged in meta since an earlier open of
// this client (vfs.KeepCache); otherwise the kernel drops it, so a change
// by another client is read after the next open. The kernel's
// auto-invalidation of cached data on mtime or size change stays on.
//
// # Read-ahead and the kernel's page cache
//
// READ and WRITE requests carry up to 1 MiB (MaxWrite, and so the
// kernel's max_pages, is 1 MiB). The kernel's read-ahead window decides
// how many of them a sequential reader keeps in flight: its default for
// FUSE is 128 KiB, and FUSE INIT can only lower it, so Mount raises it on
// the mount's backing device afterwards (SetReadAhead; Options.
// MaxReadAhead, default DefaultReadAhead = 4 MiB). Measured on kernel
// 6.18, 2 vCPUs shared with other work, a 1 GiB file read with dd bs=1M
// from skiff's disk cache after dropping the page cache, medians of 5
// alternating runs: 1.52 s and 1.24 CPU-s of skiff at 128 KiB, 1.09 s
// and 0.95 CPU-s at 4 MiB (local disk: 0.95 s). Windows from 1 MiB to
// 16 MiB cost the same CPU (0.92-1.03 s per GiB): what the small window
// costs is eight times as many 128 KiB requests. MaxBackground (64) and
// the congestion threshold (48) do not bind: with 4 MiB, fusectl's
// waiting count of one sequential reader never exceeded eight.
//
// Re-reading a file still in the page cache sends no request to skiff,
// yet runs at about half the speed of ext4 (7.0-7.5 GB/s against
// 13.7-16 GB/s for 1 GiB on the same machine). The bound is the kernel:
// on 6.18 FUSE caches files in 4 KiB folios only (the
// mm_filemap_add_to_page_cache tracepoint shows order 0 for every page
// of the mount, where ext4 adds order-9 folios), so filemap_read walks
// 512 times as many folios (filemap_get_read_batch takes 15% of the
// reader's time against 1% on ext4, and copying 4 KiB pages is slower
// than 2 MiB ones). Kernels with "fuse: enable large folios" give FUSE
// files folios up to max_pages (1 MiB here) when the writeback cache is
// off, as it is for skiff; nothing changes on skiff's side for that.
//
// ServeConn does not mount, so it cannot set the window: the owner of the
// connection calls SetReadAhead once the kernel has the answer to INIT.
//
// # Passthrough
//
// With Options.Passthrough (skiff mount's default; Linux 6.9 or later,
// as root) a read-only open of a file that has a file image (a whole-file
// copy in the block cache's file system that vfs builds once every block
// of the file is cached; vfs.Image) is answered with FOPEN_PASSTHROUGH:
// the kernel reads the image itself, page cache, read-ahead and O_DIRECT
// included, and no READ reaches skiff. The image is of the state of the
// file meta showed at the open, so close-to-open consistency between
// clients holds as for the page cache. While passthrough readers of a file
// are open, an open of it for writing fails with ETXTBSY (the kernel
// would send a shared writable mapping of it to the image, where skiff
// never sees it); see passthrough.go for the kernel's rules. The ioctl
// IoctlBuildImage makes a mount build a file's image now (skiff warmup
// sends it). ServeConn never uses passthrough: backing files are the
// connection's, and a worker that dies cannot hand them on.
//
// # Observing
//
// Options.Observer (an OpObserver) is told of every operation served,
// by Mount and ServeConn alike: its lower-case name (Ops lists them),
// the time spent serving it and its errno (0 on success). A WRITE is
// reported once, as "write". Without an observer the file system is not
// wrapped at all.
//
// # Lifetime
//
// Forget tells vfs that the kernel's pages of the inode may be gone
// (vfs.ForgetCache) and drops the kernel's references: vfs counts them
// only for special nodes (FIFOs, sockets, devices), which the kernel opens
// without FUSE, and keeps those open in meta while referenced so an unlink
// does not remove a node still in use (vfs.Referenced/Forget). Inode
// numbers are never reused. Release runs to completion under a background context
// because the kernel does not wait for it. Request buffers belong to
// go-fuse: nothing keeps a reference after a method returns.
package fuse
