package fuse_test

import (
	"bytes"
	"errors"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/skiff-fs/skiff/fsclient/cache"
	"github.com/skiff-fs/skiff/fsclient/fuse"
	"github.com/skiff-fs/skiff/fsclient/fuse/fusetest"
	"github.com/skiff-fs/skiff/fsclient/vfs"
	"github.com/skiff-fs/skiff/internal/testredis"
)

// readCounter counts the READ requests skiff serves.
type readCounter struct{ n atomic.Int64 }

func (c *readCounter) ObserveOp(op string, _ time.Duration, _ syscall.Errno) {
	if op == "read" {
		c.n.Add(1)
	}
}

// passthroughKernel reports whether the running kernel has FUSE
// passthrough (Linux 6.9).
func passthroughKernel(t *testing.T) bool {
	var u unix.Utsname
	if err := unix.Uname(&u); err != nil {
		t.Fatal(err)
	}
	var major, minor int
	for i, s := 0, unix.ByteSliceToString(u.Release[:]); i < len(s); i++ {
		if s[i] == '.' {
			for _, c := range s[i+1:] {
				if c < '0' || c > '9' {
					break
				}
				minor = minor*10 + int(c-'0')
			}
			break
		}
		major = major*10 + int(s[i]-'0')
	}
	return major > 6 || major == 6 && minor >= 9
}

