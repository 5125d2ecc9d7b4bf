package meta

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"strconv"
	"syscall"
	"time"

	"github.com/skiff-fs/skiff/fsclient/slice"
)

// ErrChunkChanged is returned (wrapped) by CompactChunk when the chunk's
// record list no longer starts with the records the caller compacted.
var ErrChunkChanged = errors.New("chunk changed since it was read")

// Fallocate modes (Linux values).
const (
	FallocKeepSize  = 1
	FallocPunchHole = 2
)

// maxFileSize is the largest size a file can have.
const maxFileSize = uint64(slice.ChunkSize) << 32

// ReadChunk returns the slice records of one chunk in write order (nil for
// a chunk never written). slice.Resolve turns them into the visible map.
func (m *Meta) ReadChunk(ctx context.Context, ino Ino, chunk uint32) ([]slice.Slice, error) {
	var ss []slice.Slice
	err := m.view(ctx, func(t *txn) error {
		b, err := t.tx.Get(chunkKey(ino, chunk))
		if err != nil {
			return err
		}
		if b == nil {
			// Tell a missing file from a sparse chunk.
			if _, err := t.attr(ino); err != nil {
				return err
			}
			ss = nil
			return nil
		}
		ss, err = slice.Decode(b)
		return err
	})
	if err != nil {
		return nil, wrap(err, "read chunk %d of inode %d", chunk, ino)
	}
	return ss, nil
}

// WriteChunk appends the record s to a chunk's list (after every block of
// the slice is stored), extends the file size to cover it and sets mtime.
func (m *Meta) WriteChunk(ctx context.Context, ino Ino, chunk uint32, s slice.Slice, mtime time.Time) error {
	if err := s.Valid(); err != nil {
		return fmt.Errorf("meta write chunk %d of inode %d: %w", chunk, ino, err)
	}
	// Committed or failed, this client commits s no more: it leaves the
	// session's slice floor.
	defer m.flight.done(s.ID)
	err := m.update(ctx, func(t *txn) error {
		a, err := t.attr(ino)
		if err != nil {
			return err
		}
		if err := fileOnly(a); err != nil {
			return err
		}
		t.tx.Append(chunkKey(ino, chunk), s.Append(nil))
		if end := uint64(chunk)*slice.ChunkSize + uint64(s.End()); end > a.Size {
			t.fx.space += usage(end) - usage(a.Size)
			a.Size = end
		}
		setTime(&a.Mtime, &a.Mtimensec, mtime)
		setTime(&a.Ctime, &a.Ctimensec, mtime)
		t.touch(ino)
		return nil
	})
	return wrap(err, "write chunk %d of inode %d", chunk, ino)
}

func fileOnly(a *Attr) error {
	switch a.Typ {
	case TypeFile:
		return nil
	case TypeDir:
		return syscall.EISDIR
	default:
		return syscall.EINVAL
	}
}

// Truncate sets a regular file's size. Shrinking drops whole chunks past
// the new end (their slices are freed after SliceFreeDelay) and appends a
// hole record over the rest of the old data in the boundary chunk, so the
// old bytes never reappear when the file grows again. Growing only sets the
// size: the new range reads as zeros.
func (m *Meta) Truncate(ctx context.Context, c Caller, ino Ino, size uint64) (Attr, error) {
	if size > maxFileSize {
		return Attr{}, syscall.EFBIG
	}
	var attr Attr
	err := m.update(ctx, func(t *txn) error {
		a, err := t.attr(ino)
		if err != nil {
			return err
		}
		if err := fileOnly(a); err != nil {
			return err
		}
		if err := access(a, &c, W_OK); err != nil {
			return err
		}
		if size < a.Size {
			if err := t.dropAfter(ino, a.Size, size); err != nil {
				return err
			}
		}
		t.fx.space += usage(size) - usage(a.Size)
		a.Size = size
		if c.Uid != 0 { // as Linux: a change by a non-root caller kills setuid/setgid
			a.Mode &^= modeSetuid
			if a.Mode&0o010 != 0 {
				a.Mode &^= modeSetgid
			}
		}
		t.mtime(a)
		t.touch(ino)
		attr = *a
		return nil
	})
	return attr, wrap(err, "truncate %d to %d", ino, size)
}

