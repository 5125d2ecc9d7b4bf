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
	v, err := volume.Open(ctx, volume.Config{MetaURL: url})
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
	stray := slice.BlockKey(999_999, 0, 10)
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
