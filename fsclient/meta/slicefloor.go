package meta

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
)

// keySessSlice is the hash session id -> decimal slice floor: the lowest
// slice id that session may still commit. See SliceFloor.
const keySessSlice = "sessslice"

// ErrSliceIDsBehind is returned (wrapped) when the engine's slice counter
// is below ids that were already handed out: the metadata was rolled back
// (a failover that lost writes, a restore of an older snapshot). Handing
// out ids again from there would let two slices share block keys.
var ErrSliceIDsBehind = errors.New("the metadata engine's slice id counter went backwards (rolled back)")

// sliceFlight is the set of slice ids this client handed out (NewSliceID)
// and has not yet committed (WriteChunk, CompactChunk). Its minimum, with
// the allocator's next id, is this session's slice floor.
type sliceFlight struct {
	mu  sync.Mutex
	ids map[uint64]struct{}
}

func (f *sliceFlight) add(id uint64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.ids == nil {
		f.ids = make(map[uint64]struct{})
	}
	f.ids[id] = struct{}{}
}

func (f *sliceFlight) done(ids ...uint64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, id := range ids {
		delete(f.ids, id)
	}
}

// min returns the lowest id in flight that is below limit, else limit.
func (f *sliceFlight) min(limit uint64) uint64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	for id := range f.ids {
		limit = min(limit, id)
	}
	return limit
}

// floor returns this client's slice floor: no id below it will be
// committed by this client from now on. ok is false when the client has
// reserved no slice ids.
func (m *Meta) floor() (uint64, bool) {
	a := &m.slices
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.next == 0 {
		return 0, false
	}
	return m.flight.min(a.next), true
}

// slicesReserved runs (under m.slices.mu) when a new batch [first, last]
// of slice ids was reserved, before any of it is handed out: it refuses a
// counter that went backwards, advances the high-water mark (OnSliceIDs)
// and publishes the session's floor so gc spares the batch's blocks.
func (m *Meta) slicesReserved(ctx context.Context, first, last uint64) error {
	if prev := m.slices.end; prev != 0 && last <= prev {
		return fmt.Errorf("%w: it gave %d after this client had reserved up to %d; stop every client and run `skiff fsck --repair-ids META_URL`", ErrSliceIDsBehind, last, prev)
	}
	if m.opts.OnSliceIDs != nil {
		if err := m.opts.OnSliceIDs(ctx, last); err != nil {
			return err
		}
	}
	sid := m.sessionID()
	if sid == 0 {
		return nil
	}
	floor := m.flight.min(first)
	return m.update(ctx, func(t *txn) error {
		t.tx.HSet(keySessSlice, strconv.FormatUint(sid, 10), []byte(strconv.FormatUint(floor, 10)))
		return nil
	})
}

// floorSnapshot is the session's floor taken before a transaction that
// publishes it: a floor taken earlier is never above the current one, so a
// late write only makes gc more careful. (It is taken outside the
// transaction: m.slices.mu is held across a transaction by slicesReserved,
// and bbolt's write lock must not be taken in the other order.)
type floorSnapshot struct {
	v  uint64
	ok bool
}

func (m *Meta) floorSnapshot() floorSnapshot {
	v, ok := m.floor()
	return floorSnapshot{v, ok}
}

// publishFloor records the snapshot as session sid's floor.
func (t *txn) publishFloor(sid uint64, f floorSnapshot) {
	if f.ok {
		t.tx.HSet(keySessSlice, strconv.FormatUint(sid, 10), []byte(strconv.FormatUint(f.v, 10)))
	}
}

// SliceFloor returns the lowest slice id that a live session may still
// commit: the minimum of every registered session's published floor and
// of the next id the shared counter would give. Blocks of slices with ids
// at or above it may belong to a write in progress, so gc must not delete
// them even when no metadata references them yet. Read it before reading
// the set of live slices: a slice committed in between is then either in
// that set or at or above the floor.
func (m *Meta) SliceFloor(ctx context.Context) (uint64, error) {
	var floor uint64
	err := m.view(ctx, func(t *txn) error {
		b, err := t.tx.Get(keyNextSlice)
		if err != nil {
			return err
		}
		var next uint64
		if b != nil {
			if next, err = strconv.ParseUint(string(b), 10, 64); err != nil {
				return fmt.Errorf("%s: %w", keyNextSlice, err)
			}
		}
		floor = next + 1
		live, err := t.tx.HGetAll(keySessions)
		if err != nil {
			return err
		}
		floors, err := t.tx.HGetAll(keySessSlice)
		if err != nil {
			return err
		}
		for sid, v := range floors {
			if _, ok := live[sid]; !ok {
				continue // a session cleaned up: its writes can no longer commit
			}
			f, err := strconv.ParseUint(string(v), 10, 64)
			if err != nil {
				return fmt.Errorf("%s of session %s: %w", keySessSlice, sid, err)
			}
			floor = min(floor, f)
		}
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("meta slice floor: %w", err)
	}
	return floor, nil
}

// SliceCounter returns the engine's slice counter: the last slice id
// reserved by any client.
func (m *Meta) SliceCounter(ctx context.Context) (uint64, error) {
	var n uint64
	err := m.view(ctx, func(t *txn) error {
		b, err := t.tx.Get(keyNextSlice)
		if err != nil || b == nil {
			return err
		}
		n, err = strconv.ParseUint(string(b), 10, 64)
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("meta read slice counter: %w", err)
	}
	return n, nil
}

// RaiseSliceCounter sets the slice counter to to when it is lower, so no
// id up to to is handed out again. It never lowers the counter.
func (m *Meta) RaiseSliceCounter(ctx context.Context, to uint64) error {
	// Incr, not a transaction: other clients reserve with INCRBY meanwhile.
	cur, err := m.engine.Incr(ctx, keyNextSlice, 0)
	if err != nil {
		return fmt.Errorf("meta raise slice counter: %w", err)
	}
	if uint64(cur) >= to {
		return nil
	}
	if _, err := m.engine.Incr(ctx, keyNextSlice, int64(to-uint64(cur))); err != nil {
		return fmt.Errorf("meta raise slice counter: %w", err)
	}
	return nil
}
