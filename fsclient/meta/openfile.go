package meta

import (
	"context"
	"sync"
	"syscall"
)

// openFile counts this client's open handles of one inode. mu serialises
// the first open and the last release of the inode, which write the
// session's open record; Meta.open's mutex is taken before mu, never after.
type openFile struct {
	mu       sync.Mutex
	refs     int  // goroutines holding this struct (guarded by Meta.open)
	n        int  // open handles (guarded by mu)
	recorded bool // the session's open record exists in the engine
}

// acquire returns ino's openFile, locked.
func (m *Meta) acquire(ino Ino) *openFile {
	m.open.Lock()
	of := m.open.files[ino]
	if of == nil {
		of = &openFile{}
		m.open.files[ino] = of
	}
	of.refs++
	m.open.Unlock()
	of.mu.Lock()
	return of
}

// unacquire unlocks of and forgets it when nobody holds or has it open.
func (m *Meta) unacquire(ino Ino, of *openFile) {
	n := of.n
	of.mu.Unlock()
	m.open.Lock()
	of.refs--
	if of.refs == 0 && n == 0 && m.open.files[ino] == of {
		delete(m.open.files, ino)
	}
	m.open.Unlock()
}

// openMask turns open(2) flags into an access mask.
func openMask(flags uint32) uint32 {
	var mask uint32
	switch flags & syscall.O_ACCMODE {
	case syscall.O_RDONLY:
		mask = R_OK
	case syscall.O_WRONLY:
		mask = W_OK
	case syscall.O_RDWR:
		mask = R_OK | W_OK
	}
	if flags&syscall.O_TRUNC != 0 {
		mask |= W_OK
	}
	return mask
}

// Open checks that c may open ino with flags and records the open handle:
// the first open of a regular file by this session is written to the
// engine, so that the file survives an unlink until its last Release (or
// the end of the session). Every successful Open needs one Release.
func (m *Meta) Open(ctx context.Context, c Caller, ino Ino, flags uint32) (Attr, error) {
	mask := openMask(flags)
	if m.opts.ReadOnly && mask&W_OK != 0 {
		return Attr{}, syscall.EROFS
	}
	sid := m.sessionID()
	if sid == 0 && !m.opts.ReadOnly {
		return Attr{}, errNoSession
	}
	of := m.acquire(ino)
	defer m.unacquire(ino, of)
	var attr Attr
	check := func(t *txn) (*Attr, error) {
		a, err := t.attr(ino)
		if err != nil {
			return nil, err
		}
		if a.Typ == TypeDir && mask&W_OK != 0 {
			return nil, syscall.EISDIR
		}
		if err := access(a, &c, mask); err != nil {
			return nil, err
		}
		return a, nil
	}
	if of.n > 0 || m.opts.ReadOnly {
		err := m.view(ctx, func(t *txn) error {
			a, err := check(t)
			if err == nil {
				attr = *a
			}
			return err
		})
		if err != nil {
			return Attr{}, wrap(err, "open %d", ino)
		}
		of.n++
		return attr, nil
	}
	var recorded bool
	err := m.update(ctx, func(t *txn) error {
		a, err := check(t)
		if err != nil {
			return err
		}
		if a.Nlink == 0 {
			n, err := t.tx.HLen(openKey(ino))
			if err != nil {
				return err
			}
			if n == 0 {
				return syscall.ENOENT // being deleted
			}
		}
		// Every non-directory is recorded: the kernel opens special nodes
		// without FUSE, so vfs holds them open while it references them.
		recorded = a.Typ != TypeDir
		if recorded {
			t.recordOpen(ino)
		}
		attr = *a
		return nil
	})
	if err != nil {
		return Attr{}, wrap(err, "open %d", ino)
	}
	of.n++
	of.recorded = recorded
	return attr, nil
}

// Release closes one handle opened by Open or Create. The last release of
// an unlinked file by the last session that has it open deletes the inode
// and queues its data for deletion.
func (m *Meta) Release(ctx context.Context, ino Ino) error {
	of := m.acquire(ino)
	defer m.unacquire(ino, of)
	if of.n == 0 {
		return syscall.EBADF
	}
	of.n--
	if of.n > 0 || !of.recorded {
		return nil
	}
	of.recorded = false
	sid := m.sessionID()
	if sid == 0 {
		return nil // the session ended and released every record
	}
	// On failure the record stays until the session ends, which frees it.
	err := m.update(ctx, func(t *txn) error { return t.unrecordOpen(sid, ino) })
	return wrap(err, "release %d", ino)
}
