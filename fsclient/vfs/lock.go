package vfs

import (
	"context"
	"syscall"

	"github.com/skiff-fs/skiff/fsclient/meta"
)

// locker is the cross-client lock service of meta (fsclient/meta/lock.go).
// It is looked up at run time so that this package builds before it lands.
type locker interface {
	Flock(ctx context.Context, ino meta.Ino, owner uint64, ltype uint32, block bool) error
	Getlk(ctx context.Context, ino meta.Ino, owner uint64, ltype *uint32, start, end *uint64, pid *uint32) error
	Setlk(ctx context.Context, ino meta.Ino, owner uint64, block bool, ltype uint32, start, end uint64, pid uint32) error
}

// Lock types (Linux values).
const (
	F_RDLCK = syscall.F_RDLCK
	F_WRLCK = syscall.F_WRLCK
	F_UNLCK = syscall.F_UNLCK
)

// MaxOffset is the end of a lock that runs to the end of the file.
const MaxOffset = 1<<63 - 1

func (v *VFS) locker() (locker, error) {
	l, ok := any(v.m).(locker)
	if !ok {
		// meta has no lock service in this build: refuse rather than
		// grant locks other clients would not see.
		return nil, syscall.ENOLCK
	}
	return l, nil
}

// Flock takes (F_RDLCK, F_WRLCK) or drops (F_UNLCK) a whole-file lock for
// owner on the file of handle fh, waiting while it conflicts when block is
// set (until ctx ends), else failing with EAGAIN.
func (v *VFS) Flock(ctx context.Context, fh uint64, owner uint64, ltype uint32, block bool) error {
	h := v.handle(fh)
	if h == nil {
		return syscall.EBADF
	}
	l, err := v.locker()
	if err != nil {
		return err
	}
	if err := l.Flock(ctx, h.ino, owner, ltype, block); err != nil {
		return err
	}
	h.of.mu.Lock()
	if h.of.mu.flock == nil {
		h.of.mu.flock = make(map[uint64]bool)
	}
	if ltype == F_UNLCK {
		delete(h.of.mu.flock, owner)
	} else {
		h.of.mu.flock[owner] = true
	}
	h.of.mu.Unlock()
	return nil
}

// Getlk tests for a POSIX record lock conflicting with the one described;
// on return ltype is F_UNLCK when there is none, else the conflicting
// lock's type, range and pid.
func (v *VFS) Getlk(ctx context.Context, fh uint64, owner uint64, ltype *uint32, start, end *uint64, pid *uint32) error {
	h := v.handle(fh)
	if h == nil {
		return syscall.EBADF
	}
	l, err := v.locker()
	if err != nil {
		return err
	}
	return l.Getlk(ctx, h.ino, owner, ltype, start, end, pid)
}

// Setlk takes or drops a POSIX record lock on [start, end] for owner.
func (v *VFS) Setlk(ctx context.Context, fh uint64, owner uint64, block bool, ltype uint32, start, end uint64, pid uint32) error {
	h := v.handle(fh)
	if h == nil {
		return syscall.EBADF
	}
	l, err := v.locker()
	if err != nil {
		return err
	}
	if err := l.Setlk(ctx, h.ino, owner, block, ltype, start, end, pid); err != nil {
		return err
	}
	if ltype != F_UNLCK {
		h.of.mu.Lock()
		if h.of.mu.posix == nil {
			h.of.mu.posix = make(map[uint64]bool)
		}
		h.of.mu.posix[owner] = true
		h.of.mu.Unlock()
	}
	return nil
}

// unlockPosix drops every POSIX lock owner holds on the file, if it took
// one here.
func (v *VFS) unlockPosix(ctx context.Context, of *openFile, owner uint64) error {
	return v.unlockHeld(of, func() map[uint64]bool { return of.mu.posix }, owner,
		func(l locker) error { return l.Setlk(ctx, of.ino, owner, false, F_UNLCK, 0, MaxOffset, 0) })
}

// unlockFlock drops owner's flock of the file, if it took one here.
func (v *VFS) unlockFlock(ctx context.Context, of *openFile, owner uint64) error {
	return v.unlockHeld(of, func() map[uint64]bool { return of.mu.flock }, owner,
		func(l locker) error { return l.Flock(ctx, of.ino, owner, F_UNLCK, false) })
}

// unlockHeld forgets that owner holds a lock recorded in held (read under
// of.mu) and, if it did, releases it in meta with unlock.
func (v *VFS) unlockHeld(of *openFile, held func() map[uint64]bool, owner uint64, unlock func(locker) error) error {
	of.mu.Lock()
	m := held()
	had := m[owner]
	delete(m, owner)
	of.mu.Unlock()
	if !had {
		return nil
	}
	l, err := v.locker()
	if err != nil {
		return err
	}
	return unlock(l)
}
