package vfs

import (
	"context"
	"sync"
	"syscall"

	"github.com/skiff-fs/skiff/fsclient/meta"
)

// The kernel opens FIFOs, sockets and device nodes without a FUSE open, so
// meta would not know such a node is in use and would remove it at its
// last unlink while a process still holds it open (fstat then fails with
// ENOENT). vfs therefore keeps a meta open record for every special node
// the kernel knows (between the first lookup that returned it and the
// forget that drops the last reference), as JuiceFS and the kernel's own
// file systems keep an inode while it is referenced.

// specials counts the kernel's references to special nodes. Guarded by its
// own mutex; it never calls meta while holding it.
type specials struct {
	mu   sync.Mutex
	refs map[meta.Ino]uint64
}

func isSpecial(typ uint8) bool {
	switch typ {
	case meta.TypeFIFO, meta.TypeSocket, meta.TypeCharDev, meta.TypeBlockDev:
		return true
	}
	return false
}

// Referenced records that the kernel took one more reference to ino (an
// entry it was given by lookup, mknod, link or readdirplus). For special
// nodes the first reference opens the node in meta so an unlink keeps it.
func (v *VFS) Referenced(ctx context.Context, ino Ino, a *Attr) {
	if !isSpecial(a.Typ) || v.cfg.ReadOnly {
		return
	}
	real := v.in(ino)
	v.sp.mu.Lock()
	if v.sp.refs == nil {
		v.sp.refs = make(map[meta.Ino]uint64)
	}
	v.sp.refs[real]++
	first := v.sp.refs[real] == 1
	v.sp.mu.Unlock()
	if first {
		if _, err := v.m.Open(ctx, meta.RootCaller(), real, syscall.O_RDONLY); err != nil {
			v.log.Warn("keep special node while the kernel references it", "ino", real, "err", err)
		}
	}
}

// Forget drops n of the kernel's references to ino; when the last goes,
// a special node's open record is released (and the node removed if it
// was unlinked meanwhile).
func (v *VFS) Forget(ctx context.Context, ino Ino, n uint64) {
	real := v.in(ino)
	v.sp.mu.Lock()
	refs, ok := v.sp.refs[real]
	last := ok && refs <= n
	if last {
		delete(v.sp.refs, real)
	} else if ok {
		v.sp.refs[real] = refs - n
	}
	v.sp.mu.Unlock()
	if last {
		if err := v.m.Release(ctx, real); err != nil {
			v.log.Warn("release special node", "ino", real, "err", err)
		}
	}
}
