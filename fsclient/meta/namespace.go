package meta

import (
	"context"
	"encoding/binary"
	"fmt"
	"sort"
	"strconv"
	"syscall"
)

// Rename flags (Linux values).
const (
	RenameNoReplace = 1
	RenameExchange  = 2
)

// maxSymlink is the longest symlink target accepted (PATH_MAX).
const maxSymlink = 4096

// loadAttrs reads the attributes of inos in one round trip into the cache.
func (t *txn) loadAttrs(inos ...Ino) error {
	keys := make([]string, 0, len(inos))
	want := make([]Ino, 0, len(inos))
	for _, ino := range inos {
		if _, ok := t.attrs[ino]; !ok {
			keys = append(keys, inodeKey(ino))
			want = append(want, ino)
		}
	}
	if len(keys) == 0 {
		return nil
	}
	vals, err := t.tx.MGet(keys...)
	if err != nil {
		return fmt.Errorf("read inodes: %w", err)
	}
	for i, b := range vals {
		if b == nil {
			continue // attr() reports ENOENT
		}
		a, err := decodeAttr(b)
		if err != nil {
			return fmt.Errorf("inode %d: %w", want[i], err)
		}
		t.attrs[want[i]] = &a
	}
	return nil
}

// Lookup resolves name in directory parent ("." and ".." included). The
// caller needs search (x) permission on parent.
func (m *Meta) Lookup(ctx context.Context, c Caller, parent Ino, name string) (Ino, Attr, error) {
	if len(name) > 255 {
		return 0, Attr{}, syscall.ENAMETOOLONG
	}
	var ino Ino
	var attr Attr
	err := m.view(ctx, func(t *txn) error {
		if name == "." || name == ".." {
			p, err := t.dir(parent)
			if err != nil {
				return err
			}
			if err := access(p, &c, X_OK); err != nil {
				return err
			}
			ino = parent
			if name == ".." {
				ino = p.Parent
			}
			a, err := t.attr(ino)
			if err != nil {
				return err
			}
			attr = *a
			return nil
		}
		_, child, err := t.dentry(parent, name)
		if err == syscall.ENOENT {
			// Report ENOTDIR / EACCES on the parent before ENOENT.
			p, perr := t.dir(parent)
			if perr != nil {
				return perr
			}
			if perr := access(p, &c, X_OK); perr != nil {
				return perr
			}
			return err
		}
		if err != nil {
			return err
		}
		if err := t.loadAttrs(parent, child); err != nil {
			return err
		}
		p, err := t.dir(parent)
		if err != nil {
			return err
		}
		if err := access(p, &c, X_OK); err != nil {
			return err
		}
		a, err := t.attr(child)
		if err != nil {
			return err
		}
		ino, attr = child, *a
		return nil
	})
	if err != nil {
		return 0, Attr{}, wrap(err, "lookup %d/%q", parent, name)
	}
	return ino, attr, nil
}

// GetAttr returns an inode's attributes.
func (m *Meta) GetAttr(ctx context.Context, ino Ino) (Attr, error) {
	var attr Attr
	err := m.view(ctx, func(t *txn) error {
		a, err := t.attr(ino)
		if err != nil {
			return err
		}
		attr = *a
		return nil
	})
	return attr, wrap(err, "getattr %d", ino)
}

// newNode describes an inode to create.
type newNode struct {
	typ    uint8
	mode   uint16
	rdev   uint32
	target string // symlink
	open   bool   // record an open handle in the same transaction (Create)
	flags  uint32
}

// Mknod creates a file, directory, fifo, socket or device node.
func (m *Meta) Mknod(ctx context.Context, c Caller, parent Ino, name string, typ uint8, mode uint16, rdev uint32) (Ino, Attr, error) {
	if typ < TypeFile || typ > TypeSocket || typ == TypeSymlink {
		return 0, Attr{}, syscall.EINVAL
	}
	return m.mknod(ctx, c, parent, name, newNode{typ: typ, mode: mode, rdev: rdev})
}

// Mkdir creates a directory.
func (m *Meta) Mkdir(ctx context.Context, c Caller, parent Ino, name string, mode uint16) (Ino, Attr, error) {
	return m.mknod(ctx, c, parent, name, newNode{typ: TypeDir, mode: mode})
}

