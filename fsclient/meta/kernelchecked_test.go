package meta

import (
	"errors"
	"syscall"
	"testing"
)

// TestKernelChecked: a caller the kernel has checked skips the mode
// checks and keeps the rules the kernel cannot judge from its caches.
func TestKernelChecked(t *testing.T) {
	file := Attr{Typ: TypeFile, Mode: 0o600, Uid: 1, Gid: 1}
	dir := Attr{Typ: TypeDir, Mode: 0o1777, Uid: 0, Gid: 0}
	c := Caller{Uid: 2, Gids: []uint32{2}}
	if err := access(&file, &c, R_OK|W_OK); !errors.Is(err, syscall.EACCES) {
		t.Fatalf("a direct caller: access = %v, want EACCES", err)
	}
	k := c
	k.KernelChecked = true
	if err := access(&file, &k, R_OK|W_OK); err != nil {
		t.Fatalf("a kernel-checked caller: access = %v, want nil", err)
	}
	for _, caller := range []Caller{c, k} {
		if err := sticky(&caller, &dir, &file); !errors.Is(err, syscall.EPERM) {
			t.Errorf("sticky (kernel-checked %v) = %v, want EPERM", caller.KernelChecked, err)
		}
	}
}
