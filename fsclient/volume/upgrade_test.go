package volume_test

import (
	"bytes"
	"context"
	"io"
	"math/rand/v2"
	"path/filepath"
	"testing"

	"github.com/skiff-fs/skiff/fsclient/format"
	"github.com/skiff-fs/skiff/fsclient/meta"
	"github.com/skiff-fs/skiff/fsclient/slice"
	"github.com/skiff-fs/skiff/fsclient/volume"
)

// TestUpgradeToBlockFormat2: a volume at data format 1 keeps writing
// format 1 blocks (older clients can read them); re-writing its settings
// (skiff format --force) moves it to format 2 and records that format 1
// blocks remain, and files of both formats read back byte-exact, whole
// and by random ranges.
func TestUpgradeToBlockFormat2(t *testing.T) {
	ctx := context.Background()
	url := "bolt://" + filepath.Join(t.TempDir(), "v.db")
	fc := volume.FormatConfig{MetaURL: url, Name: "up", BlockSize: 64 << 10}
	if _, err := volume.Create(ctx, fc); err != nil {
		t.Fatal(err)
	}
	// Make it a volume formatted by a version 1 skiff.
	m, err := meta.Open(ctx, url, meta.Options{})
	if err != nil {
		t.Fatal(err)
	}
	f, err := m.Load(ctx)
	if err != nil {
		t.Fatal(err)
	}
	f.Version = 1
	if err := m.Format(ctx, f, true); err != nil {
		t.Fatal(err)
	}
	m.Close(ctx)

	r := rand.New(rand.NewPCG(1, 1))
	files := map[string][]byte{}
	write := func(name string, wantVersion byte) {
		v, err := volume.Open(ctx, volume.Config{MetaURL: url})
		if err != nil {
			t.Fatal(err)
		}
		defer v.Close(ctx)
		if err := v.Meta.NewSession(ctx, meta.SessionInfo{Version: "test"}); err != nil {
			t.Fatal(err)
		}
		data := make([]byte, 300<<10)
		for i := range data {
			data[i] = byte(r.Uint32())
		}
		ino := writeFile(t, v, name, data)
		files[name] = data
		recs, err := v.Meta.ReadChunk(ctx, ino, 0)
		if err != nil {
			t.Fatal(err)
		}
		rc, err := v.Objects.Get(ctx, slice.BlockKey(recs[0].ID, 0, 64<<10), 0, 1)
		if err != nil {
			t.Fatal(err)
		}
		hdr, _ := io.ReadAll(rc)
		rc.Close()
		if len(hdr) != 1 || hdr[0]>>4 != wantVersion {
			t.Fatalf("%s: block header %x, want format %d", name, hdr, wantVersion)
		}
	}
	write("old", 1)
	f, err = volume.Create(ctx, volume.FormatConfig{MetaURL: url, Name: "up", BlockSize: 64 << 10, Force: true})
	if err != nil {
		t.Fatal(err)
	}
	if f.Version != format.Version || f.OldestVersion != 1 || !f.MixedBlocks() {
		t.Fatalf("after re-format: version %d, oldest %d; want %d and 1", f.Version, f.OldestVersion, format.Version)
	}
	write("new", 2)
	// A second re-format keeps the record of format 1 blocks.
	if f, err = volume.Create(ctx, volume.FormatConfig{MetaURL: url, Name: "up", BlockSize: 64 << 10, Force: true}); err != nil || f.OldestVersion != 1 {
		t.Fatalf("second re-format: oldest version %v, %v; want 1", f, err)
	}

	v, err := volume.Open(ctx, volume.Config{MetaURL: url})
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close(ctx)
	for name, data := range files {
		ino, _, err := v.Meta.Lookup(ctx, meta.RootCaller(), meta.RootIno, name)
		if err != nil {
			t.Fatal(err)
		}
		size := uint64(len(data))
		for i := 0; i < 50; i++ {
			off := r.Int64N(int64(size))
			p := make([]byte, 1+r.IntN(int(size-uint64(off))))
			if _, err := v.Chunks.NewReader(uint64(ino), v.ChunkMeta()).ReadAt(ctx, p, off, size); err != nil && err != io.EOF {
				t.Fatalf("%s: read %d+%d: %v", name, off, len(p), err)
			}
			if !bytes.Equal(p, data[off:off+int64(len(p))]) {
				t.Fatalf("%s: read %d+%d: wrong bytes", name, off, len(p))
			}
		}
	}
}
