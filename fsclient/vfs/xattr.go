package vfs

import (
	"slices"

	"github.com/skiff-fs/skiff/fsclient/meta"
)

// capsXattr is the extended attribute the kernel reads before every
// write(2) and truncate, to learn whether file capabilities must be
// removed (file_remove_privs). Through FUSE each such read is a GETXATTR
// request, so without a cache every 1 MiB write of a sequential writer
// costs a metadata read (two round trips on Redis).
//
// An open file keeps meta's last answer for it (value or ENODATA), for
// the caller identity (uid and groups) it was checked for: permission to
// read it depends on the caller and on the file's owner and mode. The
// answer is dropped whenever this client learns the file may have
// changed:
//
//   - attributes read from meta (open, lookup, getattr, readdirplus,
//     setattr) show another ctime than seen last: setting or removing an
//     xattr, chmod and chown by any client move ctime;
//   - this client sets or removes an xattr of the inode (after meta
//     answered, whatever the outcome), truncates or fallocates it, or
//     clears setuid/setgid before a write.
//
// A fetch that raced with a drop is not kept (capsGen). So another
// client's change is seen at the latest at this client's next open of
// the file, as for data (close-to-open), and earlier whenever the kernel
// refreshes the attributes.
const capsXattr = "security.capability"

// capsAnswer is meta's answer for capsXattr, for one caller identity.
type capsAnswer struct {
	uid  uint32
	gids []uint32
	val  []byte // nil: ENODATA
}

func sameCaller(a *capsAnswer, c *Caller) bool {
	return a.uid == c.Uid && slices.Equal(a.gids, c.Gids)
}

// cachedCaps returns the kept answer for c (nil: ENODATA), if any. The
// value is a copy.
func (of *openFile) cachedCaps(c *Caller) ([]byte, bool) {
	of.mu.Lock()
	defer of.mu.Unlock()
	a := of.mu.caps
	if a == nil || !sameCaller(a, c) {
		return nil, false
	}
	return slices.Clone(a.val), true
}

// capsGeneration is taken before asking meta; rememberCaps keeps the
// answer only if nothing dropped the cache meanwhile.
func (of *openFile) capsGeneration() uint64 {
	of.mu.Lock()
	defer of.mu.Unlock()
	return of.mu.capsGen
}

func (of *openFile) rememberCaps(gen uint64, c *Caller, val []byte) {
	of.mu.Lock()
	defer of.mu.Unlock()
	if of.mu.capsGen != gen {
		return
	}
	of.mu.caps = &capsAnswer{uid: c.Uid, gids: slices.Clone(c.Gids), val: slices.Clone(val)}
}

func (of *openFile) dropCapsLocked() {
	of.mu.caps = nil
	of.mu.capsGen++
}

// xattrChanged drops the kept xattr answers of ino after this client
// changed (or tried to change) one of its xattrs.
func (v *VFS) xattrChanged(ino meta.Ino) {
	if of := v.file(ino); of != nil {
		of.mu.Lock()
		of.dropCapsLocked()
		of.mu.Unlock()
	}
}
