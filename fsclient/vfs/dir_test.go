package vfs_test

import (
	"context"
	"fmt"
	"syscall"
	"testing"

	"github.com/skiff-fs/skiff/fsclient/meta"
	"github.com/skiff-fs/skiff/fsclient/vfs"
)

// listAll lists directory ino as the kernel does: it takes at most take
// entries of each ReadDir and continues at the last one's Off. It checks
// that every name comes exactly once.
func listAll(t *testing.T, fs *vfs.VFS, ino vfs.Ino, take int, plus bool) map[string]bool {
	t.Helper()
	ctx := context.Background()
	fh, err := fs.OpenDir(ctx, meta.RootCaller(), ino)
	if err != nil {
		t.Fatal(err)
	}
	defer fs.ReleaseDir(fh)
	seen := map[string]bool{}
	for off, calls := uint64(0), 0; ; calls++ {
		if calls > 1e6 {
			t.Fatal("the listing does not end")
		}
		es, err := fs.ReadDir(ctx, fh, off, plus)
		if err != nil {
			t.Fatal(err)
		}
		if len(es) == 0 {
			return seen
		}
		for _, e := range es[:min(take, len(es))] {
			if seen[e.Name] {
				t.Fatalf("%q listed twice", e.Name)
			}
			seen[e.Name] = true
			if plus && e.Name != "." && e.Name != ".." && e.Attr.Mode&0o777 != 0o644 {
				t.Fatalf("%q has mode %o without its attributes", e.Name, e.Attr.Mode)
			}
			off = e.Off
		}
	}
}

// TestListingIsLinear lists a directory of n entries the way the kernel
// does (a few dozen entries per READDIR, continuing at the last offset):
// the entries read and copied must be O(n), not O(n²/entries per call),
// and every entry must come once.
func TestListingIsLinear(t *testing.T) {
	ctx := context.Background()
	fs := clients(t, 1)[0]
	dir, _, err := fs.Mkdir(ctx, meta.RootCaller(), vfs.RootIno, "d", 0o755)
	if err != nil {
		t.Fatal(err)
	}
	const n = 2000
	for i := range n {
		if _, _, err := fs.Mknod(ctx, meta.RootCaller(), dir, fmt.Sprintf("entry-%05d", i), syscall.S_IFREG|0o644, 0); err != nil {
			t.Fatal(err)
		}
	}
	for _, c := range []struct {
		take int
		plus bool
	}{{50, false}, {25, true}, {1000, false}} {
		before := fs.DirEntriesRead()
		seen := listAll(t, fs, dir, c.take, c.plus)
		cost := fs.DirEntriesRead() - before
		if len(seen) != n+2 {
			t.Errorf("take %d: listed %d entries, want %d", c.take, len(seen), n+2)
		}
		t.Logf("take %d plus %v: %d entries read and copied for %d", c.take, c.plus, cost, n)
		if cost > 8*n {
			t.Errorf("take %d plus %v: listing %d entries read and copied %d: not linear", c.take, c.plus, n, cost)
		}
	}
}
