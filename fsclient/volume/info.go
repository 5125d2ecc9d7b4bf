package volume

import (
	"context"
	"strings"
	"syscall"

	"github.com/skiff-fs/skiff/fsclient/meta"
	"github.com/skiff-fs/skiff/fsclient/slice"
)

// Resolve walks a slash-separated path from the volume's root as root.
func (v *Volume) Resolve(ctx context.Context, path string) (meta.Ino, meta.Attr, error) {
	ino := meta.RootIno
	attr, err := v.Meta.GetAttr(ctx, ino)
	if err != nil {
		return 0, attr, err
	}
	for _, name := range strings.Split(path, "/") {
		if name == "" || name == "." {
			continue
		}
		if attr.Typ != meta.TypeDir {
			return 0, attr, syscall.ENOTDIR
		}
		ino, attr, err = v.Meta.Lookup(ctx, meta.RootCaller(), ino, name)
		if err != nil {
			return 0, attr, err
		}
	}
	return ino, attr, nil
}

// ChunkLayout is one chunk of a file as stored: how many slice records it
// holds and what is visible.
type ChunkLayout struct {
	Index   uint32
	Records int
	Slices  []slice.Slice // visible pieces (Resolve), holes have ID 0
}

// Layout returns the chunk layout of a file of the given size.
func (v *Volume) Layout(ctx context.Context, ino meta.Ino, size uint64) ([]ChunkLayout, error) {
	var out []ChunkLayout
	for c := uint32(0); uint64(c)*slice.ChunkSize < size; c++ {
		recs, err := v.Meta.ReadChunk(ctx, ino, c)
		if err != nil {
			return nil, err
		}
		if len(recs) == 0 {
			continue
		}
		out = append(out, ChunkLayout{Index: c, Records: len(recs), Slices: slice.Resolve(recs)})
	}
	return out, nil
}