// waitImages waits until m's vfs holds n file images.
func waitImages(t *testing.T, m *fusetest.Mount, n int) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for m.VFS.ImageStats().Images != n {
		if time.Now().After(deadline) {
			t.Fatalf("%d file images after 30s, want %d", m.VFS.ImageStats().Images, n)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// directRead preads len bytes at off with O_DIRECT.
func directRead(t *testing.T, p string, off int64, n int) []byte {
	t.Helper()
	fd, err := unix.Open(p, unix.O_RDONLY|unix.O_DIRECT, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	raw := make([]byte, n+4096)
	buf := raw[4096-int(uintptr(unsafe.Pointer(&raw[0]))%4096):][:n]
	if got, err := unix.Pread(fd, buf, off); err != nil || got != n {
		t.Fatalf("O_DIRECT pread of %d at %d: %d, %v", n, off, got, err)
	}
	return buf
}

// TestPassthrough: once a file is wholly in the block cache, a read-only
// open reads it through its file image with no READ reaching skiff —
// buffered and O_DIRECT alike, several readers at once; a writer meanwhile
// is refused (ETXTBSY) without truncating; a change by another client is
// read by the next open, through skiff even while the first reader (which
// keeps its state) is open; and once the readers are gone, writes work
// and are read back.
func TestPassthrough(t *testing.T) {
	if !passthroughKernel(t) {
		t.Skip("FUSE passthrough needs Linux 6.9 or later")
	}
	srv := testredis.Start(t)
	var reads readCounter
	m1 := fusetest.Start(t, fusetest.Config{
		MetaURL: srv.URL(),
		Cache:   &cache.Config{Dir: t.TempDir(), MemSize: -1, FreeRatio: -1},
		VFS:     vfs.Config{Images: true},
		Mount:   fusetestMount(&reads),
	})
	cfg := m1.Config
	cfg.Dir, cfg.Cache, cfg.VFS, cfg.Mount = "", nil, vfs.Config{}, fusetestMount(nil)
	cfg.Mount.Passthrough = false
	m2 := fusetest.Start(t, cfg)

	const size = 9<<20 + 4096*3
	data := make([]byte, size)
	r := rand.New(rand.NewPCG(1, 2))
	for i := range data {
		data[i] = byte(r.Uint32())
	}
	p := m1.Path("f")
	mustWrite(t, p, data)
	if got := mustRead(t, p); !bytes.Equal(got, data) { // fills the cache
		t.Fatal("first read differs")
	}
	waitImages(t, m1, 1)

	before := reads.n.Load()
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()                                     // also on failure: the mount's cleanup needs it closed
	if got := mustRead(t, p); !bytes.Equal(got, data) { // a second reader meanwhile
		t.Fatal("read through the image differs")
	}
	for i := range 16 {
		off := int64(r.IntN(size/4096)) * 4096
		if got := directRead(t, p, off, 4096); !bytes.Equal(got, data[off:off+4096]) {
			t.Fatalf("O_DIRECT read %d at %d differs", i, off)
		}
	}
	if n := reads.n.Load() - before; n != 0 {
		t.Fatalf("%d READ requests reached skiff for a file with an image", n)
	}

	// A writer while the reader is open: refused, and O_TRUNC truncated
	// nothing.
	_, err = os.OpenFile(p, os.O_WRONLY|os.O_TRUNC, 0)
	if !errors.Is(err, syscall.ETXTBSY) {
		t.Fatalf("open for writing while a passthrough reader is open: %v, want ETXTBSY", err)
	}
	if st, err := os.Stat(m2.Path("f")); err != nil || st.Size() != size {
		t.Fatalf("after the refused O_TRUNC: %v, %v", st, err)
	}

	// Another client changes the file (same size) while the passthrough
	// reader is open: a new open reads the change (through skiff), the
	// old handle keeps the state it opened.
	changed := bytes.Clone(data)
	copy(changed[5<<20:], "changed by the other client")
	mustWrite(t, m2.Path("f"), changed)
	before = reads.n.Load()
	if got := mustRead(t, p); !bytes.Equal(got, changed) {
		t.Fatal("an open after another client's change does not read it")
	}
	if reads.n.Load() == before {
		t.Fatal("the changed file was read from the old image")
	}
	old := make([]byte, 64)
	if _, err := f.ReadAt(old, 5<<20); err != nil || !bytes.Equal(old, data[5<<20:5<<20+64]) {
		t.Fatalf("the handle opened before the change: %v, %q", err, old[:27])
	}
	f.Close()

	// With every handle closed, the next open reads the change.
	before = reads.n.Load()
	if got := mustRead(t, p); !bytes.Equal(got, changed) {
		t.Fatal("the other client's change is not read after the next open")
	}
	if reads.n.Load() == before {
		t.Fatal("a changed file was read from its old image")
	}

	// With no reader open, this client writes and reads back.
	w, err := os.OpenFile(p, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.WriteAt([]byte("written here"), 100); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	copy(changed[100:], "written here")
	if got := mustRead(t, p); !bytes.Equal(got, changed) {
		t.Fatal("this client's write is not read back")
	}
	if got := mustRead(t, m2.Path("f")); !bytes.Equal(got, changed) {
		t.Fatal("the other client does not read this client's write")
	}
	ents, _ := os.ReadDir(filepath.Join(m1.Volume.Cache.Dir(), "images"))
	if len(ents) > 1 {
		t.Fatalf("%d files in the image directory, want at most 1", len(ents))
	}
}

// TestIoctlBuildImage: skiff warmup's request for an image answers once
// the image is ready, or ENODATA for a file not wholly in the cache.
func TestIoctlBuildImage(t *testing.T) {
	if !passthroughKernel(t) {
		t.Skip("FUSE passthrough needs Linux 6.9 or later")
	}
	srv := testredis.Start(t)
	m1 := fusetest.Start(t, fusetest.Config{
		MetaURL: srv.URL(),
		Cache:   &cache.Config{Dir: t.TempDir(), MemSize: -1, FreeRatio: -1},
		VFS:     vfs.Config{Images: true},
		Mount:   fusetestMount(nil),
	})
	cfg := m1.Config
	cfg.Dir, cfg.Cache, cfg.VFS, cfg.Mount = "", nil, vfs.Config{}, fuse.Options{}
	m2 := fusetest.Start(t, cfg)
	ask := askImage
	data := bytes.Repeat([]byte("0123456789abcdef"), 5<<16) // 5 MiB
	mustWrite(t, m2.Path("g"), data)                        // not in m1's cache
	if err := ask(m1.Path("g")); !errors.Is(err, syscall.ENODATA) {
		t.Fatalf("image of a file not in the cache: %v, want ENODATA", err)
	}
	mustRead(t, m1.Path("g"))
	if err := ask(m1.Path("g")); err != nil {
		t.Fatalf("image of a cached file: %v", err)
	}
	if n := m1.VFS.ImageStats().Images; n != 1 {
		t.Fatalf("%d images once the request answered, want 1", n)
	}
	if err := ask(m2.Path("g")); !errors.Is(err, syscall.ENOTSUP) {
		t.Fatalf("a mount without images: %v, want ENOTSUP", err)
	}
}

func fusetestMount(o *readCounter) fuse.Options {
	opts := fuse.Options{Passthrough: true}
	if o != nil {
		opts.Observer = o
	}
	return opts
}

// TestPassthroughCloseThenWrite: a program that closes its passthrough
// reader and at once opens the file for writing is not refused, though the
// kernel sends the reader's RELEASE after close(2) has returned.
func TestPassthroughCloseThenWrite(t *testing.T) {
	if !passthroughKernel(t) {
		t.Skip("FUSE passthrough needs Linux 6.9 or later")
	}
	var reads readCounter
	m := fusetest.Start(t, fusetest.Config{
		Cache: &cache.Config{Dir: t.TempDir(), MemSize: -1, FreeRatio: -1},
		VFS:   vfs.Config{Images: true},
		Mount: fusetestMount(&reads),
	})
	p := m.Path("f")
	mustWrite(t, p, bytes.Repeat([]byte("x"), 2<<20))
	mustRead(t, p)
	buf := make([]byte, 4096)
	// The kernel opens a file passthrough only while no page-cache handle
	// of it is open, and a file open for writing gets no image: wait for
	// the RELEASEs of the last round's writer and of askImage's handle.
	released := func() {
		deadline := time.Now().Add(30 * time.Second)
		for fuse.FileHandles(m.Server) != 0 {
			if time.Now().After(deadline) {
				t.Fatalf("%d handles still open 30s after their close", fuse.FileHandles(m.Server))
			}
			time.Sleep(time.Millisecond)
		}
	}
	for i := range 20 {
		released()
		if err := askImage(p); err != nil {
			t.Fatalf("round %d: image: %v", i, err)
		}
		released()
		before := reads.n.Load()
		r, err := os.Open(p)
		if err != nil {
			t.Fatal(err)
		}
		_, err = r.ReadAt(buf, 4096)
		r.Close()
		if err != nil {
			t.Fatal(err)
		}
		if reads.n.Load() != before {
			t.Fatalf("round %d: the reader was not passthrough", i)
		}
		w, err := os.OpenFile(p, os.O_WRONLY, 0)
		if err != nil {
			t.Fatalf("round %d: open for writing right after the reader's close: %v", i, err)
		}
		w.Close()
	}
}

// askImage sends fuse.IoctlBuildImage for path.
func askImage(p string) error {
	f, err := os.Open(p)
	if err != nil {
		return err
	}
	defer f.Close()
	if _, _, errno := unix.Syscall(unix.SYS_IOCTL, f.Fd(), fuse.IoctlBuildImage, 0); errno != 0 {
		return errno
	}
	return nil
}
