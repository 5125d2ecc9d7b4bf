package meta

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/skiff-fs/skiff/fsclient/meta/kv"
)

// File locks shared by every client of a volume: BSD whole-file locks
// (Flock) and POSIX byte-range record locks (Getlk, Setlk). A lock belongs
// to an owner, the pair (session id, FUSE lock owner), written "<sid>_<owner>"
// as a field of the inode's lock hash:
//
//	lf<ino>  flocks:        owner -> 'R' or 'W'
//	lp<ino>  POSIX locks:   owner -> range list (encodePlocks)
//	lk<sid>  locked inodes: inode -> 1 while session sid may hold a lock on it
//
// Every lock change of an inode is one Update that reads the inode's lock
// hash (WATCHed on Redis), so two clients racing for conflicting locks never
// both win. An owner's own locks never conflict with each other: they are
// replaced (flock) or split and merged (POSIX). Blocking requests poll with
// backoff until the lock is granted or ctx ends. Locks go away with
// ReleaseLocks, with Close of the session and with the cleanup of a stale
// session by another client ("lk<sid>" tells the cleaner where to look).

// Lock types, as fcntl(2) names them.
const (
	lockRead   = uint32(syscall.F_RDLCK)
	lockWrite  = uint32(syscall.F_WRLCK)
	lockUnlock = uint32(syscall.F_UNLCK)
)

// Poll intervals of a blocking lock request.
const (
	lockPollMin = 2 * time.Millisecond
	lockPollMax = 500 * time.Millisecond
)

// errLockConflict aborts a lock transaction that found a conflicting lock.
var errLockConflict = errors.New("meta: lock conflict")

func flockKey(ino Ino) string { return "lf" + strconv.FormatUint(uint64(ino), 10) }
func plockKey(ino Ino) string { return "lp" + strconv.FormatUint(uint64(ino), 10) }
func sessLockKey(sid uint64) string {
	return "lk" + strconv.FormatUint(sid, 10)
}

func lockOwnerField(sid, owner uint64) string {
	return strconv.FormatUint(sid, 10) + "_" + strconv.FormatUint(owner, 10)
}

// lockSession returns the session id that lock changes are recorded under.
func (m *Meta) lockSession() (uint64, error) {
	if m.opts.ReadOnly {
		return 0, syscall.EROFS
	}
	sid := m.sessionID()
	if sid == 0 {
		return 0, errNoSession
	}
	return sid, nil
}

// Flock sets (ltype F_RDLCK or F_WRLCK) or drops (F_UNLCK) the BSD
// whole-file lock of owner on ino. Read locks share, write locks exclude,
// across owners and clients of the volume; an owner's lock of the other
// type is replaced. A conflict gives EAGAIN unless block is set: then Flock
// waits until the lock is granted, or returns an error matching both
// syscall.EINTR and ctx.Err() when ctx ends. As in Linux, converting a lock
// is not atomic when it has to wait: a blocking request that conflicts drops
// the owner's existing lock first (so that two readers upgrading at once do
// not deadlock); a non-blocking one that fails keeps it.
func (m *Meta) Flock(ctx context.Context, ino Ino, owner uint64, ltype uint32, block bool) error {
	if ltype != lockRead && ltype != lockWrite && ltype != lockUnlock {
		return syscall.EINVAL
	}
	sid, err := m.lockSession()
	if err != nil {
		return err
	}
	me := lockOwnerField(sid, owner)
	want := []byte{'R'}
	if ltype == lockWrite {
		want = []byte{'W'}
	}
	err = m.lockLoop(ctx, block, func() (bool, error) {
		var waiting bool
		err := m.update(ctx, func(t *txn) error {
			waiting = false
			locks, err := t.tx.HGetAll(flockKey(ino))
			if err != nil {
				return err
			}
			if ltype == lockUnlock {
				if _, held := locks[me]; !held {
					return nil
				}
				t.tx.HDel(flockKey(ino), me)
				delete(locks, me)
				return t.noteUnlocked(sid, ino, locks, nil)
			}
			if string(locks[me]) == string(want) {
				return nil
			}
			for f, v := range locks {
				if f != me && (ltype == lockWrite || string(v) != "R") {
					if !block {
						return errLockConflict
					}
					// Wait without the old lock, as Linux does.
					waiting = true
					if _, held := locks[me]; !held {
						return errLockConflict
					}
					t.tx.HDel(flockKey(ino), me)
					delete(locks, me)
					return t.noteUnlocked(sid, ino, locks, nil)
				}
			}
			t.tx.HSet(flockKey(ino), me, want)
			t.tx.HSet(sessLockKey(sid), strconv.FormatUint(uint64(ino), 10), []byte{1})
			return nil
		})
		if errors.Is(err, errLockConflict) {
			return true, nil
		}
		return waiting && err == nil, err
	})
	return wrap(err, "flock %d", ino)
}

