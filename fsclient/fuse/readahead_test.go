package fuse_test

import (
	"strings"
	"testing"

	"github.com/skiff-fs/skiff/fsclient/fuse"
	"github.com/skiff-fs/skiff/fsclient/fuse/fusetest"
)

// TestReadAhead checks the kernel's read-ahead window of real mounts:
// Mount's default, the kernel's default on request, a smaller window, and
// SetReadAhead afterwards.
func TestReadAhead(t *testing.T) {
	for _, tc := range []struct {
		name string
		opt  int
		want int
	}{
		{"default", 0, fuse.DefaultReadAhead},
		{"kernel's", -1, 128 << 10},
		{"smaller", 64 << 10, 64 << 10},
		{"larger", 16 << 20, 16 << 20},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := fusetest.Start(t, fusetest.Config{Mount: fuse.Options{MaxReadAhead: tc.opt}})
			got, err := fuse.ReadAhead(m.Dir)
			if err != nil {
				t.Fatal(err)
			}
			if got != tc.want {
				t.Errorf("MaxReadAhead %d: the kernel's read-ahead is %d bytes, want %d", tc.opt, got, tc.want)
			}
			if err := fuse.SetReadAhead(m.Dir, 1<<20+100); err != nil {
				t.Fatal(err)
			}
			if got, _ := fuse.ReadAhead(m.Dir); got != 1<<20 {
				t.Errorf("after SetReadAhead(1 MiB + 100): %d bytes, want 1 MiB", got)
			}
		})
	}
}

func TestSetReadAheadRefuses(t *testing.T) {
	dir := t.TempDir()
	if err := fuse.SetReadAhead(dir, 1<<20); err == nil || !strings.Contains(err.Error(), "not the root of a FUSE mount") {
		t.Errorf("SetReadAhead of a plain directory: %v, want a refusal", err)
	}
	if err := fuse.SetReadAhead(dir, 100); err == nil {
		t.Errorf("SetReadAhead of 100 bytes: no error")
	}
}