// Create creates a regular file and opens it, in one transaction. An
// existing name is EEXIST (O_EXCL semantics; the caller handles O_CREAT
// without O_EXCL by Lookup + Open).
func (m *Meta) Create(ctx context.Context, c Caller, parent Ino, name string, mode uint16, flags uint32) (Ino, Attr, error) {
	return m.mknod(ctx, c, parent, name, newNode{typ: TypeFile, mode: mode, open: true, flags: flags})
}

// Symlink creates a symbolic link to target.
func (m *Meta) Symlink(ctx context.Context, c Caller, parent Ino, name string, target string) (Ino, Attr, error) {
	if target == "" {
		return 0, Attr{}, syscall.ENOENT
	}
	if len(target) > maxSymlink {
		return 0, Attr{}, syscall.ENAMETOOLONG
	}
	return m.mknod(ctx, c, parent, name, newNode{typ: TypeSymlink, mode: 0o777, target: target})
}

func (m *Meta) mknod(ctx context.Context, c Caller, parent Ino, name string, n newNode) (Ino, Attr, error) {
	if err := validName(name); err != nil {
		return 0, Attr{}, err
	}
	if name == "." || name == ".." {
		return 0, Attr{}, syscall.EEXIST
	}
	if m.opts.ReadOnly {
		return 0, Attr{}, syscall.EROFS
	}
	if n.typ != TypeDir && n.typ != TypeFile && n.typ != TypeSymlink && n.typ != TypeFIFO && n.typ != TypeSocket && c.Uid != 0 {
		return 0, Attr{}, syscall.EPERM // device nodes need privilege
	}
	if n.open && m.sessionID() == 0 {
		return 0, Attr{}, errNoSession
	}
	ino, err := m.newInode(ctx)
	if err != nil {
		return 0, Attr{}, err
	}
	var of *openFile
	if n.open {
		of = m.acquire(ino)
		defer m.unacquire(ino, of)
	}
	var attr Attr
	err = m.update(ctx, func(t *txn) error {
		p, err := t.dir(parent)
		if err != nil {
			return err
		}
		if err := access(p, &c, W_OK|X_OK); err != nil {
			return err
		}
		if _, _, err := t.dentry(parent, name); err == nil {
			return syscall.EEXIST
		} else if err != syscall.ENOENT {
			return err
		}
		a := Attr{Typ: n.typ, Mode: n.mode & 0o7777, Uid: c.Uid, Gid: c.gid(), Nlink: 1, Rdev: n.rdev}
		if n.typ != TypeSymlink {
			a.Mode &^= c.Umask
		}
		if p.Mode&modeSetgid != 0 {
			a.Gid = p.Gid
			if n.typ == TypeDir {
				a.Mode |= modeSetgid
			}
		}
		if n.typ != TypeDir && a.Mode&modeSetgid != 0 && c.Uid != 0 && !c.inGroup(a.Gid) {
			a.Mode &^= modeSetgid
		}
		switch n.typ {
		case TypeDir:
			a.Nlink, a.Size, a.Parent = 2, 4096, parent
			p.Nlink++
		case TypeSymlink:
			a.Size = uint64(len(n.target))
			t.tx.Set(symlinkKey(ino), []byte(n.target))
		}
		setTime(&a.Atime, &a.Atimensec, t.now)
		t.mtime(&a)
		t.mtime(p)
		t.touch(parent)
		t.create(ino, a)
		t.tx.HSet(dirKey(parent), name, encodeDentry(n.typ, ino))
		if n.open {
			t.recordOpen(ino)
		}
		t.fx.inodes++
		attr = a
		return nil
	})
	if of != nil && err == nil {
		of.n++
		of.recorded = true
	}
	if err != nil {
		return 0, Attr{}, wrap(err, "create %d/%q", parent, name)
	}
	return ino, attr, nil
}

// ReadLink returns a symlink's target.
func (m *Meta) ReadLink(ctx context.Context, ino Ino) (string, error) {
	var target []byte
	err := m.view(ctx, func(t *txn) error {
		var err error
		target, err = t.tx.Get(symlinkKey(ino))
		if err != nil {
			return err
		}
		if target == nil {
			a, err := t.attr(ino)
			if err != nil {
				return err
			}
			if a.Typ != TypeSymlink {
				return syscall.EINVAL
			}
			return fmt.Errorf("symlink %d has no target: %w", ino, errCorrupt)
		}
		return nil
	})
	return string(target), wrap(err, "readlink %d", ino)
}