// Getlk tests whether owner could lock [*start, *end] of ino with *ltype
// (F_RDLCK or F_WRLCK). If another owner's POSIX lock conflicts, the first
// such lock (lowest start, ties by owner) is reported in *ltype, *start, *end and *pid;
// else *ltype is set to F_UNLCK and the rest is left alone. The pid is that
// of the holder when it belongs to this client's session; a lock held by
// another client reports pid 0, as its pid means nothing on this host.
// *end = math.MaxUint64 means to the end of the file.
func (m *Meta) Getlk(ctx context.Context, ino Ino, owner uint64, ltype *uint32, start, end *uint64, pid *uint32) error {
	if (*ltype != lockRead && *ltype != lockWrite) || *start > *end {
		return syscall.EINVAL
	}
	sid := m.sessionID() // 0 without a session: then no lock is our own
	me := lockOwnerField(sid, owner)
	want := plock{Start: *start, End: *end, Type: *ltype}
	var found *plock
	var foundBy string // the holder of found, to break ties
	var foundOwn bool
	err := m.view(ctx, func(t *txn) error {
		found = nil
		locks, err := t.tx.HGetAll(plockKey(ino))
		if err != nil {
			return err
		}
		for f, v := range locks {
			if f == me {
				continue
			}
			ls, err := decodePlocks(v)
			if err != nil {
				return fmt.Errorf("posix locks of %s: %w", f, err)
			}
			for i := range ls {
				l := ls[i]
				if conflicts(l, want) && (found == nil || l.Start < found.Start || l.Start == found.Start && f < foundBy) {
					found, foundBy = &l, f
					foundOwn = strings.HasPrefix(f, strconv.FormatUint(sid, 10)+"_")
				}
			}
		}
		return nil
	})
	if err != nil {
		return wrap(err, "getlk %d", ino)
	}
	if found == nil {
		*ltype = lockUnlock
		return nil
	}
	*ltype, *start, *end, *pid = found.Type, found.Start, found.End, 0
	if foundOwn {
		*pid = found.Pid
	}
	return nil
}

// Setlk sets (F_RDLCK, F_WRLCK) or drops (F_UNLCK) owner's POSIX lock on
// the byte range [start, end] of ino (end = math.MaxUint64: to the end of
// the file). The owner's own locks over the range are replaced, split and
// merged with neighbours of the same type; locks of other owners that
// conflict (overlap, and one of the two is a write lock) give EAGAIN, or,
// with block, a wait until they go (the owner's locks are unchanged while
// it waits). A wait ends with an error matching both syscall.EINTR and
// ctx.Err() when ctx ends. Deadlocks between owners are not detected: they
// last until one of the waits is interrupted. pid is reported by Getlk.
func (m *Meta) Setlk(ctx context.Context, ino Ino, owner uint64, block bool, ltype uint32, start, end uint64, pid uint32) error {
	if (ltype != lockRead && ltype != lockWrite && ltype != lockUnlock) || start > end {
		return syscall.EINVAL
	}
	sid, err := m.lockSession()
	if err != nil {
		return err
	}
	me := lockOwnerField(sid, owner)
	req := plock{Start: start, End: end, Pid: pid, Type: ltype}
	err = m.lockLoop(ctx, block, func() (bool, error) {
		err := m.update(ctx, func(t *txn) error {
			locks, err := t.tx.HGetAll(plockKey(ino))
			if err != nil {
				return err
			}
			var own []plock
			if v, held := locks[me]; held {
				if own, err = decodePlocks(v); err != nil {
					// Our own record: dropping it loses only our locks.
					t.m.log.Error("meta: corrupt posix lock record; dropping it", "inode", ino, "owner", me, "err", err)
					own = nil
				}
			} else if ltype == lockUnlock {
				return nil
			}
			if ltype != lockUnlock {
				for f, v := range locks {
					if f == me {
						continue
					}
					ls, err := decodePlocks(v)
					if err != nil {
						return fmt.Errorf("posix locks of %s: %w", f, err)
					}
					for _, l := range ls {
						if conflicts(l, req) {
							return errLockConflict
						}
					}
				}
			}
			own = setPlock(own, req)
			if len(own) > 0 {
				t.tx.HSet(plockKey(ino), me, encodePlocks(own))
				t.tx.HSet(sessLockKey(sid), strconv.FormatUint(uint64(ino), 10), []byte{1})
				return nil
			}
			t.tx.HDel(plockKey(ino), me)
			delete(locks, me)
			return t.noteUnlocked(sid, ino, nil, locks)
		})
		if errors.Is(err, errLockConflict) {
			return true, nil
		}
		return false, err
	})
	return wrap(err, "setlk %d", ino)
}

