package vfs

import (
	"sync"

	"github.com/skiff-fs/skiff/fsclient/meta"
)

// pageCache decides whether the kernel may keep the pages it cached of a
// file across an open (FOPEN_KEEP_CACHE). It remembers, per inode, the
// stamp (size, mtime, ctime in meta) the file had when a handle that the
// kernel saw opened and then released here was opened. A later open keeps
// the kernel's pages only when meta still shows exactly that stamp:
//
//   - The open that recorded the stamp either dropped the kernel's pages
//     (no keep) or kept pages that matched the same stamp, so every page
//     the kernel holds was read at that stamp or at a later one.
//   - Any change by any client moves ctime (and a write mtime), so a later
//     state never shows the recorded stamp again; pages read from it are
//     dropped at the next open, which no longer matches.
//   - The stamp is recorded at release, and only for a handle whose open
//     the FUSE layer answered with KeepCache's decision: an open whose
//     reply the kernel never received (a killed opener), a Create, or a
//     handle opened again for a kernel that never sent this OPEN (a
//     hand-over to a new server) cannot vouch for pages it did not make
//     the kernel drop.
//
// Writes by this client change meta as well, so the open after them drops
// the kernel's pages once (conservative: they would be current). Dropping
// a record is always safe; the map is cleared when it grows too large and
// an inode's record goes when the kernel forgets the inode.
//
// mu is a leaf lock: Release takes it under VFS.mu.
type pageCache struct {
	mu struct {
		sync.Mutex
		stamps map[meta.Ino]cacheStamp
	}
}

// maxCacheStamps bounds the records kept (about 40 bytes each).
const maxCacheStamps = 1 << 19

// cacheStamp is what identifies one state of a file's data in meta.
type cacheStamp struct {
	size         uint64
	mtime, ctime int64 // ns
}

func stampOf(a *Attr) cacheStamp {
	return cacheStamp{size: a.Size, mtime: mtimeNs(a), ctime: a.Ctime*1e9 + int64(a.Ctimensec)}
}

// keep reports whether ino's recorded stamp is s.
func (pc *pageCache) keep(ino meta.Ino, s cacheStamp) bool {
	pc.mu.Lock()
	defer pc.mu.Unlock()
	r, ok := pc.mu.stamps[ino]
	return ok && r == s
}

// record notes that the kernel's pages of ino are those of stamp s (or of
// later states).
func (pc *pageCache) record(ino meta.Ino, s cacheStamp) {
	pc.mu.Lock()
	defer pc.mu.Unlock()
	if pc.mu.stamps == nil || len(pc.mu.stamps) >= maxCacheStamps {
		pc.mu.stamps = make(map[meta.Ino]cacheStamp)
	}
	pc.mu.stamps[ino] = s
}

func (pc *pageCache) forget(ino meta.Ino) {
	pc.mu.Lock()
	defer pc.mu.Unlock()
	delete(pc.mu.stamps, ino)
}

// KeepCache reports whether the kernel may keep the pages it cached of the
// file that handle fh (just returned by Open) opened: the file is unchanged
// since a previous handle of this client was opened, by this client or any
// other (see pageCache). The caller must pass the answer to the kernel in
// its reply to the OPEN: from then on the handle vouches for the kernel's
// pages, and its release records its stamp.
func (v *VFS) KeepCache(fh uint64) bool {
	v.mu.Lock()
	defer v.mu.Unlock()
	h := v.mu.handles[fh]
	if h == nil || !h.cache.valid {
		return false
	}
	h.cache.told = true
	return h.cache.keep
}

// ForgetCache drops what vfs knows of the kernel's page cache of ino (the
// kernel forgot the inode): its next open drops any pages.
func (v *VFS) ForgetCache(ino Ino) { v.pc.forget(v.in(ino)) }

// openCache is what a file handle knows of the kernel's page cache.
type openCache struct {
	stamp cacheStamp // meta's stamp when the handle was opened
	valid bool       // stamp is set (by Open; Create leaves it unset)
	keep  bool       // the kernel may keep its pages
	told  bool       // KeepCache gave keep to the kernel (guarded by VFS.mu)
}
