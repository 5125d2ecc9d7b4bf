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

// dirHandle is an open directory. Its listing is read in pages
// (meta.ReaddirPage) as the kernel asks for it: the handle holds one page,
// the offset of its first entry and the engine's cursor after it, plus
// the hashes of the names returned so far (to drop the repeats Redis's
// HSCAN may give). Offsets count entries from the start of the listing;
// the kernel continues where it stopped, inside the held page or past
// it. An offset before the held page (seekdir back) reads the listing
// again from the start. The listing is not a snapshot: entries added or
// removed while it is read may or may not appear.
type dirHandle struct {
	ino  meta.Ino // volume inode
	attr Attr     // at OpenDir: fstat of a directory removed while open
	mu   struct {
		sync.Mutex
		page   []meta.Entry // entries at offsets [base, base+len(page))
		base   uint64
		cursor string // engine cursor of the page after page
		done   bool   // page is the last one
		plus   bool   // page has attributes
		loaded bool
		seen   *meta.NameSet
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

// readDirMax is the most entries one ReadDir returns: about what one
// kernel READDIR buffer takes, so entries the caller cannot take are not
// copied again and again.
const readDirMax = 128

// ReadDir returns entries of directory handle fh from offset off on
// ("." and ".." first), at most readDirMax: the caller takes as many as
// fit and continues at the last one's Off. With plus each entry has its
// attributes.
func (v *VFS) ReadDir(ctx context.Context, fh uint64, off uint64, plus bool) ([]DirEntry, error) {
	v.mu.Lock()
	d := v.mu.dirs[fh]
	v.mu.Unlock()
	if d == nil {
		return nil, syscall.EBADF
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if !d.mu.loaded || off == 0 || off < d.mu.base {
		d.mu.page, d.mu.base, d.mu.cursor, d.mu.done = nil, 0, "", false
		d.mu.seen = meta.NewNameSet()
		if err := v.nextDirPage(ctx, d, plus); err != nil {
			return nil, err
		}
		d.mu.loaded = true
	}
	for off >= d.mu.base+uint64(len(d.mu.page)) && !d.mu.done {
		d.mu.base += uint64(len(d.mu.page))
		if err := v.nextDirPage(ctx, d, plus); err != nil {
			d.mu.loaded = false // the position is lost: start again
			return nil, err
		}
	}
	if off >= d.mu.base+uint64(len(d.mu.page)) {
		return nil, nil
	}
	if plus && !d.mu.plus {
		// The page was read without attributes: read them now, keeping
		// the offsets.
		for i := range d.mu.page {
			e := &d.mu.page[i]
			if a, err := v.m.GetAttr(ctx, e.Ino); err == nil {
				e.Attr = a
			}
		}
		d.mu.plus = true
	}
	from := off - d.mu.base
	to := min(uint64(len(d.mu.page)), from+readDirMax)
	out := make([]DirEntry, 0, to-from)
	for i := from; i < to; i++ {
		e := d.mu.page[i]
		out = append(out, DirEntry{Name: e.Name, Ino: v.out(e.Ino), Attr: e.Attr, Off: d.mu.base + i + 1})
	}
	v.dirEntriesRead.Add(int64(len(out)))
	if plus {
		for i := range out {
			if out[i].Name != "." && out[i].Name != ".." {
				v.sawAttr(v.in(out[i].Ino), &out[i].Attr)
			}
		}
	}
	return out, nil
}

// nextDirPage replaces d's page with the next one, without the names
// already returned. d.mu must be held.
func (v *VFS) nextDirPage(ctx context.Context, d *dirHandle, plus bool) error {
	first := d.mu.cursor == ""
	// Permission was checked at OpenDir.
	es, next, err := v.m.ReaddirPage(ctx, meta.RootCaller(), d.ino, plus, d.mu.cursor, meta.DirPage)
	if err != nil {
		return err
	}
	v.dirEntriesRead.Add(int64(len(es)))
	kept := es[:0]
	for i, e := range es {
		if first && i < 2 { // "." and ".."
			kept = append(kept, e)
			continue
		}
		if d.mu.seen.Add(e.Name) {
			kept = append(kept, e)
		}
	}
	if first && d.ino == v.root && len(kept) > 1 && kept[1].Name == ".." {
		kept[1].Ino = v.root
		kept[1].Attr = kept[0].Attr
	}
	d.mu.page, d.mu.cursor, d.mu.done, d.mu.plus = kept, next, next == "", plus
	return nil
}

// DirEntriesRead is how many directory entries this VFS has read from
// meta and copied out to ReadDir's callers, in total: listing a directory
// of n entries costs O(n), whatever page size the caller takes.
func (v *VFS) DirEntriesRead() int64 { return v.dirEntriesRead.Load() }

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
