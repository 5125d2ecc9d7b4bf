package metatest

import (
	"bytes"
	"syscall"
	"testing"

	"github.com/skiff-fs/skiff/fsclient/meta"
)

// testXattrCap: an inode holds at most meta.MaxXattrBytes of xattr names
// and values (ENOSPC past it), and those bytes count in the volume's
// used space until the attribute or the inode goes.
func (s *suite) testXattrCap(t *testing.T) {
	_, m := s.fresh(t, defaultOpts())
	used := func() int64 {
		t.Helper()
		st, err := m.StatFS(ctx)
		ok(t, err, "StatFS")
		return int64(st.UsedBytes)
	}
	wantUsed := func(want int64, when string) {
		t.Helper()
		if got := used(); got != want {
			t.Fatalf("used bytes %s = %d, want %d", when, got, want)
		}
	}
	const big = 64 << 10
	val := func(n int, b byte) []byte { return bytes.Repeat([]byte{b}, n) }
	f := mkfile(t, m, alice, meta.RootIno, "f", 0o644)
	wantUsed(0, "of an empty file")

	ok(t, m.SetXattr(ctx, alice, f, "user.a", val(big, 'a'), 0), "SetXattr 64 KiB")
	wantUsed(6+big, "with one 64 KiB xattr")
	// The second 64 KiB attribute goes past the cap.
	wantErr(t, m.SetXattr(ctx, alice, f, "user.b", val(big, 'b'), 0), syscall.ENOSPC, "SetXattr second 64 KiB")
	wantUsed(6+big, "after a refused SetXattr")
	if _, err := m.GetXattr(ctx, alice, f, "user.b"); err == nil {
		t.Fatal("refused attribute was stored")
	}
	// Exactly up to the cap is allowed; one byte more is not.
	rest := meta.MaxXattrBytes - (6 + big) - 6
	ok(t, m.SetXattr(ctx, alice, f, "user.b", val(rest, 'b'), 0), "SetXattr up to the cap")
	wantUsed(meta.MaxXattrBytes, "at the cap")
	wantErr(t, m.SetXattr(ctx, alice, f, "user.c", nil, 0), syscall.ENOSPC, "SetXattr of an empty value past the cap")
	wantErr(t, m.SetXattr(ctx, alice, f, "user.b", val(rest+1, 'b'), meta.XattrReplace), syscall.ENOSPC, "SetXattr growing past the cap")
	// Replacing with a smaller value frees space; removing frees it all.
	ok(t, m.SetXattr(ctx, alice, f, "user.a", val(10, 'A'), meta.XattrReplace), "SetXattr shrink")
	wantUsed(6+10+6+int64(rest), "after shrinking")
	ok(t, m.SetXattr(ctx, alice, f, "user.c", val(100, 'c'), 0), "SetXattr after shrinking")
	ok(t, m.RemoveXattr(ctx, alice, f, "user.b"), "RemoveXattr")
	wantUsed(6+10+6+100, "after RemoveXattr")

	// Unlinking the file releases its xattr bytes; so does rmdir, and a
	// rename over a file.
	ok(t, m.Unlink(ctx, alice, meta.RootIno, "f"), "Unlink")
	wantUsed(0, "after unlinking the file")
	d := mkdir(t, m, root, meta.RootIno, "d", 0o755)
	ok(t, m.SetXattr(ctx, root, d, "user.d", val(1000, 'd'), 0), "SetXattr on a directory")
	wantUsed(1006, "with a directory xattr")
	ok(t, m.Rmdir(ctx, root, meta.RootIno, "d"), "Rmdir")
	wantUsed(0, "after rmdir")
	g := mkfile(t, m, root, meta.RootIno, "g", 0o644)
	mkfile(t, m, root, meta.RootIno, "h", 0o644)
	ok(t, m.SetXattr(ctx, root, g, "trusted.g", val(500, 'g'), 0), "SetXattr trusted")
	wantUsed(509, "with a trusted xattr")
	ok(t, m.Rename(ctx, root, meta.RootIno, "h", meta.RootIno, "g", 0), "Rename over g")
	wantUsed(0, "after renaming over the file")
}
