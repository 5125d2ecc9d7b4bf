package volume

import (
	"context"
	"fmt"
	"sort"
	"time"

	"github.com/skiff-fs/skiff/fsclient/meta"
	"github.com/skiff-fs/skiff/fsclient/object"
	"github.com/skiff-fs/skiff/fsclient/slice"
)

// chunkPrefix is where block objects live under the volume's prefix.
const chunkPrefix = "chunks/"

// listBlocks calls fn for every block object of the volume.
func listBlocks(ctx context.Context, objs object.Store, fn func(info object.Info, id uint64, index int, length uint32) error) error {
	after := ""
	for {
		page, err := objs.List(ctx, chunkPrefix, after, 1000)
		if err != nil {
			return fmt.Errorf("list %s%s: %w", objs, chunkPrefix, err)
		}
		if len(page) == 0 {
			return nil
		}
		for _, info := range page {
			id, idx, l, err := slice.ParseBlockKey(info.Key)
			if err != nil {
				// Not ours (or a temp file): gc reports it as unknown.
				if err := fn(info, 0, -1, 0); err != nil {
					return err
				}
				continue
			}
			if err := fn(info, id, idx, l); err != nil {
				return err
			}
		}
		after = page[len(page)-1].Key
	}
}

// liveSlices returns the stored size of every slice that metadata still
// references, including those waiting for delayed deletion.
func (v *Volume) liveSlices(ctx context.Context) (map[uint64]uint32, error) {
	live := make(map[uint64]uint32)
	err := v.Meta.ListSlices(ctx, func(_ meta.Ino, _ uint32, s slice.Slice) error {
		if s.ID != 0 {
			live[s.ID] = s.Size
		}
		return nil
	})
	return live, err
}

// GCReport is what GC found (and removed, when asked).
type GCReport struct {
	Objects      int    // block objects listed
	LiveSlices   int    // slices referenced by metadata
	Leaked       int    // block objects of no live slice, older than MinAge
	LeakedBytes  int64  // their stored size
	Unknown      int    // objects under chunks/ that are not block keys
	Deleted      int    // leaked objects deleted
	TooYoung     int    // unreferenced objects skipped as possibly in flight
	Pending      int    // unreferenced objects of slice ids at or above Floor
	Floor        uint64 // lowest slice id a live session may still commit
	LeakedSample []string
}

// GC lists every block object and reports those no live slice references
// (leaked by crashed writers). Objects newer than minAge are left alone:
// they may belong to a slice being uploaded right now. With del set, the
// leaked objects are deleted. Objects of slices with ids at or above the
// slice floor (meta.SliceFloor) are never deleted, whatever their age: a
// live session may still commit them (a slow writer uploads blocks long
// before it commits the slice).
func (v *Volume) GC(ctx context.Context, del bool, minAge time.Duration) (GCReport, error) {
	var r GCReport
	// The floor first: a slice committed after it was read is either in
	// the live set read next or at or above the floor.
	floor, err := v.Meta.SliceFloor(ctx)
	if err != nil {
		return r, err
	}
	r.Floor = floor
	live, err := v.liveSlices(ctx)
	if err != nil {
		return r, err
	}
	r.LiveSlices = len(live)
	cutoff := time.Now().Add(-minAge)
	err = listBlocks(ctx, v.Objects, func(info object.Info, id uint64, idx int, _ uint32) error {
		r.Objects++
		if idx < 0 {
			r.Unknown++
			return nil
		}
		if _, ok := live[id]; ok {
			return nil
		}
		if id >= floor {
			r.Pending++
			return nil
		}
		if info.ModTime.After(cutoff) {
			r.TooYoung++
			return nil
		}
		r.Leaked++
		r.LeakedBytes += info.Size
		if len(r.LeakedSample) < 10 {
			r.LeakedSample = append(r.LeakedSample, info.Key)
		}
		if del {
			if err := v.Objects.Delete(ctx, info.Key); err != nil {
				return fmt.Errorf("delete leaked %s: %w", info.Key, err)
			}
			r.Deleted++
		}
		return nil
	})
	return r, err
}

// FsckReport is what Fsck found. A healthy volume has no Missing blocks and
// no tree problems.
type FsckReport struct {
	Slices  int      // live slices checked
	Blocks  int      // blocks they need
	Missing []string // block keys that are not in the bucket
	Tree    meta.Report
}

// OK reports whether the volume is consistent.
func (r FsckReport) OK() bool { return len(r.Missing) == 0 && r.Tree.OK() }

// Fsck verifies that every block of every live slice exists in the bucket
// and that the metadata tree is consistent. It changes nothing.
func (v *Volume) Fsck(ctx context.Context) (FsckReport, error) {
	var r FsckReport
	live, err := v.liveSlices(ctx)
	if err != nil {
		return r, err
	}
	r.Slices = len(live)
	have := make(map[string]struct{})
	if err := listBlocks(ctx, v.Objects, func(info object.Info, _ uint64, idx int, _ uint32) error {
		if idx >= 0 {
			have[info.Key] = struct{}{}
		}
		return nil
	}); err != nil {
		return r, err
	}
	for id, size := range live {
		for _, b := range slice.Blocks(size, v.Format.BlockSize) {
			r.Blocks++
			key := slice.BlockKey(id, b.Index, b.Len)
			if _, ok := have[key]; !ok {
				r.Missing = append(r.Missing, key)
			}
		}
	}
	sort.Strings(r.Missing)
	r.Tree, err = v.Meta.CheckTree(ctx)
	return r, err
}
