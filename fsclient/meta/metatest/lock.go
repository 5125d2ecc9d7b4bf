package metatest

import (
	"context"
	"errors"
	"fmt"
	"math"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/skiff-fs/skiff/fsclient/meta"
	"github.com/skiff-fs/skiff/fsclient/meta/kv"
)

// File locks: Flock, Getlk, Setlk and ReleaseLocks across owners and
// clients of one volume.

const (
	rd = uint32(syscall.F_RDLCK)
	wr = uint32(syscall.F_WRLCK)
	un = uint32(syscall.F_UNLCK)
)

// lockWait bounds how long a test waits for a lock it must get.
const lockWait = 20 * time.Second

// waiter runs a blocking lock request in the background.
type waiter struct{ done chan error }

func startWaiter(fn func(ctx context.Context) error) (*waiter, context.CancelFunc) {
	wctx, cancel := context.WithTimeout(ctx, lockWait)
	w := &waiter{done: make(chan error, 1)}
	go func() { w.done <- fn(wctx) }()
	return w, cancel
}

// blocked fails the test if the request finished (it must still wait).
func (w *waiter) blocked(t testing.TB, what string) {
	t.Helper()
	select {
	case err := <-w.done:
		t.Fatalf("%s returned (%v) while a conflicting lock is held", what, err)
	case <-time.After(100 * time.Millisecond):
	}
}

// result waits for the request to finish and returns its error.
func (w *waiter) result(t testing.TB, what string) error {
	t.Helper()
	select {
	case err := <-w.done:
		return err
	case <-time.After(lockWait + 5*time.Second):
		t.Fatalf("%s never returned", what)
		return nil
	}
}

// lockKeys lists the engine's lock keys ("lf", "lp", "lk" prefixes).
func lockKeys(t testing.TB, m *meta.Meta) []string {
	t.Helper()
	var keys []string
	for _, p := range []string{"lf", "lp", "lk"} {
		ok(t, m.Engine().Scan(ctx, p, func(k string) bool {
			keys = append(keys, k)
			return true
		}), "Scan "+p)
	}
	return keys
}

func noLockKeys(t testing.TB, m *meta.Meta) {
	t.Helper()
	if keys := lockKeys(t, m); len(keys) > 0 {
		t.Fatalf("lock keys left after every lock was released: %v", keys)
	}
}

func flock(t testing.TB, m *meta.Meta, ino meta.Ino, owner uint64, ltype uint32) {
	t.Helper()
	ok(t, m.Flock(ctx, ino, owner, ltype, false), fmt.Sprintf("Flock owner %d type %d", owner, ltype))
}

func flockBusy(t testing.TB, m *meta.Meta, ino meta.Ino, owner uint64, ltype uint32) {
	t.Helper()
	wantErr(t, m.Flock(ctx, ino, owner, ltype, false), syscall.EAGAIN, fmt.Sprintf("Flock owner %d type %d", owner, ltype))
}

func setlk(t testing.TB, m *meta.Meta, ino meta.Ino, owner uint64, ltype uint32, start, end uint64, pid uint32) {
	t.Helper()
	ok(t, m.Setlk(ctx, ino, owner, false, ltype, start, end, pid), fmt.Sprintf("Setlk owner %d type %d %d-%d", owner, ltype, start, end))
}

func setlkBusy(t testing.TB, m *meta.Meta, ino meta.Ino, owner uint64, ltype uint32, start, end uint64) {
	t.Helper()
	wantErr(t, m.Setlk(ctx, ino, owner, false, ltype, start, end, 1), syscall.EAGAIN, fmt.Sprintf("Setlk owner %d type %d %d-%d", owner, ltype, start, end))
}

type lockInfo struct {
	Type       uint32
	Start, End uint64
	Pid        uint32
}

