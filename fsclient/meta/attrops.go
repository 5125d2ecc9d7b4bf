package meta

import (
	"context"
	"sort"
	"syscall"
)

// SetAttr flags: which fields of Attr to apply (FUSE FATTR_* values).
// The size is changed with Truncate, not SetAttr.
const (
	SetMode     = 1 << 0
	SetUID      = 1 << 1
	SetGID      = 1 << 2
	SetAtime    = 1 << 4
	SetMtime    = 1 << 5
	SetAtimeNow = 1 << 7
	SetMtimeNow = 1 << 8
	SetCtime    = 1 << 10
)

// SetAttr changes mode, owner and times following Linux rules: chmod by
// the owner or root (a non-root caller outside the file's group loses
// setgid); chown of the uid by root only, chgrp by the owner to one of its
// groups; chown clears setuid, and setgid when group-exec is set, on
// non-directories; explicit times need ownership, "now" times need
// ownership or write permission.
func (m *Meta) SetAttr(ctx context.Context, c Caller, ino Ino, set uint32, in Attr) (Attr, error) {
	var attr Attr
	err := m.update(ctx, func(t *txn) error {
		a, err := t.attr(ino)
		if err != nil {
			return err
		}
		owner := c.Uid == 0 || c.Uid == a.Uid
		if set&(SetUID|SetGID) != 0 {
			if set&SetUID != 0 && in.Uid != a.Uid && c.Uid != 0 {
				return syscall.EPERM
			}
			if set&SetGID != 0 && in.Gid != a.Gid && c.Uid != 0 && (c.Uid != a.Uid || !c.inGroup(in.Gid)) {
				return syscall.EPERM
			}
			if set&SetUID != 0 && in.Uid == a.Uid && !owner {
				return syscall.EPERM
			}
			if set&SetGID != 0 && in.Gid == a.Gid && !owner {
				return syscall.EPERM
			}
			if set&SetUID != 0 {
				a.Uid = in.Uid
			}
			if set&SetGID != 0 {
				a.Gid = in.Gid
			}
			if a.Typ != TypeDir {
				a.Mode &^= modeSetuid
				if a.Mode&0o010 != 0 {
					a.Mode &^= modeSetgid
				}
			}
		}
		if set&SetMode != 0 {
			if !owner {
				return syscall.EPERM
			}
			mode := in.Mode & 0o7777
			if c.Uid != 0 && !c.inGroup(a.Gid) {
				mode &^= modeSetgid
			}
			a.Mode = mode
		}
		if set&(SetAtime|SetMtime) != 0 && !owner {
			return syscall.EPERM
		}
		if set&(SetAtimeNow|SetMtimeNow) != 0 && !owner {
			if err := access(a, &c, W_OK); err != nil {
				return err
			}
		}
		switch {
		case set&SetAtimeNow != 0:
			setTime(&a.Atime, &a.Atimensec, t.now)
		case set&SetAtime != 0:
			a.Atime, a.Atimensec = in.Atime, in.Atimensec%1e9
		}
		switch {
		case set&SetMtimeNow != 0:
			setTime(&a.Mtime, &a.Mtimensec, t.now)
		case set&SetMtime != 0:
			a.Mtime, a.Mtimensec = in.Mtime, in.Mtimensec%1e9
		}
		if set&SetCtime != 0 {
			a.Ctime, a.Ctimensec = in.Ctime, in.Ctimensec%1e9
		} else {
			t.ctime(a)
		}
		t.touch(ino)
		attr = *a
		return nil
	})
	return attr, wrap(err, "setattr %d", ino)
}

// Access checks mask (R_OK|W_OK|X_OK) for c on ino.
func (m *Meta) Access(ctx context.Context, c Caller, ino Ino, mask uint32) error {
	a, err := m.GetAttr(ctx, ino)
	if err != nil {
		return err
	}
	if mask&W_OK != 0 && m.opts.ReadOnly {
		return syscall.EROFS
	}
	return access(&a, &c, mask)
}

// Xattr flags (Linux values).
const (
	XattrCreate  = 1
	XattrReplace = 2
)

const (
	maxXattrName  = 255
	maxXattrValue = 64 << 10
)

// MaxXattrBytes caps the extended attributes of one inode: their names
// and values together. A SetXattr that would grow them past it fails with
// ENOSPC. The bytes count toward the volume's used space (StatFS) until
// the attribute or the inode is removed.
const MaxXattrBytes = 128 << 10

// xattrBytes is what the attributes in x take toward MaxXattrBytes.
func xattrBytes(x map[string][]byte) int64 {
	var n int64
	for k, v := range x {
		n += int64(len(k) + len(v))
	}
	return n
}

