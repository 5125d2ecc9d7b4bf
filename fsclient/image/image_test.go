package image_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"

	"github.com/skiff-fs/skiff/fsclient/cache"
	"github.com/skiff-fs/skiff/fsclient/image"
)

func data(seed uint64, n int) []byte {
	b := make([]byte, n)
	r := rand.New(rand.NewPCG(seed, seed))
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

func stamp(b []byte, t int64) image.Stamp {
	return image.Stamp{Size: uint64(len(b)), Mtime: t, Ctime: t + 1}
}

func build(t *testing.T, s *image.Store, ino uint64, st image.Stamp, b []byte) error {
	t.Helper()
	return s.Build(context.Background(), ino, st, bytes.NewReader(b).ReadAt)
}

func mustRead(t *testing.T, s *image.Store, ino uint64, st image.Stamp, want []byte) {
	t.Helper()
	f, ok := s.Lookup(ino, st)
	if !ok {
		t.Fatalf("inode %d: no image", ino)
	}
	defer f.Close()
	got, err := io.ReadAll(f)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("inode %d: image of %d bytes differs from the file's %d", ino, len(got), len(want))
	}
}

func TestBuildLookup(t *testing.T) {
	dir := t.TempDir()
	s, err := image.Open(image.Config{Dir: dir, MinSize: 1})
	if err != nil {
		t.Fatal(err)
	}
	a := data(1, 3<<20+17)
	st := stamp(a, 100)
	if err := build(t, s, 7, st, a); err != nil {
		t.Fatal(err)
	}
	mustRead(t, s, 7, st, a)
	if !s.Has(7, st) || s.Has(7, stamp(a, 101)) {
		t.Fatal("Has")
	}
	// Another stamp (the file changed) finds nothing and drops the image.
	if f, ok := s.Lookup(7, stamp(a, 101)); ok {
		f.Close()
		t.Fatal("an image of another stamp was returned")
	}
	if st := s.Stats(); st.Images != 0 || st.Bytes != 0 {
		t.Fatalf("stale image kept: %+v", st)
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 0 {
		t.Fatalf("files left: %v", ents)
	}
	// A read that comes up short (the file shrank) builds nothing.
	err = s.Build(context.Background(), 8, image.Stamp{Size: uint64(len(a)) + 5}, bytes.NewReader(a).ReadAt)
	if !errors.Is(err, image.ErrChanged) {
		t.Fatalf("short read: %v", err)
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 0 {
		t.Fatalf("files left after a failed build: %v", ents)
	}
}

// TestReopen: images survive a restart; temporary and foreign files do
// not; an image whose size is not its stamp's is dropped.
func TestReopen(t *testing.T) {
	dir := t.TempDir()
	s, err := image.Open(image.Config{Dir: dir, MinSize: 1})
	if err != nil {
		t.Fatal(err)
	}
	a, b := data(1, 1<<20), data(2, 2<<20)
	if err := errors.Join(build(t, s, 1, stamp(a, 5), a), build(t, s, 2, stamp(b, 6), b)); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(dir, ".3-123.tmp"), []byte("partial"), 0o600)
	os.WriteFile(filepath.Join(dir, "junk"), []byte("x"), 0o600)
	// Damage: image 2 cut short.
	if err := os.Truncate(filepath.Join(dir, "2-200000-6-7"), 100); err != nil {
		t.Fatal(err)
	}
	s2, err := image.Open(image.Config{Dir: dir, MinSize: 1})
	if err != nil {
		t.Fatal(err)
	}
	mustRead(t, s2, 1, stamp(a, 5), a)
	if s2.Has(2, stamp(b, 6)) {
		t.Fatal("a truncated image was indexed")
	}
	ents, _ := os.ReadDir(dir)
	if len(ents) != 1 {
		t.Fatalf("files after reopen: %v", ents)
	}
}

// TestLimits: images stay under their own limit (least recently used go
// first) and under the block cache's, whose entries they push out.
func TestLimits(t *testing.T) {
	const mib = 1 << 20
	s, err := image.Open(image.Config{Dir: t.TempDir(), MinSize: 1, Limit: 7 * mib})
	if err != nil {
		t.Fatal(err)
	}
	imgs := make([][]byte, 4)
	for i := range imgs {
		imgs[i] = data(uint64(i), 2*mib)
		if i == 2 {
			mustRead(t, s, 1, stamp(imgs[0], 1), imgs[0]) // 0 is used: 1 is the oldest
		}
		if err := build(t, s, uint64(i+1), stamp(imgs[i], 1), imgs[i]); err != nil {
			t.Fatal(err)
		}
		if st := s.Stats(); st.Bytes > st.Limit {
			t.Fatalf("after image %d: %+v", i, st)
		}
	}
	if !s.Has(1, stamp(imgs[0], 1)) || s.Has(2, stamp(imgs[1], 1)) || !s.Has(4, stamp(imgs[3], 1)) {
		t.Fatalf("the wrong image was evicted: %+v", s.Stats())
	}
	if err := build(t, s, 9, stamp(data(9, 8*mib), 1), data(9, 8*mib)); !errors.Is(err, image.ErrNoRoom) {
		t.Fatalf("an image over the limit: %v", err)
	}

	c, err := cache.New(cache.Config{Dir: t.TempDir(), Size: 8 * mib, MemSize: -1, FreeRatio: -1, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for i := range 7 {
		c.Put(filepath.Join("k", string(rune('a'+i))), data(uint64(i), mib-8192))
	}
	s2, err := image.Open(image.Config{Dir: t.TempDir(), MinSize: 1, Cache: c})
	if err != nil {
		t.Fatal(err)
	}
	if err := build(t, s2, 1, stamp(imgs[0], 1), imgs[0]); err != nil {
		t.Fatal(err)
	}
	cs := c.Stats()
	if cs.Claimed != 2*mib || cs.Bytes+cs.Claimed > cs.Limit || cs.Evictions == 0 {
		t.Fatalf("cache after an image: %+v", cs)
	}
	s2.Remove(1)
	if cs := c.Stats(); cs.Claimed != 0 {
		t.Fatalf("cache after removing the image: %+v", cs)
	}
}