func getlk(t testing.TB, m *meta.Meta, ino meta.Ino, owner uint64, ltype uint32, start, end uint64) lockInfo {
	t.Helper()
	l := lockInfo{Type: ltype, Start: start, End: end, Pid: 12345}
	ok(t, m.Getlk(ctx, ino, owner, &l.Type, &l.Start, &l.End, &l.Pid), "Getlk")
	if l.Type == un {
		// Only the type changes when nothing conflicts.
		if l.Start != start || l.End != end {
			t.Fatalf("Getlk without a conflict changed the range to %d-%d", l.Start, l.End)
		}
		return lockInfo{Type: un}
	}
	return l
}

func wantLk(t testing.TB, got, want lockInfo, what string) {
	t.Helper()
	if got != want {
		t.Fatalf("%s: Getlk = %+v, want %+v", what, got, want)
	}
}

func (s *suite) testFlock(t *testing.T) {
	vol, m1 := s.fresh(t, defaultOpts())
	m2 := client(t, vol, defaultOpts())
	f := mkfile(t, m1, root, meta.RootIno, "f", 0o644)

	wantErr(t, m1.Flock(ctx, f, 1, 77, false), syscall.EINVAL, "Flock with a bad type")
	// Read locks share: across clients and across owners of one client.
	flock(t, m1, f, 1, rd)
	flock(t, m2, f, 1, rd)
	flock(t, m1, f, 2, rd)
	flock(t, m1, f, 2, rd) // again: no change
	// Upgrades conflict with the other readers; a failed non-blocking
	// upgrade keeps the read lock.
	flockBusy(t, m2, f, 1, wr)
	flockBusy(t, m1, f, 3, wr)
	flock(t, m1, f, 1, un)
	flockBusy(t, m2, f, 1, wr)
	flock(t, m1, f, 2, un)
	flock(t, m1, f, 2, un) // unlocking twice is harmless
	flock(t, m2, f, 1, wr)
	// Write locks exclude everyone else, but not their owner.
	flockBusy(t, m1, f, 1, rd)
	flockBusy(t, m1, f, 1, wr)
	flockBusy(t, m2, f, 2, rd)
	flock(t, m2, f, 1, wr)
	flock(t, m2, f, 1, rd) // downgrade
	flock(t, m1, f, 1, rd)
	flockBusy(t, m1, f, 2, wr)
	flock(t, m1, f, 1, un)

	// A blocking request waits until the holder unlocks.
	flock(t, m2, f, 1, wr)
	w, cancel := startWaiter(func(c context.Context) error { return m1.Flock(c, f, 1, wr, true) })
	defer cancel()
	w.blocked(t, "blocking Flock")
	flock(t, m2, f, 1, un)
	ok(t, w.result(t, "blocking Flock"), "blocking Flock after the unlock")
	flockBusy(t, m2, f, 1, rd)

	// A blocking request ends with EINTR when its context does.
	cctx, ccancel := context.WithCancel(ctx)
	w2, cancel2 := startWaiter(func(context.Context) error { return m2.Flock(cctx, f, 1, rd, true) })
	defer cancel2()
	w2.blocked(t, "blocking Flock")
	ccancel()
	err := w2.result(t, "cancelled Flock")
	if !errors.Is(err, syscall.EINTR) || !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled blocking Flock: %v, want EINTR and context.Canceled", err)
	}
	flock(t, m1, f, 1, un)
	flock(t, m2, f, 1, rd)
	flock(t, m2, f, 1, un)
	noLockKeys(t, m1)
}

