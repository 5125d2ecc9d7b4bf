package volume_test

import (
	"bytes"
	"context"
	"math/rand/v2"
	"path/filepath"
	"testing"
	"time"

	"github.com/skiff-fs/skiff/fsclient/meta"
	"github.com/skiff-fs/skiff/fsclient/slice"
	"github.com/skiff-fs/skiff/fsclient/volume"
)

// newVolume formats and opens an embedded volume with a small block size.
func newVolume(t testing.TB) *volume.Volume {
	t.Helper()
	ctx := context.Background()
	url := "bolt://" + filepath.Join(t.TempDir(), "vol.db")
	if _, err := volume.Create(ctx, volume.FormatConfig{MetaURL: url, Name: "test", BlockSize: 64 << 10, Compression: "lz4"}); err != nil {
		t.Fatal(err)
	}
	// Frequent heartbeats publish the session's slice floor soon.
	v, err := volume.Open(ctx, volume.Config{MetaURL: url, Meta: meta.Options{Heartbeat: 20 * time.Millisecond}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { v.Close(ctx) })
	if err := v.Meta.NewSession(ctx, meta.SessionInfo{Version: "test"}); err != nil {
		t.Fatal(err)
	}
	return v
}

// writeFile creates name in the root with data, through the chunk layer.
func writeFile(t testing.TB, v *volume.Volume, name string, data []byte) meta.Ino {
	t.Helper()
	ctx := context.Background()
	ino, _, err := v.Meta.Create(ctx, meta.RootCaller(), meta.RootIno, name, 0o644, 0)
	if err != nil {
		t.Fatal(err)
	}
	w := v.Chunks.NewWriter(uint64(ino), v.ChunkMeta())
	if _, err := w.WriteAt(ctx, data, 0); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if err := v.Meta.Release(ctx, ino); err != nil {
		t.Fatal(err)
	}
	return ino
}

func TestFsckAndGC(t *testing.T) {
	ctx := context.Background()
	v := newVolume(t)
	data := make([]byte, 300<<10) // five 64 KiB blocks
	for i := range data {
		data[i] = byte(rand.IntN(7))
	}
	ino := writeFile(t, v, "f", data)

	r, err := v.Fsck(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !r.OK() || r.Slices != 1 || r.Blocks != 5 {
		t.Fatalf("fsck of a healthy volume: %+v", r)
	}
	// The layout shows one slice covering the file.
	attr, err := v.Meta.GetAttr(ctx, ino)
	if err != nil {
		t.Fatal(err)
	}
	lay, err := v.Layout(ctx, ino, attr.Size)
	if err != nil {
		t.Fatal(err)
	}
	if len(lay) != 1 || lay[0].Records != 1 || lay[0].Slices[0].Len != uint32(len(data)) {
		t.Fatalf("layout: %+v", lay)
	}
	if got, _, err := v.Resolve(ctx, "/f"); err != nil || got != ino {
		t.Fatalf("Resolve(/f) = %d, %v; want %d", got, err, ino)
	}

	// A block object no slice references is a leak; gc finds it and, when
	// asked, deletes it. A fresh one is left alone (it may be in flight).
	// (Its id was handed out, but its commit failed: no live session will
	// commit it, so it is below the slice floor.)
	strayID, err := v.Meta.NewSliceID(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := v.Meta.WriteChunk(ctx, 12345, 0, slice.Slice{ID: strayID, Size: 10, Len: 10}, time.Now()); err == nil {
		t.Fatal("WriteChunk to a missing inode succeeded")
	}
	stray := slice.BlockKey(strayID, 0, 10)
	for deadline := time.Now().Add(5 * time.Second); ; {
		f, err := v.Meta.SliceFloor(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if f > strayID {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("slice floor %d did not pass the failed slice %d", f, strayID)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err := v.Objects.Put(ctx, stray, bytes.Repeat([]byte{1}, 10)); err != nil {
		t.Fatal(err)
	}
	g, err := v.GC(ctx, true, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if g.Leaked != 0 || g.TooYoung != 1 || g.Objects != 6 {
		t.Fatalf("gc with min age: %+v", g)
	}
	g, err = v.GC(ctx, false, 0)
	if err != nil {
		t.Fatal(err)
	}
	if g.Leaked != 1 || g.Deleted != 0 || g.LeakedSample[0] != stray {
		t.Fatalf("gc dry run: %+v", g)
	}
	if g, err = v.GC(ctx, true, 0); err != nil || g.Deleted != 1 {
		t.Fatalf("gc --delete: %+v, %v", g, err)
	}
	if g, err = v.GC(ctx, false, 0); err != nil || g.Leaked != 0 || g.Objects != 5 {
		t.Fatalf("gc after delete: %+v, %v", g, err)
	}

	// A lost block is reported by name.
	var s slice.Slice
	if err := v.Meta.ListSlices(ctx, func(_ meta.Ino, _ uint32, x slice.Slice) error { s = x; return nil }); err != nil {
		t.Fatal(err)
	}
	lost := slice.BlockKey(s.ID, 2, 64<<10)
	if err := v.Objects.Delete(ctx, lost); err != nil {
		t.Fatal(err)
	}
	r, err = v.Fsck(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if r.OK() || len(r.Missing) != 1 || r.Missing[0] != lost {
		t.Fatalf("fsck after losing %s: %+v", lost, r)
	}
}

func TestCreateRefusesSecondFormatAndKeepsIdentity(t *testing.T) {
	ctx := context.Background()
	url := "bolt://" + filepath.Join(t.TempDir(), "v.db")
	f1, err := volume.Create(ctx, volume.FormatConfig{MetaURL: url, Name: "again"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := volume.Create(ctx, volume.FormatConfig{MetaURL: url, Name: "again"}); err == nil {
		t.Fatal("second format succeeded without force")
	}
	f2, err := volume.Create(ctx, volume.FormatConfig{MetaURL: url, Name: "again", Force: true})
	if err != nil {
		t.Fatal(err)
	}
	if f1.UUID != f2.UUID {
		t.Fatalf("forced re-format changed uuid %s → %s", f1.UUID, f2.UUID)
	}
	if _, err := volume.Create(ctx, volume.FormatConfig{MetaURL: url, Name: "again", Force: true, Encrypt: true, Passphrase: []byte("x")}); err == nil {
		t.Fatal("turning on encryption of an existing volume succeeded")
	}
}

// TestGCSparesSlicesBeingWritten: a slow steady writer has uploaded blocks
// of a slice it has not committed yet; gc --delete with no minimum age in
// between must leave them, so that after close fsck is clean and the data
// reads back byte for byte.
func TestGCSparesSlicesBeingWritten(t *testing.T) {
	ctx := context.Background()
	v := newVolume(t)
	ino, _, err := v.Meta.Create(ctx, meta.RootCaller(), meta.RootIno, "slow", 0o644, 0)
	if err != nil {
		t.Fatal(err)
	}
	const bs = 64 << 10
	data := make([]byte, 12*bs)
	for i := range data {
		data[i] = byte(rand.IntN(251))
	}
	w := v.Chunks.NewWriter(uint64(ino), v.ChunkMeta())
	write := func(from, to int) {
		for off := from; off < to; off += bs / 4 {
			if _, err := w.WriteAt(ctx, data[off:off+bs/4], int64(off)); err != nil {
				t.Fatal(err)
			}
			time.Sleep(5 * time.Millisecond) // steady: never idle for FlushAfter
		}
	}
	write(0, 8*bs)
	// Let the full blocks upload; the slice stays uncommitted.
	deadline := time.Now().Add(10 * time.Second)
	for {
		g, err := v.GC(ctx, false, 0)
		if err != nil {
			t.Fatal(err)
		}
		if g.Objects >= 7 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("blocks did not upload: %+v", g)
		}
		time.Sleep(20 * time.Millisecond)
	}
	g, err := v.GC(ctx, true, 0)
	if err != nil {
		t.Fatal(err)
	}
	if g.Deleted != 0 || g.Pending < 7 {
		t.Errorf("gc --delete during a write: %+v; want nothing deleted, the uncommitted blocks pending", g)
	}
	write(8*bs, len(data))
	if err := w.Close(ctx); err != nil {
		t.Fatal(err)
	}
	r, err := v.Fsck(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !r.OK() {
		t.Fatalf("fsck after gc during a write: %+v", r)
	}
	rd := v.Chunks.NewReader(uint64(ino), v.ChunkMeta())
	defer rd.Close()
	got := make([]byte, len(data))
	if n, err := rd.ReadAt(ctx, got, 0, uint64(len(data))); err != nil || n != len(data) {
		t.Fatalf("read back: %d, %v", n, err)
	}
	if !bytes.Equal(got, data) {
		t.Fatal("data read back differs from what was written")
	}
	if err := v.Meta.Release(ctx, ino); err != nil {
		t.Fatal(err)
	}
}
