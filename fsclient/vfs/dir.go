package vfs

import (
	"context"
	"sync"
	"syscall"

	"github.com/skiff-fs/skiff/fsclient/meta"
)

// DirEntry is one entry of a directory listing. Off is the offset of the
// entry after it: pass it to ReadDir to continue there.
type DirEntry struct {
	Name string
	Ino  Ino
	Attr Attr // full attributes when read with plus, else only Typ
	Off  uint64
}

// dirHandle is an open directory. Its listing is a snapshot taken by the
// first ReadDir (and again by a ReadDir at offset 0); offsets index into
// the snapshot, so they stay valid while entries are added or removed.
type dirHandle struct {
	ino  meta.Ino // volume inode
	attr Attr     // at OpenDir: fstat of a directory removed while open
	mu   struct {
		sync.Mutex
		entries []meta.Entry
		plus    bool
		loaded  bool
	}
}

// OpenDir opens a directory for reading; c needs read permission.
func (v *VFS) OpenDir(ctx context.Context, c Caller, ino Ino) (uint64, error) {
	real := v.in(ino)
	a, err := v.m.GetAttr(ctx, real)
	if err != nil {
		return 0, err
	}
	if a.Typ != meta.TypeDir {
		return 0, syscall.ENOTDIR
	}
	if err := v.m.Access(ctx, c, real, meta.R_OK); err != nil {
		return 0, err
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	v.mu.nextFh++
	v.mu.dirs[v.mu.nextFh] = &dirHandle{ino: real, attr: a}
	return v.mu.nextFh, nil
}

// ReadDir returns the entries of directory handle fh from offset off on
// ("." and ".." first). With plus each entry has its attributes. The
// caller takes as many as fit and continues at the last one's Off.
func (v *VFS) ReadDir(ctx context.Context, fh uint64, off uint64, plus bool) ([]DirEntry, error) {
	v.mu.Lock()
	d := v.mu.dirs[fh]
	v.mu.Unlock()
	if d == nil {
		return nil, syscall.EBADF
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if !d.mu.loaded || off == 0 || (plus && !d.mu.plus) {
		if d.mu.loaded && off != 0 {
			// Attributes were not read with the snapshot: read them now,
			// keeping the offsets.
			for i := range d.mu.entries {
				e := &d.mu.entries[i]
				if a, err := v.m.GetAttr(ctx, e.Ino); err == nil {
					e.Attr = a
				}
			}
			d.mu.plus = true
		} else {
			// Permission was checked at OpenDir.
			es, err := v.m.Readdir(ctx, meta.RootCaller(), d.ino, plus)
			if err != nil {
				return nil, err
			}
			if d.ino == v.root && len(es) > 1 && es[1].Name == ".." {
				es[1].Ino = v.root
				es[1].Attr = es[0].Attr
			}
			d.mu.entries, d.mu.plus, d.mu.loaded = es, plus, true
		}
	}
	if off >= uint64(len(d.mu.entries)) {
		return nil, nil
	}
	out := make([]DirEntry, 0, uint64(len(d.mu.entries))-off)
	for i := off; i < uint64(len(d.mu.entries)); i++ {
		e := d.mu.entries[i]
		out = append(out, DirEntry{Name: e.Name, Ino: v.out(e.Ino), Attr: e.Attr, Off: i + 1})
	}
	if plus {
		for i := range out {
			if out[i].Name != "." && out[i].Name != ".." {
				v.sawAttr(v.in(out[i].Ino), &out[i].Attr)
			}
		}
	}
	return out, nil
}

// ReleaseDir closes directory handle fh.
func (v *VFS) ReleaseDir(fh uint64) {
	v.mu.Lock()
	delete(v.mu.dirs, fh)
	v.mu.Unlock()
}

// removedDir returns the attributes of ino if it is an open directory
// (which meta no longer has: it was removed while open), with no links.
func (v *VFS) removedDir(ino meta.Ino) (Attr, bool) {
	v.mu.Lock()
	defer v.mu.Unlock()
	for _, d := range v.mu.dirs {
		if d.ino == ino {
			a := d.attr
			a.Nlink = 0
			return a, true
		}
	}
	return Attr{}, false
}