func (s *suite) testPosixLocks(t *testing.T) {
	vol, m1 := s.fresh(t, defaultOpts())
	m2 := client(t, vol, defaultOpts())
	f := mkfile(t, m1, root, meta.RootIno, "f", 0o644)
	const eof = math.MaxUint64

	wantErr(t, m1.Setlk(ctx, f, 1, false, wr, 10, 5, 1), syscall.EINVAL, "Setlk start > end")
	wantErr(t, m1.Setlk(ctx, f, 1, false, 99, 0, 5, 1), syscall.EINVAL, "Setlk bad type")
	bad := un
	var a, b uint64 = 0, 1
	var pid uint32
	wantErr(t, m1.Getlk(ctx, f, 1, &bad, &a, &b, &pid), syscall.EINVAL, "Getlk F_UNLCK")

	// Split: lock 0-100, unlock 40-60 leaves 0-39 and 61-100.
	setlk(t, m1, f, 1, wr, 0, 100, 11)
	setlk(t, m1, f, 1, un, 40, 60, 11)
	wantLk(t, getlk(t, m1, f, 2, wr, 0, eof), lockInfo{wr, 0, 39, 11}, "other owner, whole file")
	wantLk(t, getlk(t, m1, f, 2, wr, 40, 60), lockInfo{Type: un}, "other owner, the hole")
	wantLk(t, getlk(t, m1, f, 2, rd, 50, 70), lockInfo{wr, 61, 100, 11}, "other owner, read over the second half")
	wantLk(t, getlk(t, m1, f, 1, wr, 0, eof), lockInfo{Type: un}, "the owner itself")
	// Another client sees the range; the pid of a remote holder is 0.
	wantLk(t, getlk(t, m2, f, 1, rd, 0, 10), lockInfo{wr, 0, 39, 0}, "other client")
	setlk(t, m2, f, 1, wr, 40, 60, 21)
	setlkBusy(t, m2, f, 2, rd, 30, 45)
	setlkBusy(t, m1, f, 2, rd, 45, 45)
	setlkBusy(t, m1, f, 1, wr, 40, 60)
	// The owner's own ranges merge again once the gap is theirs.
	setlk(t, m2, f, 1, un, 0, eof, 0)
	setlk(t, m1, f, 1, wr, 40, 60, 12)
	wantLk(t, getlk(t, m1, f, 2, rd, 0, eof), lockInfo{wr, 0, 100, 12}, "after merging")
	setlk(t, m1, f, 1, rd, 50, 50, 13) // a read hole in the write range
	wantLk(t, getlk(t, m1, f, 2, rd, 40, 60), lockInfo{wr, 0, 49, 12}, "write around a read range")
	wantLk(t, getlk(t, m1, f, 2, wr, 50, 60), lockInfo{rd, 50, 50, 13}, "the read range")
	setlk(t, m1, f, 1, un, 0, eof, 0)
	wantLk(t, getlk(t, m2, f, 1, wr, 0, eof), lockInfo{Type: un}, "after unlocking everything")

	// Read locks share across owners and clients; writes conflict.
	setlk(t, m1, f, 3, rd, 200, 300, 31)
	setlk(t, m2, f, 2, rd, 250, 400, 22)
	setlk(t, m1, f, 4, rd, 0, eof, 41)
	setlkBusy(t, m1, f, 5, wr, 260, 270)
	wantLk(t, getlk(t, m1, f, 5, rd, 260, 270), lockInfo{Type: un}, "read against readers")
	setlk(t, m1, f, 4, un, 0, eof, 0)
	// Upgrading conflicts where another reader overlaps, not elsewhere.
	setlkBusy(t, m1, f, 3, wr, 200, 300)
	wantLk(t, getlk(t, m2, f, 9, wr, 200, 210), lockInfo{rd, 200, 300, 0}, "the failed upgrade changed nothing")
	setlk(t, m1, f, 3, wr, 200, 249, 32)
	wantLk(t, getlk(t, m2, f, 9, rd, 200, 210), lockInfo{wr, 200, 249, 0}, "after the partial upgrade")
	wantLk(t, getlk(t, m2, f, 2, wr, 250, 260), lockInfo{rd, 250, 300, 0}, "the rest of the read range")

	// A blocking request waits for the conflicting range to go.
	setlk(t, m2, f, 1, wr, 500, 600, 23)
	w, cancel := startWaiter(func(c context.Context) error { return m1.Setlk(c, f, 6, true, wr, 550, eof, 61) })
	defer cancel()
	w.blocked(t, "blocking Setlk")
	setlk(t, m2, f, 1, un, 500, 549, 0) // still overlapping
	w.blocked(t, "blocking Setlk")
	setlk(t, m2, f, 1, un, 550, 600, 0)
	ok(t, w.result(t, "blocking Setlk"), "blocking Setlk after the unlock")
	wantLk(t, getlk(t, m1, f, 7, rd, 1000, 1000), lockInfo{wr, 550, eof, 61}, "the waiter's lock")

	cctx, ccancel := context.WithCancel(ctx)
	w2, cancel2 := startWaiter(func(context.Context) error { return m2.Setlk(cctx, f, 1, true, rd, 0, eof, 1) })
	defer cancel2()
	w2.blocked(t, "blocking Setlk")
	ccancel()
	if err := w2.result(t, "cancelled Setlk"); !errors.Is(err, syscall.EINTR) || !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled blocking Setlk: %v, want EINTR and context.Canceled", err)
	}
	for _, o := range []struct {
		m     *meta.Meta
		owner uint64
	}{{m1, 3}, {m1, 6}, {m2, 2}} {
		setlk(t, o.m, f, o.owner, un, 0, eof, 0)
	}
	noLockKeys(t, m1)
}