// ReleaseLocks drops every flock and POSIX lock of owner on ino. The FUSE
// layer calls it when the owner's handle is flushed or released. Without a
// lock of this session on ino it costs one read.
func (m *Meta) ReleaseLocks(ctx context.Context, ino Ino, owner uint64) error {
	sid := m.sessionID()
	if sid == 0 || m.opts.ReadOnly {
		return nil // nothing can be locked
	}
	var listed bool
	err := m.view(ctx, func(t *txn) error {
		v, err := t.tx.HGet(sessLockKey(sid), strconv.FormatUint(uint64(ino), 10))
		listed = v != nil
		return err
	})
	if err != nil || !listed {
		return wrap(err, "release locks %d", ino)
	}
	me := lockOwnerField(sid, owner)
	err = m.lockLoop(ctx, false, func() (bool, error) {
		return false, m.update(ctx, func(t *txn) error {
			fl, err := t.tx.HGetAll(flockKey(ino))
			if err != nil {
				return err
			}
			pl, err := t.tx.HGetAll(plockKey(ino))
			if err != nil {
				return err
			}
			t.tx.HDel(flockKey(ino), me)
			t.tx.HDel(plockKey(ino), me)
			delete(fl, me)
			delete(pl, me)
			return t.noteUnlocked(sid, ino, fl, pl)
		})
	})
	return wrap(err, "release locks %d", ino)
}

// noteUnlocked removes ino from the inodes session sid holds locks on when
// neither lock hash has a lock of sid any more. flocks and plocks are the
// hashes after the change, or nil to read them.
func (t *txn) noteUnlocked(sid uint64, ino Ino, flocks, plocks map[string][]byte) error {
	prefix := strconv.FormatUint(sid, 10) + "_"
	for _, h := range []struct {
		key    string
		fields map[string][]byte
	}{{flockKey(ino), flocks}, {plockKey(ino), plocks}} {
		fields := h.fields
		if fields == nil {
			var err error
			if fields, err = t.tx.HGetAll(h.key); err != nil {
				return err
			}
		}
		for f := range fields {
			if strings.HasPrefix(f, prefix) {
				return nil
			}
		}
	}
	t.tx.HDel(sessLockKey(sid), strconv.FormatUint(uint64(ino), 10))
	return nil
}

// releaseSessionLocks drops every lock of session sid, inode by inode, for
// Close and stale-session cleanup. Locks the session takes meanwhile (a
// session wrongly thought stale) stay listed in "lk<sid>" for its own Close.
func (m *Meta) releaseSessionLocks(ctx context.Context, sid uint64) error {
	var inodes map[string][]byte
	err := m.view(ctx, func(t *txn) error {
		var err error
		inodes, err = t.tx.HGetAll(sessLockKey(sid))
		return err
	})
	if err != nil {
		return fmt.Errorf("meta: read locked inodes of session %d: %w", sid, err)
	}
	prefix := strconv.FormatUint(sid, 10) + "_"
	for f := range inodes {
		ino, ok := parseInoKey(f, "")
		err := m.update(ctx, func(t *txn) error {
			t.tx.HDel(sessLockKey(sid), f)
			if !ok {
				return nil // corrupt field: nothing to release
			}
			for _, key := range []string{flockKey(ino), plockKey(ino)} {
				locks, err := t.tx.HGetAll(key)
				if err != nil {
					return err
				}
				for owner := range locks {
					if strings.HasPrefix(owner, prefix) {
						t.tx.HDel(key, owner)
					}
				}
			}
			return nil
		})
		if err != nil {
			return fmt.Errorf("meta: release locks on inode %s of session %d: %w", f, sid, err)
		}
	}
	return nil
}

// lockLoop runs try until it succeeds without a conflict. A conflict
// returns EAGAIN unless block; then lockLoop polls with growing, jittered
// intervals. Transaction conflicts and unknown commit outcomes are retried
// (every lock change is idempotent: re-running it after an unknown
// outcome leaves the same state), a few times when not blocking.
func (m *Meta) lockLoop(ctx context.Context, block bool, try func() (conflict bool, err error)) error {
	delay := lockPollMin
	transient := 0
	for {
		conflict, err := try()
		switch {
		case err == nil && !conflict:
			return nil
		case err == nil:
			if !block {
				return syscall.EAGAIN
			}
		case errors.Is(err, kv.ErrConflict) || errors.Is(err, kv.ErrCommitUnknown):
			transient++
			if !block && transient > 3 {
				return err
			}
		default:
			if ctx.Err() != nil {
				return interrupted(ctx)
			}
			return err
		}
		d := delay/2 + rand.N(delay/2+1)
		delay = min(delay*3/2, lockPollMax)
		tm := time.NewTimer(d)
		select {
		case <-ctx.Done():
			tm.Stop()
			return interrupted(ctx)
		case <-tm.C:
		}
	}
}

