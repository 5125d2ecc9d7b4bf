package fuse_test

import (
	"bytes"
	"os"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/skiff-fs/skiff/fsclient/fuse/fusetest"
	"github.com/skiff-fs/skiff/fsclient/vfs"
	"github.com/skiff-fs/skiff/internal/testredis"
)

// TestKeepCache checks the kernel page cache across opens: an unchanged
// file keeps its cached pages when opened again, and a change made by
// another client of the volume is read after the next open, even when the
// change keeps the size and the mtime. The attribute and entry timeouts
// are an hour, so the kernel never refetches attributes by itself (which
// would drop changed pages on its own): only the decision at open is
// tested. Changes keep the size, because the kernel's cached size is only
// refreshed when the attribute timeout expires.
func TestKeepCache(t *testing.T) {
	srv := testredis.Start(t)
	cfg := fusetest.Config{MetaURL: srv.URL(), VFS: vfs.Config{AttrTimeout: time.Hour, EntryTimeout: time.Hour}}
	m1 := fusetest.Start(t, cfg)
	cfg = m1.Config
	cfg.Dir = ""
	m2 := fusetest.Start(t, cfg)

	const size = 256 << 10
	content := func(c byte) []byte {
		b := bytes.Repeat([]byte{c}, size)
		copy(b, "version ")
		b[len("version ")] = c
		return b
	}
	read := func(m *fusetest.Mount, want []byte, what string) {
		t.Helper()
		got := mustRead(t, m.Path("f"))
		if !bytes.Equal(got, want) {
			t.Fatalf("%s: %s reads %d bytes starting %q, want %d bytes starting %q", what, m.Dir, len(got), head(got), len(want), head(want))
		}
	}
	f1 := m1.Path("f")

	mustWrite(t, f1, content('a'))
	read(m1, content('a'), "after writing")
	read(m1, content('a'), "re-read") // opens after a release: pages kept
	if n := residentPages(t, f1); n == 0 {
		t.Errorf("no page of an unchanged file stays cached across opens")
	}

	mustWrite(t, m2.Path("f"), content('b'))
	read(m1, content('b'), "after another client wrote the file")
	read(m1, content('b'), "re-read after another client wrote the file")
	read(m2, content('b'), "the writer reading its own write")

	// cp -p and rsync -t restore the mtime: only the ctime tells.
	t0 := time.Unix(1_700_000_000, 123_456_789)
	if err := os.Chtimes(m2.Path("f"), t0, t0); err != nil {
		t.Fatal(err)
	}
	read(m1, content('b'), "after another client set the mtime")
	read(m1, content('b'), "re-read after another client set the mtime")
	mustWrite(t, m2.Path("f"), content('c'))
	if err := os.Chtimes(m2.Path("f"), t0, t0); err != nil {
		t.Fatal(err)
	}
	read(m1, content('c'), "after another client wrote the file and restored its mtime")

	// This client's own change, then the other client's view of it.
	mustWrite(t, f1, content('d'))
	read(m1, content('d'), "after this client wrote the file")
	read(m2, content('d'), "the other client after this client wrote the file")
	read(m2, content('d'), "the other client re-reading")

	// A handle kept open across the other client's change does not make
	// the next open keep stale pages.
	g, err := os.Open(f1)
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	mustWrite(t, m2.Path("f"), content('e'))
	read(m1, content('e'), "while an older handle is open")
	g.Close()
	read(m1, content('e'), "after the older handle was closed")
}

func head(b []byte) []byte { return b[:min(len(b), 12)] }

// residentPages opens p, maps it and counts its pages in the kernel's page
// cache (mincore faults nothing in).
func residentPages(t *testing.T, p string) int {
	t.Helper()
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		t.Fatal(err)
	}
	mem, err := unix.Mmap(int(f.Fd()), 0, int(st.Size()), unix.PROT_READ, unix.MAP_SHARED)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Munmap(mem)
	vec := make([]byte, (len(mem)+os.Getpagesize()-1)/os.Getpagesize())
	_, _, errno := unix.Syscall(unix.SYS_MINCORE, uintptr(unsafe.Pointer(&mem[0])), uintptr(len(mem)), uintptr(unsafe.Pointer(&vec[0])))
	if errno != 0 {
		t.Fatalf("mincore %s: %v", p, errno)
	}
	n := 0
	for _, v := range vec {
		n += int(v & 1)
	}
	return n
}