func (s *suite) testReleaseLocks(t *testing.T) {
	vol, m1 := s.fresh(t, defaultOpts())
	m2 := client(t, vol, defaultOpts())
	f := mkfile(t, m1, root, meta.RootIno, "f", 0o644)
	g := mkfile(t, m1, root, meta.RootIno, "g", 0o644)

	// ReleaseLocks drops both kinds for one owner and nothing else.
	flock(t, m1, f, 1, wr)
	setlk(t, m1, f, 1, wr, 0, 10, 1)
	setlk(t, m1, f, 2, rd, 20, 30, 2)
	flockBusy(t, m2, f, 1, rd)
	setlkBusy(t, m2, f, 1, rd, 5, 5)
	ok(t, m2.ReleaseLocks(ctx, f, 1), "ReleaseLocks of an owner holding nothing")
	ok(t, m1.ReleaseLocks(ctx, g, 1), "ReleaseLocks of an unlocked file")
	ok(t, m1.ReleaseLocks(ctx, f, 1), "ReleaseLocks")
	flock(t, m2, f, 1, wr)
	setlk(t, m2, f, 1, wr, 0, 10, 3)
	setlkBusy(t, m2, f, 1, wr, 25, 25) // owner 2's read lock stays
	ok(t, m1.ReleaseLocks(ctx, f, 2), "ReleaseLocks")
	ok(t, m2.ReleaseLocks(ctx, f, 1), "ReleaseLocks")
	noLockKeys(t, m1)

	// Close of a session releases its locks.
	m3 := client(t, vol, defaultOpts())
	flock(t, m3, f, 1, wr)
	setlk(t, m3, g, 7, wr, 0, math.MaxUint64, 1)
	flockBusy(t, m2, f, 1, rd)
	setlkBusy(t, m2, g, 1, rd, 100, 100)
	ok(t, m3.Close(ctx), "Close")
	flock(t, m2, f, 1, rd)
	setlk(t, m2, g, 1, rd, 100, 100, 1)
	ok(t, m2.ReleaseLocks(ctx, f, 1), "ReleaseLocks")
	ok(t, m2.ReleaseLocks(ctx, g, 1), "ReleaseLocks")
	noLockKeys(t, m1)
}

