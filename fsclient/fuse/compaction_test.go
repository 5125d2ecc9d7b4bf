package fuse_test

import (
	"bytes"
	"context"
	"math/rand/v2"
	"os"
	"testing"
	"time"

	"github.com/skiff-fs/skiff/fsclient/chunk"
	"github.com/skiff-fs/skiff/fsclient/fuse/fusetest"
	"github.com/skiff-fs/skiff/fsclient/meta"
	"github.com/skiff-fs/skiff/internal/testredis"
)

// TestLongOpenReaderSurvivesCompaction: a reader on one client holds a
// file open (its slice map cached) while another client compacts the file
// and the old slices' blocks are freed; the reader's next read must reload
// the map and return the right bytes, not EIO.
func TestLongOpenReaderSurvivesCompaction(t *testing.T) {
	ctx := context.Background()
	srv := testredis.Start(t)
	const bs = 64 << 10
	cfg := fusetest.Config{
		MetaURL:   srv.URL(),
		BlockSize: bs,
		Meta:      meta.Options{SliceFreeDelay: time.Millisecond},
		Chunk:     chunk.Config{CompactThreshold: 1000},
	}
	m1 := fusetest.Start(t, cfg)
	cfg2 := m1.Config
	cfg2.Dir = ""
	m2 := fusetest.Start(t, cfg2)

	// Many small slices: one per 64 KiB write + fsync.
	data := make([]byte, 24*bs)
	for i := range data {
		data[i] = byte(rand.IntN(256))
	}
	f, err := os.Create(m1.Path("f"))
	if err != nil {
		t.Fatal(err)
	}
	for off := 0; off < len(data); off += bs {
		if _, err := f.WriteAt(data[off:off+bs], int64(off)); err != nil {
			t.Fatal(err)
		}
		if err := f.Sync(); err != nil {
			t.Fatal(err)
		}
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	ino, _, err := m1.Volume.Resolve(ctx, "/f")
	if err != nil {
		t.Fatal(err)
	}

	// The long-open reader reads the start: its slice map is now cached.
	r, err := os.Open(m2.Path("f"))
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	head := make([]byte, bs)
	if _, err := r.ReadAt(head, 0); err != nil || !bytes.Equal(head, data[:bs]) {
		t.Fatalf("first read: %v", err)
	}

	// Compact on the writer's client and wait until the old slices'
	// blocks are deleted.
	if err := m1.Volume.Chunks.Compact(ctx, m1.Volume.ChunkMeta(), uint64(ino), 0); err != nil {
		t.Fatal(err)
	}
	recs, err := m1.Volume.Meta.ReadChunk(ctx, ino, 0)
	if err != nil || len(recs) != 1 {
		t.Fatalf("after compaction: %d records, %v", len(recs), err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		n := 0
		if err := m1.Volume.Meta.PendingSlices(ctx, func(uint64, uint32, time.Time) error { n++; return nil }); err != nil {
			t.Fatal(err)
		}
		if n == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d compacted slices still waiting to be freed", n)
		}
		time.Sleep(20 * time.Millisecond)
	}

	// The rest of the file, never read before (not in the page cache).
	rest := make([]byte, len(data)-bs)
	if _, err := r.ReadAt(rest, bs); err != nil {
		t.Fatalf("read after compaction freed the old blocks: %v", err)
	}
	if !bytes.Equal(rest, data[bs:]) {
		t.Fatal("read after compaction returned wrong bytes")
	}
}