// dropAfter removes file data in [size, old).
func (t *txn) dropAfter(ino Ino, old, size uint64) error {
	first := (size + slice.ChunkSize - 1) / slice.ChunkSize // first chunk wholly past the end
	last := (old + slice.ChunkSize - 1) / slice.ChunkSize
	due := t.now.Add(t.m.opts.SliceFreeDelay)
	const batch = 256
	for i := first; i < last; i += batch {
		j := min(i+batch, last)
		keys := make([]string, 0, j-i)
		for k := i; k < j; k++ {
			keys = append(keys, chunkKey(ino, uint32(k)))
		}
		vals, err := t.tx.MGet(keys...)
		if err != nil {
			return err
		}
		for k, b := range vals {
			if b == nil {
				continue
			}
			ss, err := slice.Decode(b)
			if err != nil {
				return fmt.Errorf("%s: %w", keys[k], err)
			}
			t.queueSlices(ss, due)
			t.tx.Delete(keys[k])
		}
	}
	if off := uint32(size % slice.ChunkSize); off != 0 {
		// Hide the old data past the new end in the boundary chunk.
		key := chunkKey(ino, uint32(size/slice.ChunkSize))
		b, err := t.tx.Get(key)
		if err != nil {
			return err
		}
		ss, err := slice.Decode(b)
		if err != nil {
			return fmt.Errorf("%s: %w", key, err)
		}
		var end uint32
		for _, s := range ss {
			end = max(end, s.End())
		}
		if end > off {
			t.tx.Append(key, slice.Slice{Pos: off, Len: end - off}.Append(nil))
		}
	}
	return nil
}

// Fallocate allocates (mode 0: extends the size), or with
// FallocPunchHole|FallocKeepSize punches a hole (appends hole records).
func (m *Meta) Fallocate(ctx context.Context, c Caller, ino Ino, mode uint8, off, length uint64) error {
	switch {
	case mode&^(FallocKeepSize|FallocPunchHole) != 0:
		return syscall.EOPNOTSUPP
	case mode&FallocPunchHole != 0 && mode&FallocKeepSize == 0:
		return syscall.EOPNOTSUPP
	case length == 0:
		return syscall.EINVAL
	case off > maxFileSize || length > maxFileSize-off:
		return syscall.EFBIG
	}
	err := m.update(ctx, func(t *txn) error {
		a, err := t.attr(ino)
		if err != nil {
			return err
		}
		switch a.Typ {
		case TypeFile:
		case TypeDir:
			return syscall.EISDIR
		default:
			return syscall.ENODEV
		}
		if err := access(a, &c, W_OK); err != nil {
			return err
		}
		switch {
		case mode&FallocPunchHole != 0:
			end := min(off+length, a.Size)
			if end <= off {
				return nil
			}
			rs, err := slice.Split(int64(off), int64(end-off))
			if err != nil {
				return syscall.EINVAL
			}
			for _, r := range rs {
				t.tx.Append(chunkKey(ino, r.Chunk), slice.Slice{Pos: r.Off, Len: r.Len}.Append(nil))
			}
			t.mtime(a)
		case mode&FallocKeepSize != 0:
			return nil
		default:
			if end := off + length; end > a.Size {
				t.fx.space += usage(end) - usage(a.Size)
				a.Size = end
				t.mtime(a)
			}
		}
		t.touch(ino)
		return nil
	})
	return wrap(err, "fallocate %d", ino)
}