// interrupted is the error of a lock wait ended by ctx: it matches both
// syscall.EINTR and ctx.Err().
func interrupted(ctx context.Context) error {
	return fmt.Errorf("%w: lock wait: %w", syscall.EINTR, ctx.Err())
}

// plock is one POSIX lock range of an owner: [Start, End] inclusive.
type plock struct {
	Start, End uint64
	Pid        uint32
	Type       uint32 // lockRead or lockWrite
}

// conflicts reports whether a (of another owner) conflicts with b.
func conflicts(a, b plock) bool {
	return a.Start <= b.End && b.Start <= a.End && (a.Type == lockWrite || b.Type == lockWrite)
}

// setPlock applies req (a lock or lockUnlock) to an owner's range list ls,
// sorted and non-overlapping, and returns the new list: sorted,
// non-overlapping, with adjacent ranges of the same type merged. A range
// that contains req's range takes req's pid. ls is not modified.
func setPlock(ls []plock, req plock) []plock {
	out := make([]plock, 0, len(ls)+2)
	for _, l := range ls {
		if l.End < req.Start || l.Start > req.End {
			out = append(out, l)
			continue
		}
		if l.Start < req.Start {
			left := l
			left.End = req.Start - 1
			out = append(out, left)
		}
		if l.End > req.End {
			right := l
			right.Start = req.End + 1
			out = append(out, right)
		}
	}
	if req.Type != lockUnlock {
		out = append(out, req)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Start < out[j].Start })
	merged := out[:0]
	for _, l := range out {
		if n := len(merged); n > 0 {
			last := &merged[n-1]
			if last.Type == l.Type && last.End != math.MaxUint64 && last.End+1 >= l.Start {
				last.End = max(last.End, l.End)
				continue
			}
		}
		merged = append(merged, l)
	}
	if req.Type != lockUnlock {
		for i := range merged {
			if merged[i].Start <= req.Start && req.End <= merged[i].End {
				merged[i].Pid = req.Pid
			}
		}
	}
	return slices.Clip(merged)
}

// plockLen is the size of one encoded range: start u64, end u64, pid u32,
// type 'R' or 'W'.
const plockLen = 21

// encodePlocks encodes a range list for "lp<ino>".
func encodePlocks(ls []plock) []byte {
	b := make([]byte, 0, len(ls)*plockLen)
	for _, l := range ls {
		b = binary.BigEndian.AppendUint64(b, l.Start)
		b = binary.BigEndian.AppendUint64(b, l.End)
		b = binary.BigEndian.AppendUint32(b, l.Pid)
		if l.Type == lockWrite {
			b = append(b, 'W')
		} else {
			b = append(b, 'R')
		}
	}
	return b
}

// decodePlocks decodes a range list, rejecting (with an error wrapping
// errCorrupt) a wrong length, an empty list, an unknown type, a range
// ending before it starts and ranges out of order or overlapping.
func decodePlocks(b []byte) ([]plock, error) {
	if len(b) == 0 || len(b)%plockLen != 0 {
		return nil, fmt.Errorf("posix lock list of %d bytes: %w", len(b), errCorrupt)
	}
	ls := make([]plock, 0, len(b)/plockLen)
	for ; len(b) > 0; b = b[plockLen:] {
		l := plock{
			Start: binary.BigEndian.Uint64(b),
			End:   binary.BigEndian.Uint64(b[8:]),
			Pid:   binary.BigEndian.Uint32(b[16:]),
		}
		switch b[20] {
		case 'R':
			l.Type = lockRead
		case 'W':
			l.Type = lockWrite
		default:
			return nil, fmt.Errorf("posix lock type %q: %w", b[20], errCorrupt)
		}
		if l.Start > l.End {
			return nil, fmt.Errorf("posix lock range %d-%d: %w", l.Start, l.End, errCorrupt)
		}
		if n := len(ls); n > 0 && ls[n-1].End >= l.Start {
			return nil, fmt.Errorf("posix lock ranges out of order (%d-%d, %d-%d): %w", ls[n-1].Start, ls[n-1].End, l.Start, l.End, errCorrupt)
		}
		ls = append(ls, l)
	}
	return ls, nil
}