// sticky enforces the sticky bit of dir on removing or renaming child.
func sticky(c *Caller, dir, child *Attr) error {
	if dir.Mode&modeSticky != 0 && c.Uid != 0 && c.Uid != dir.Uid && c.Uid != child.Uid {
		return syscall.EPERM
	}
	return nil
}

// dropLink removes one link of a non-directory inode. When the last link
// goes, the inode is kept while some session has it open (it is freed by
// the last Release or by the cleanup of a stale session), otherwise it is
// removed and its data queued for deletion.
func (t *txn) dropLink(ino Ino, a *Attr) error {
	if a.Nlink > 0 {
		a.Nlink--
	}
	t.ctime(a)
	t.touch(ino)
	if a.Nlink > 0 {
		return nil
	}
	n, err := t.tx.HLen(openKey(ino))
	if err != nil {
		return fmt.Errorf("read open records of %d: %w", ino, err)
	}
	if n > 0 {
		return nil // kept until the last close
	}
	return t.destroy(ino, a)
}

// destroy removes an unlinked inode and queues its data for deletion.
func (t *txn) destroy(ino Ino, a *Attr) error {
	if a.Typ == TypeFile && a.Size > 0 {
		t.tx.HSet(keyDelFiles, strconv.FormatUint(uint64(ino), 10), binary.BigEndian.AppendUint64(nil, a.Size))
		t.fx.space -= usage(a.Size)
		t.fx.wake = true
	}
	if err := t.remove(ino); err != nil {
		return err
	}
	t.fx.inodes--
	return nil
}

// Unlink removes a non-directory entry.
func (m *Meta) Unlink(ctx context.Context, c Caller, parent Ino, name string) error {
	if err := validName(name); err != nil {
		return err
	}
	if name == "." || name == ".." {
		return syscall.EISDIR
	}
	err := m.update(ctx, func(t *txn) error {
		p, err := t.dir(parent)
		if err != nil {
			return err
		}
		if err := access(p, &c, W_OK|X_OK); err != nil {
			return err
		}
		typ, ino, err := t.dentry(parent, name)
		if err != nil {
			return err
		}
		if typ == TypeDir {
			return syscall.EISDIR
		}
		a, err := t.attr(ino)
		if err != nil {
			return err
		}
		if err := sticky(&c, p, a); err != nil {
			return err
		}
		t.tx.HDel(dirKey(parent), name)
		t.mtime(p)
		t.touch(parent)
		return t.dropLink(ino, a)
	})
	return wrap(err, "unlink %d/%q", parent, name)
}

// Rmdir removes an empty directory.
func (m *Meta) Rmdir(ctx context.Context, c Caller, parent Ino, name string) error {
	switch name {
	case ".":
		return syscall.EINVAL
	case "..":
		return syscall.ENOTEMPTY
	}
	if err := validName(name); err != nil {
		return err
	}
	err := m.update(ctx, func(t *txn) error {
		p, err := t.dir(parent)
		if err != nil {
			return err
		}
		if err := access(p, &c, W_OK|X_OK); err != nil {
			return err
		}
		typ, ino, err := t.dentry(parent, name)
		if err != nil {
			return err
		}
		if typ != TypeDir {
			return syscall.ENOTDIR
		}
		a, err := t.attr(ino)
		if err != nil {
			return err
		}
		if err := sticky(&c, p, a); err != nil {
			return err
		}
		if n, err := t.tx.HLen(dirKey(ino)); err != nil {
			return err
		} else if n > 0 {
			return syscall.ENOTEMPTY
		}
		t.tx.HDel(dirKey(parent), name)
		p.Nlink--
		t.mtime(p)
		t.touch(parent)
		if err := t.remove(ino); err != nil {
			return err
		}
		t.fx.inodes--
		return nil
	})
	return wrap(err, "rmdir %d/%q", parent, name)
}