// CompactChunk replaces the prefix old of a chunk's record list by repl,
// if the list still starts with exactly old (records appended since the
// caller read it are kept after repl). Slices of old that are no longer
// referenced are freed after SliceFreeDelay. Otherwise the error wraps
// ErrChunkChanged.
func (m *Meta) CompactChunk(ctx context.Context, ino Ino, chunk uint32, old, repl []slice.Slice) error {
	for _, s := range repl {
		if err := s.Valid(); err != nil {
			return fmt.Errorf("meta compact chunk %d of inode %d: %w", chunk, ino, err)
		}
	}
	defer func() {
		for _, s := range repl {
			m.flight.done(s.ID)
		}
	}()
	err := m.update(ctx, func(t *txn) error {
		key := chunkKey(ino, chunk)
		b, err := t.tx.Get(key)
		if err != nil {
			return err
		}
		if b == nil {
			return ErrChunkChanged // never written, or removed with its file
		}
		cur, err := slice.Decode(b)
		if err != nil {
			return err
		}
		if len(cur) < len(old) {
			return ErrChunkChanged
		}
		for i := range old {
			if cur[i] != old[i] {
				return ErrChunkChanged
			}
		}
		next := append(append([]slice.Slice{}, repl...), cur[len(old):]...)
		if len(next) == 0 {
			t.tx.Delete(key)
		} else {
			t.tx.Set(key, slice.Encode(next))
		}
		keep := make(map[uint64]bool, len(next))
		for _, s := range next {
			keep[s.ID] = true
		}
		var freed []slice.Slice
		for _, s := range old {
			if !keep[s.ID] {
				keep[s.ID] = true // queue once
				freed = append(freed, s)
			}
		}
		t.queueSlices(freed, t.now.Add(m.opts.SliceFreeDelay))
		return nil
	})
	return wrap(err, "compact chunk %d of inode %d", chunk, ino)
}

// ListSlices calls fn for every live slice record (ID != 0) of every
// chunk, including chunks of removed files whose data is not yet queued.
// It reads chunk by chunk, not from one snapshot.
func (m *Meta) ListSlices(ctx context.Context, fn func(ino Ino, chunk uint32, s slice.Slice) error) error {
	var keys []string
	if err := m.engine.Scan(ctx, "c", func(k string) bool {
		if _, _, ok := parseChunkKey(k); ok {
			keys = append(keys, k)
		}
		return true
	}); err != nil {
		return fmt.Errorf("meta list slices: %w", err)
	}
	const batch = 256
	for i := 0; i < len(keys); i += batch {
		part := keys[i:min(i+batch, len(keys))]
		var vals [][]byte
		if err := m.view(ctx, func(t *txn) error {
			var err error
			vals, err = t.tx.MGet(part...)
			return err
		}); err != nil {
			return fmt.Errorf("meta list slices: %w", err)
		}
		for j, b := range vals {
			ino, chunk, _ := parseChunkKey(part[j])
			ss, err := slice.Decode(b)
			if err != nil {
				return fmt.Errorf("meta list slices: %s: %w", part[j], err)
			}
			for _, s := range ss {
				if s.ID == 0 {
					continue
				}
				if err := fn(ino, chunk, s); err != nil {
					return err
				}
			}
		}
	}
	return nil
}

// PendingSlices calls fn for every slice waiting in the delete queue, with
// the time its blocks may be deleted.
func (m *Meta) PendingSlices(ctx context.Context, fn func(id uint64, size uint32, due time.Time) error) error {
	var queue map[string][]byte
	if err := m.view(ctx, func(t *txn) error {
		var err error
		queue, err = t.tx.HGetAll(keyDelSlices)
		return err
	}); err != nil {
		return fmt.Errorf("meta list pending slices: %w", err)
	}
	for f, v := range queue {
		id, err := strconv.ParseUint(f, 10, 64)
		if err != nil || len(v) != 12 {
			continue
		}
		if err := fn(id, binary.BigEndian.Uint32(v), time.Unix(0, int64(binary.BigEndian.Uint64(v[4:])))); err != nil {
			return err
		}
	}
	return nil
}
