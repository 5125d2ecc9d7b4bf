package metatest

import (
	"testing"
	"time"

	"github.com/skiff-fs/skiff/fsclient/meta"
	"github.com/skiff-fs/skiff/fsclient/slice"
)

// testSliceFloor: SliceFloor never rises above an id that a live session
// handed out and has not committed, rises once the ids are committed, and
// forgets closed sessions.
func (s *suite) testSliceFloor(t *testing.T) {
	opts := defaultOpts()
	opts.Heartbeat = 20 * time.Millisecond
	vol, a := s.fresh(t, opts)
	floor := func(m *meta.Meta) uint64 {
		t.Helper()
		f, err := m.SliceFloor(ctx)
		ok(t, err, "SliceFloor")
		return f
	}
	ino := mkfile(t, a, root, meta.RootIno, "f", 0o644)

	// A second client takes an id first and does not commit it.
	b := client(t, vol, opts)
	idB, err := b.NewSliceID(ctx)
	ok(t, err, "NewSliceID")

	// Ids handed out but not committed hold the floor down, across batch
	// boundaries (IDBatch is 10) and heartbeats.
	var held []uint64
	for range 25 {
		id, err := a.NewSliceID(ctx)
		ok(t, err, "NewSliceID")
		held = append(held, id)
	}
	time.Sleep(100 * time.Millisecond) // heartbeats publish the floor again
	if f := floor(a); f > min(idB, held[0]) {
		t.Fatalf("SliceFloor = %d with slices %d and %d uncommitted", f, idB, held[0])
	}
	// Committing all but the last of a's ids leaves b's id the floor.
	for _, id := range held[:len(held)-1] {
		ok(t, a.WriteChunk(ctx, ino, 0, slice.Slice{ID: id, Size: 10, Len: 10}, time.Now()), "WriteChunk")
	}
	time.Sleep(100 * time.Millisecond)
	if f := floor(a); f > idB {
		t.Fatalf("SliceFloor = %d with slice %d of the other session uncommitted", f, idB)
	}
	// Once b is gone, a's last uncommitted id is the floor; once that is
	// committed, the next id a would hand out.
	ok(t, b.Close(ctx), "Close")
	last := held[len(held)-1]
	waitFor(t, "the floor to rise to a's last uncommitted id", 5*time.Second, func() bool {
		return floor(a) == last
	})
	ok(t, a.WriteChunk(ctx, ino, 0, slice.Slice{ID: last, Size: 10, Len: 10}, time.Now()), "WriteChunk")
	waitFor(t, "the floor to rise past a's ids", 5*time.Second, func() bool {
		return floor(a) == last+1
	})
	next, err := a.NewSliceID(ctx)
	ok(t, err, "NewSliceID")
	if f := floor(a); f > next {
		t.Fatalf("SliceFloor = %d after NewSliceID gave %d", f, next)
	}
	ok(t, a.Close(ctx), "Close")
	c := vol.Open(t, opts) // no session
	n, err := c.SliceCounter(ctx)
	ok(t, err, "SliceCounter")
	if f := floor(c); f != n+1 {
		t.Fatalf("SliceFloor with no sessions = %d, want counter+1 = %d", f, n+1)
	}
}