// Link adds a hard link newParent/newName to ino.
func (m *Meta) Link(ctx context.Context, c Caller, ino Ino, newParent Ino, newName string) (Attr, error) {
	if err := validName(newName); err != nil {
		return Attr{}, err
	}
	if newName == "." || newName == ".." {
		return Attr{}, syscall.EEXIST
	}
	var attr Attr
	err := m.update(ctx, func(t *txn) error {
		a, err := t.attr(ino)
		if err != nil {
			return err
		}
		if a.Typ == TypeDir {
			return syscall.EPERM
		}
		p, err := t.dir(newParent)
		if err != nil {
			return err
		}
		if err := access(p, &c, W_OK|X_OK); err != nil {
			return err
		}
		if a.Nlink == 0 {
			return syscall.ENOENT
		}
		if a.Nlink == ^uint32(0) {
			return syscall.EMLINK
		}
		if _, _, err := t.dentry(newParent, newName); err == nil {
			return syscall.EEXIST
		} else if err != syscall.ENOENT {
			return err
		}
		a.Nlink++
		t.ctime(a)
		t.touch(ino)
		t.tx.HSet(dirKey(newParent), newName, encodeDentry(a.Typ, ino))
		t.mtime(p)
		t.touch(newParent)
		attr = *a
		return nil
	})
	return attr, wrap(err, "link %d to %d/%q", ino, newParent, newName)
}

// Readdir lists a directory, "." and ".." first, then entries sorted by
// name. With plus every entry carries its full attributes. The caller needs
// read permission on the directory.
func (m *Meta) Readdir(ctx context.Context, c Caller, ino Ino, plus bool) ([]Entry, error) {
	var out []Entry
	err := m.view(ctx, func(t *txn) error {
		out = out[:0]
		d, err := t.dir(ino)
		if err != nil {
			return err
		}
		if err := access(d, &c, R_OK); err != nil {
			return err
		}
		all, err := t.tx.HGetAll(dirKey(ino))
		if err != nil {
			return err
		}
		if out, err = t.dots(out, ino, d, plus); err != nil {
			return err
		}
		names := make([]string, 0, len(all))
		for name := range all {
			names = append(names, name)
		}
		sort.Strings(names)
		start := len(out)
		for _, name := range names {
			typ, child, err := decodeDentry(all[name])
			if err != nil {
				return fmt.Errorf("entry %d/%q: %w", ino, name, err)
			}
			out = append(out, Entry{Name: name, Ino: child, Attr: Attr{Typ: typ}})
		}
		if !plus {
			return nil
		}
		const batch = 512
		for i := start; i < len(out); i += batch {
			j := min(i+batch, len(out))
			inos := make([]Ino, 0, j-i)
			for _, e := range out[i:j] {
				inos = append(inos, e.Ino)
			}
			if err := t.loadAttrs(inos...); err != nil {
				return err
			}
		}
		kept := out[:start]
		for _, e := range out[start:] {
			a, err := t.attr(e.Ino)
			if err != nil {
				continue // removed concurrently (engines without snapshots)
			}
			e.Attr = *a
			kept = append(kept, e)
		}
		out = kept
		return nil
	})
	if err != nil {
		return nil, wrap(err, "readdir %d", ino)
	}
	return out, nil
}

// Rename moves srcParent/srcName to dstParent/dstName, with the Linux
// renameat2 flags RenameNoReplace and RenameExchange.
func (m *Meta) Rename(ctx context.Context, c Caller, srcParent Ino, srcName string, dstParent Ino, dstName string, flags uint32) error {
	if flags&^(RenameNoReplace|RenameExchange) != 0 || flags == RenameNoReplace|RenameExchange {
		return syscall.EINVAL
	}
	for _, n := range []string{srcName, dstName} {
		if err := validName(n); err != nil {
			return err
		}
		if n == "." || n == ".." {
			return syscall.EBUSY
		}
	}
	err := m.update(ctx, func(t *txn) error {
		return t.rename(&c, srcParent, srcName, dstParent, dstName, flags)
	})
	return wrap(err, "rename %d/%q to %d/%q", srcParent, srcName, dstParent, dstName)
}

