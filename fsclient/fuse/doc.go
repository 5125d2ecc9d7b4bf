// Package fuse serves a vfs.VFS to the kernel with go-fuse's raw API
// (fuse.RawFileSystem) and mounts it: Mount checks the mountpoint, mounts
// (mount(2) as root, fusermount3 otherwise) and serves until Unmount,
// umount(8) or skiff umount. It is the only package that imports go-fuse.
//
// # Errors
//
// This is the one place where errors become errnos (see status): a
// syscall.Errno passes through, a lost or corrupt data block is EIO logged
// loudly as data loss, cancellation (a FUSE interrupt, which ends the
// request's context) is EINTR, anything else is EIO logged once with the
// operation and inode. ENOSYS is never returned for an unknown error; the
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
