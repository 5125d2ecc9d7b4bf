package volume

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sync"

	"github.com/skiff-fs/skiff/fsclient/format"
	"github.com/skiff-fs/skiff/fsclient/meta"
	"github.com/skiff-fs/skiff/fsclient/object"
)

// SliceIDMark is the slice-id high-water mark kept in the volume marker
// object, outside the metadata engine: no slice id above Reserved has been
// handed out, and the engine's counter has reached at least Reached. A
// metadata engine whose counter is below Reached was rolled back; mounting
// it would hand out ids twice, so two slices would share block keys.
type SliceIDMark struct {
	Reached  uint64 `json:"reached"`
	Reserved uint64 `json:"reserved"`
}

// markWindowBatches is how many id batches the mark runs ahead of the
// counter: the marker object is written once per that many batches.
const markWindowBatches = 64

// idMark keeps the high-water mark advanced ahead of the ids the client
// hands out (meta.Options.OnSliceIDs).
type idMark struct {
	window uint64
	mu     sync.Mutex
	objs   object.Store // nil until the bucket is open
	f      *format.Format
	meta   string
	known  uint64 // the Reserved last read or written
}

// readMarker reads the volume marker; ok is false when there is none.
func readMarker(ctx context.Context, objs object.Store) (marker, bool, error) {
	var mk marker
	rc, err := objs.Get(ctx, markerKey, 0, -1)
	if errors.Is(err, object.ErrNotFound) {
		return mk, false, nil
	}
	if err != nil {
		return mk, false, fmt.Errorf("read %s in %s: %w", markerKey, objs, err)
	}
	b, err := io.ReadAll(rc)
	rc.Close()
	if err != nil {
		return mk, false, fmt.Errorf("read %s in %s: %w", markerKey, objs, err)
	}
	if err := json.Unmarshal(b, &mk); err != nil {
		return mk, false, fmt.Errorf("%s in %s is not a volume marker: %w", markerKey, objs, err)
	}
	return mk, true, nil
}

// advance makes sure the mark covers id last before any id up to it is
// handed out. Concurrent clients may overwrite each other's marker; each
// writes last+window, so a lower write still covers the ids of a writer
// fewer than markWindowBatches batches ahead.
func (im *idMark) advance(ctx context.Context, last uint64) error {
	im.mu.Lock()
	defer im.mu.Unlock()
	if last <= im.known {
		return nil
	}
	if im.objs == nil {
		return errors.New("slice id high-water mark: the volume's bucket is not open yet")
	}
	mk, ok, err := readMarker(ctx, im.objs)
	if err != nil {
		return fmt.Errorf("slice id high-water mark: %w", err)
	}
	if !ok {
		mk = marker{UUID: im.f.UUID, Name: im.f.Name, Meta: im.meta, Created: im.f.Created}
	}
	if mk.SliceIDs != nil && mk.SliceIDs.Reserved >= last {
		im.known = mk.SliceIDs.Reserved
		return nil
	}
	next := SliceIDMark{Reached: last, Reserved: last + im.window}
	if mk.SliceIDs != nil {
		next.Reached = max(next.Reached, mk.SliceIDs.Reached)
	}
	mk.SliceIDs = &next
	b, _ := json.Marshal(mk)
	if err := im.objs.Put(ctx, markerKey, b); err != nil {
		return fmt.Errorf("slice id high-water mark: write %s in %s: %w", markerKey, im.objs, err)
	}
	im.known = next.Reserved
	return nil
}

// checkSliceIDs compares the engine's slice counter with the mark. A
// counter below Reached means the engine was rolled back: Open refuses,
// unless repair is set, which raises the counter past the mark. A counter
// inside the window (below Reserved) is raised to Reserved, as ids up to
// there may have been handed out since the mark was last written.
func (im *idMark) checkSliceIDs(ctx context.Context, m *meta.Meta, repair bool) error {
	mk, ok, err := readMarker(ctx, im.objs)
	if err != nil || !ok || mk.SliceIDs == nil {
		return err
	}
	im.mu.Lock()
	im.known = max(im.known, mk.SliceIDs.Reserved)
	im.mu.Unlock()
	c, err := m.SliceCounter(ctx)
	if err != nil {
		return err
	}
	if c < mk.SliceIDs.Reached && !repair {
		return fmt.Errorf("volume %q: %w: its slice counter is %d, but the bucket's high-water mark (%s) records that ids up to %d were reserved. "+
			"The metadata lost writes (a failover with asynchronous replication, or a restore of an older snapshot); mounting would hand out those ids again and mix data of different files. "+
			"Stop every client of the volume, then run `skiff fsck --repair-ids META_URL`, which raises the counter past the mark (and check the files written just before the rollback)",
			im.f.Name, meta.ErrSliceIDsBehind, c, markerKey, mk.SliceIDs.Reached)
	}
	if c < mk.SliceIDs.Reserved {
		if err := m.RaiseSliceCounter(ctx, mk.SliceIDs.Reserved); err != nil {
			return err
		}
	}
	return nil
}