func (t *txn) rename(c *Caller, sp Ino, sn string, dp Ino, dn string, flags uint32) error {
	spa, err := t.dir(sp)
	if err != nil {
		return err
	}
	dpa, err := t.dir(dp)
	if err != nil {
		return err
	}
	if err := access(spa, c, W_OK|X_OK); err != nil {
		return err
	}
	if err := access(dpa, c, W_OK|X_OK); err != nil {
		return err
	}
	styp, sino, err := t.dentry(sp, sn)
	if err != nil {
		return err
	}
	dtyp, dino, err := t.dentry(dp, dn)
	dexists := err == nil
	if err != nil && err != syscall.ENOENT {
		return err
	}
	switch {
	case flags&RenameExchange != 0 && !dexists:
		return syscall.ENOENT
	case flags&RenameNoReplace != 0 && dexists:
		return syscall.EEXIST
	}
	if dexists && dino == sino {
		return nil // both names are links to one inode: nothing to do
	}
	sa, err := t.attr(sino)
	if err != nil {
		return err
	}
	if err := sticky(c, spa, sa); err != nil {
		return err
	}
	var da *Attr
	if dexists {
		if da, err = t.attr(dino); err != nil {
			return err
		}
		if err := sticky(c, dpa, da); err != nil {
			return err
		}
	}
	if sp != dp {
		// A directory that changes parent has its ".." rewritten: it needs
		// write permission, and must not move into its own subtree.
		if styp == TypeDir {
			if err := access(sa, c, W_OK); err != nil {
				return err
			}
			if err := t.checkNotAncestor(sino, dp); err != nil {
				return err
			}
		}
		if flags&RenameExchange != 0 && dtyp == TypeDir {
			if err := access(da, c, W_OK); err != nil {
				return err
			}
			if err := t.checkNotAncestor(dino, sp); err != nil {
				return err
			}
		}
	}

	if flags&RenameExchange != 0 {
		t.tx.HSet(dirKey(sp), sn, encodeDentry(dtyp, dino))
		t.tx.HSet(dirKey(dp), dn, encodeDentry(styp, sino))
		if sp != dp {
			if styp == TypeDir {
				sa.Parent = dp
				spa.Nlink--
				dpa.Nlink++
			}
			if dtyp == TypeDir {
				da.Parent = sp
				dpa.Nlink--
				spa.Nlink++
			}
		}
		t.ctime(sa)
		t.ctime(da)
		t.touch(sino)
		t.touch(dino)
	} else {
		if dexists {
			if styp == TypeDir && dtyp != TypeDir {
				return syscall.ENOTDIR
			}
			if styp != TypeDir && dtyp == TypeDir {
				return syscall.EISDIR
			}
			if dtyp == TypeDir {
				n, err := t.tx.HLen(dirKey(dino))
				if err != nil {
					return err
				}
				if n > 0 {
					return syscall.ENOTEMPTY
				}
				if err := t.remove(dino); err != nil {
					return err
				}
				t.fx.inodes--
				dpa.Nlink--
			} else if err := t.dropLink(dino, da); err != nil {
				return err
			}
		}
		t.tx.HDel(dirKey(sp), sn)
		t.tx.HSet(dirKey(dp), dn, encodeDentry(styp, sino))
		if styp == TypeDir && sp != dp {
			sa.Parent = dp
			spa.Nlink--
			dpa.Nlink++
		}
		t.ctime(sa)
		t.touch(sino)
	}
	t.mtime(spa)
	t.mtime(dpa)
	t.touch(sp)
	t.touch(dp)
	return nil
}

// checkNotAncestor fails with EINVAL when dir is dst or one of dst's
// ancestors. The walk reads every directory up to the root inside the
// transaction, so a concurrent rename that would create a loop conflicts.
func (t *txn) checkNotAncestor(dir, dst Ino) error {
	for ino, steps := dst, 0; ; steps++ {
		if ino == dir {
			return syscall.EINVAL
		}
		if ino == RootIno {
			return nil
		}
		if steps > 1<<16 {
			return fmt.Errorf("directory %d: parent chain too long: %w", dst, errCorrupt)
		}
		a, err := t.attr(ino)
		if err != nil {
			return err
		}
		ino = a.Parent
	}
}

// wrap adds context to errors that are not plain POSIX outcomes.
func wrap(err error, format string, args ...any) error {
	if err == nil {
		return nil
	}
	if _, ok := err.(syscall.Errno); ok {
		return err
	}
	return fmt.Errorf("meta "+format+": %w", append(args, err)...)
}
