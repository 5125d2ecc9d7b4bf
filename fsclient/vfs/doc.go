// Package vfs is skiff's file system over one volume, independent of the
// kernel interface: inodes as the mount shows them, open files with their
// read and write paths over meta and chunk, directory handles, locks. The
// FUSE layer (package fuse) maps kernel requests onto it; it imports no
// FUSE library.
//
// # Inodes
//
// RootIno (1) is the mount's root: the volume's root, or Config.Subdir,
// resolved once by New. The two numbers swap; every other inode number is
// the volume's. ".." of the root is the root, so a sub-directory mount
// cannot be left.
//
// # Handles and their lifetime
//
// Open, Create and Tmpfile return a file handle (fh), OpenDir a directory
// handle; both live until Release / ReleaseDir. Every file handle has one
// meta Open (or Create) and one meta Release, so an unlinked file stays
// readable and writable through its handles and meta frees its data after
// the last Release. All handles of one inode share one openFile: one
// chunk.FileReader and one chunk.FileWriter (made by the first write). The
// openFile goes away with the inode's last handle, after its writer is
// flushed and closed; errors there are logged (nobody waits for release).
//
// # Writes and reads
//
// Write buffers in the chunk writer; Flush (close(2)), Fsync, Release and
// FlushAll commit. A Read of an inode with writes not yet committed
// flushes them first, so a process always reads its own writes; GetAttr
// reports the size including them. O_APPEND writes are serialised per
// inode and go to the size this client knows. Truncate (SetAttr with
// SetSize) and Fallocate flush, change meta, and drop the reader's cached
// slice views; they exclude reads and writes of the inode meanwhile. A
// write by a non-root caller clears setuid (and setgid with group-exec).
//
// # Cache coherence
//
// vfs caches almost no metadata: every Lookup and GetAttr reads meta; the
// kernel caches for Config.AttrTimeout / EntryTimeout / DirEntryTimeout.
// For an open inode, attributes read from meta that show another size or
// mtime than this client knew (another client wrote or truncated it) drop
// the reader's cached slice views. The one exception is the
// security.capability xattr, which the kernel reads before every write:
// an open file keeps meta's answer for the caller who asked, dropped when
// this client changes the inode's xattrs, mode, owner, size or
// allocation, and when attributes read from meta show another ctime (any
// client's xattr change, chmod or chown moves it; see xattr.go). Another
// client's change is thus seen at the latest at the next open, like its
// data.
//
// The kernel's page cache of a file is dropped at an open (no
// keep-cache) unless meta shows the file with the same size, mtime and
// ctime as when an earlier handle of this client, since released, was
// opened (KeepCache; see pagecache.go): a change by any client moves
// ctime, so close-to-open consistency between clients holds while
// unchanged files keep their cached pages across opens.
//
// With Config.Images (and a block cache private to the pod) vfs keeps
// file images (package image) of files wholly in the cache: after the
// last handle of a file that is not being written here is released, or
// when a read-only open finds none, one goroutine checks that every block
// of the file is cached and copies it into an image; BuildImage does the
// same at once. Image hands a handle's image to the FUSE layer only for a
// read-only handle, of a file no handle here has open for writing and
// with no unflushed writes, whose image is of exactly the stamp (size,
// mtime, ctime) meta showed at the open. An open for writing removes the
// file's image.
//
// # Directory handles
//
// A listing is streamed: ReadDir reads the directory in pages
// (meta.ReaddirPage, meta.DirPage entries) as the kernel asks, holds one
// page per handle plus a 64-bit hash of every name returned (meta.NameSet,
// dropping the repeats Redis's HSCAN may report), and returns at most
// readDirMax entries per call, so listing n entries reads and copies O(n)
// entries (DirEntriesRead counts them). Offset i+1 follows the listing's
// entry i; offset 0 (rewinddir) or an offset before the held page starts
// the listing again. It is not a snapshot: entries added or removed while
// it runs may or may not appear; each name appears at most once.
//
// # Locks
//
// Flock, Getlk and Setlk go to meta's volume-wide lock service. vfs
// remembers which owners took locks on an open inode; Flush drops the
// POSIX locks of its lock owner and Release the flock of its owner, so
// close(2) releases them as on a local file system.
//
// # Buffers
//
// Read fills p and keeps no reference; Write copies p before returning.
// Results (Attr, DirEntry slices) belong to the caller.
//
// # Errors
//
// POSIX outcomes are syscall.Errno values; other errors are wrapped with
// context. Turning them into errnos is the FUSE layer's job.
package vfs