func (s *suite) testStaleSessionLocks(t *testing.T) {
	// The stale client never heartbeats within the test.
	staleOpts := defaultOpts()
	staleOpts.Heartbeat = time.Hour
	vol, stale := s.fresh(t, staleOpts)
	f := mkfile(t, stale, root, meta.RootIno, "f", 0o644)
	g := mkfile(t, stale, root, meta.RootIno, "g", 0o644)
	flock(t, stale, f, 1, wr)
	setlk(t, stale, g, 1, wr, 0, math.MaxUint64, 1)
	ss, err := stale.Sessions(ctx)
	ok(t, err, "Sessions")
	staleID := ss[0].ID
	// A live client with the default timeout must wait. (It heartbeats
	// often, so the cleaner below does not take it for stale.)
	otherOpts := defaultOpts()
	otherOpts.Heartbeat = 50 * time.Millisecond
	other := client(t, vol, otherOpts)
	flockBusy(t, other, f, 1, rd)
	setlkBusy(t, other, g, 1, rd, 0, 0)

	// A client with a short session timeout cleans the stale session up,
	// which releases its locks: blocking requests then succeed.
	cleanOpts := defaultOpts()
	cleanOpts.Heartbeat = 50 * time.Millisecond
	cleanOpts.SessionTimeout = 300 * time.Millisecond
	cleanOpts.JobInterval = 20 * time.Millisecond
	cleaner := client(t, vol, cleanOpts)
	wctx, cancel := context.WithTimeout(ctx, lockWait)
	defer cancel()
	ok(t, cleaner.Flock(wctx, f, 1, wr, true), "blocking Flock against a stale session")
	ok(t, cleaner.Setlk(wctx, g, 1, true, wr, 0, 10, 1), "blocking Setlk against a stale session")
	// Nothing of the stale session is left.
	for _, k := range lockKeys(t, cleaner) {
		if k == "lk"+strconv.FormatUint(staleID, 10) {
			t.Fatalf("lock key %s of the removed session is left", k)
		}
	}
	flockBusy(t, other, f, 1, rd)
	ok(t, cleaner.ReleaseLocks(ctx, f, 1), "ReleaseLocks")
	ok(t, cleaner.ReleaseLocks(ctx, g, 1), "ReleaseLocks")
	noLockKeys(t, cleaner)
}

// testLockRace: goroutines of two clients take the same write lock again
// and again; no two ever hold it at once, and a counter in the engine,
// read and written in separate transactions under the lock, loses no
// increment.
func (s *suite) testLockRace(t *testing.T) {
	vol, m1 := s.fresh(t, defaultOpts())
	m2 := client(t, vol, defaultOpts())
	f := mkfile(t, m1, root, meta.RootIno, "f", 0o644)
	const perClient, rounds = 4, 8
	for _, kind := range []string{"flock", "posix"} {
		t.Run(kind, func(t *testing.T) {
			key := "locktest-" + kind
			var holders atomic.Int32
			var overlap atomic.Bool
			var wg sync.WaitGroup
			for i := 0; i < 2*perClient; i++ {
				m := []*meta.Meta{m1, m2}[i%2]
				owner := uint64(100 + i)
				wg.Add(1)
				go func() {
					defer wg.Done()
					wctx, cancel := context.WithTimeout(ctx, 2*lockWait)
					defer cancel()
					lock := func(ltype uint32) error {
						if kind == "flock" {
							return m.Flock(wctx, f, owner, ltype, ltype != un)
						}
						return m.Setlk(wctx, f, owner, ltype != un, ltype, 10, 20, uint32(owner))
					}
					for r := 0; r < rounds; r++ {
						if err := lock(wr); err != nil {
							t.Errorf("owner %d lock: %v", owner, err)
							return
						}
						if holders.Add(1) > 1 {
							overlap.Store(true)
						}
						var v int64
						err := m.Engine().View(wctx, func(tx kv.Tx) error {
							b, err := tx.Get(key)
							if b != nil {
								v, _ = strconv.ParseInt(string(b), 10, 64)
							}
							return err
						})
						if err == nil {
							time.Sleep(time.Millisecond)
							err = m.Engine().Update(wctx, func(tx kv.Tx) error {
								tx.Set(key, []byte(strconv.FormatInt(v+1, 10)))
								return nil
							})
						}
						holders.Add(-1)
						if err != nil {
							t.Errorf("owner %d counter: %v", owner, err)
						}
						if err := lock(un); err != nil {
							t.Errorf("owner %d unlock: %v", owner, err)
							return
						}
					}
				}()
			}
			wg.Wait()
			if overlap.Load() {
				t.Fatal("two owners held the write lock at once")
			}
			var got []byte
			ok(t, m1.Engine().View(ctx, func(tx kv.Tx) error {
				var err error
				got, err = tx.Get(key)
				return err
			}), "read counter")
			if want := strconv.Itoa(2 * perClient * rounds); string(got) != want {
				t.Fatalf("counter = %s, want %s: an increment was lost, so two owners held the lock at once", got, want)
			}
		})
	}
	noLockKeys(t, m1)
}