// xattrPerm checks the permission to read (W_OK=false) or change an
// extended attribute: user.* follows the file mode, trusted.* and
// security.* changes need root.
func xattrPerm(a *Attr, c *Caller, name string, write bool) error {
	switch {
	case len(name) >= 8 && name[:8] == "trusted.":
		if c.Uid != 0 {
			return syscall.EPERM
		}
		return nil
	case len(name) >= 5 && name[:5] == "user.":
		if a.Typ != TypeFile && a.Typ != TypeDir {
			return syscall.EPERM
		}
	}
	if write {
		return access(a, c, W_OK)
	}
	return access(a, c, R_OK)
}

func validXattrName(name string) error {
	switch {
	case name == "":
		return syscall.EINVAL
	case len(name) > maxXattrName:
		return syscall.ERANGE
	}
	return nil
}

// GetXattr returns an extended attribute; ENODATA when missing.
func (m *Meta) GetXattr(ctx context.Context, c Caller, ino Ino, name string) ([]byte, error) {
	if err := validXattrName(name); err != nil {
		return nil, err
	}
	var v []byte
	err := m.view(ctx, func(t *txn) error {
		a, err := t.attr(ino)
		if err != nil {
			return err
		}
		if err := xattrPerm(a, &c, name, false); err != nil {
			return err
		}
		v, err = t.tx.HGet(xattrKey(ino), name)
		if err != nil {
			return err
		}
		if v == nil {
			return syscall.ENODATA
		}
		return nil
	})
	if err != nil {
		return nil, wrap(err, "getxattr %d %q", ino, name)
	}
	return v, nil
}

// SetXattr sets an extended attribute. XattrCreate fails with EEXIST on an
// existing name, XattrReplace with ENODATA on a missing one.
func (m *Meta) SetXattr(ctx context.Context, c Caller, ino Ino, name string, value []byte, flags uint32) error {
	if err := validXattrName(name); err != nil {
		return err
	}
	if len(value) > maxXattrValue {
		return syscall.E2BIG
	}
	if flags&^(XattrCreate|XattrReplace) != 0 || flags == XattrCreate|XattrReplace {
		return syscall.EINVAL
	}
	err := m.update(ctx, func(t *txn) error {
		a, err := t.attr(ino)
		if err != nil {
			return err
		}
		if err := xattrPerm(a, &c, name, true); err != nil {
			return err
		}
		all, err := t.tx.HGetAll(xattrKey(ino))
		if err != nil {
			return err
		}
		old, had := all[name]
		if flags == XattrCreate && had {
			return syscall.EEXIST
		}
		if flags == XattrReplace && !had {
			return syscall.ENODATA
		}
		total := xattrBytes(all)
		grown := total + int64(len(name)+len(value))
		if had {
			grown -= int64(len(name) + len(old))
		}
		if grown > MaxXattrBytes && grown > total {
			return syscall.ENOSPC
		}
		t.fx.space += grown - total
		t.tx.HSet(xattrKey(ino), name, append([]byte{}, value...))
		t.ctime(a)
		t.touch(ino)
		return nil
	})
	return wrap(err, "setxattr %d %q", ino, name)
}

// ListXattr returns the names of an inode's extended attributes, sorted.
func (m *Meta) ListXattr(ctx context.Context, c Caller, ino Ino) ([]string, error) {
	var names []string
	err := m.view(ctx, func(t *txn) error {
		if _, err := t.attr(ino); err != nil {
			return err
		}
		all, err := t.tx.HGetAll(xattrKey(ino))
		if err != nil {
			return err
		}
		names = names[:0]
		for n := range all {
			if len(n) >= 8 && n[:8] == "trusted." && c.Uid != 0 {
				continue
			}
			names = append(names, n)
		}
		return nil
	})
	if err != nil {
		return nil, wrap(err, "listxattr %d", ino)
	}
	sort.Strings(names)
	return names, nil
}

// RemoveXattr removes an extended attribute; ENODATA when missing.
func (m *Meta) RemoveXattr(ctx context.Context, c Caller, ino Ino, name string) error {
	if err := validXattrName(name); err != nil {
		return err
	}
	err := m.update(ctx, func(t *txn) error {
		a, err := t.attr(ino)
		if err != nil {
			return err
		}
		if err := xattrPerm(a, &c, name, true); err != nil {
			return err
		}
		old, err := t.tx.HGet(xattrKey(ino), name)
		if err != nil {
			return err
		}
		if old == nil {
			return syscall.ENODATA
		}
		t.fx.space -= int64(len(name) + len(old))
		t.tx.HDel(xattrKey(ino), name)
		t.ctime(a)
		t.touch(ino)
		return nil
	})
	return wrap(err, "removexattr %d %q", ino, name)
}
