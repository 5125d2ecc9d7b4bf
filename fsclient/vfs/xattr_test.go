package vfs_test

import (
	"bytes"
	"context"
	"errors"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/skiff-fs/skiff/fsclient/meta"
	"github.com/skiff-fs/skiff/fsclient/vfs"
	"github.com/skiff-fs/skiff/fsclient/volume"
	"github.com/skiff-fs/skiff/internal/testredis"
)

// clients formats a Redis volume and returns n file systems over it, each
// with its own volume handle and session (as n mounts would have).
func clients(t *testing.T, n int) []*vfs.VFS {
	t.Helper()
	ctx := context.Background()
	srv := testredis.Start(t)
	if _, err := volume.Create(ctx, volume.FormatConfig{MetaURL: srv.URL(), Name: "test", Bucket: "file://" + filepath.Join(t.TempDir(), "blocks")}); err != nil {
		t.Fatal(err)
	}
	var out []*vfs.VFS
	for range n {
		v, err := volume.Open(ctx, volume.Config{MetaURL: srv.URL()})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { v.Close(context.Background()) })
		if err := v.Meta.NewSession(ctx, meta.SessionInfo{Version: "test"}); err != nil {
			t.Fatal(err)
		}
		fs, err := vfs.New(v, vfs.Config{})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { fs.Close(context.Background()) })
		out = append(out, fs)
	}
	return out
}

const caps = "security.capability"

// TestCapsXattrCoherence: the answer an open file keeps for
// security.capability (read by the kernel before every write) follows
// this client's own changes at once, another client's at the next
// attribute refresh or open, and is never given to another caller.
func TestCapsXattrCoherence(t *testing.T) {
	ctx := context.Background()
	cs := clients(t, 2)
	a, b := cs[0], cs[1]
	root := meta.RootCaller()
	user := meta.Caller{Uid: 1000, Gids: []uint32{1000}}
	ino, fh, _, err := a.Create(ctx, root, vfs.RootIno, "f", 0o600, syscall.O_RDWR)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Release(ctx, fh)
	want := func(step string, fs *vfs.VFS, c meta.Caller, val []byte, werr error) {
		t.Helper()
		got, err := fs.GetXattr(ctx, c, ino, caps)
		switch {
		case werr != nil && !errors.Is(err, werr):
			t.Fatalf("%s: GetXattr = %q, %v; want %v", step, got, err, werr)
		case werr == nil && (err != nil || !bytes.Equal(got, val)):
			t.Fatalf("%s: GetXattr = %q, %v; want %q", step, got, err, val)
		}
	}
	want("new file", a, root, nil, syscall.ENODATA)
	want("new file, again", a, root, nil, syscall.ENODATA)
	want("another caller, no read permission", a, user, nil, syscall.EACCES)

	// Another client sets it: seen once the attributes are read again.
	v1 := []byte("value-1")
	if err := b.SetXattr(ctx, root, ino, caps, v1, 0); err != nil {
		t.Fatal(err)
	}
	if _, err := a.GetAttr(ctx, ino); err != nil {
		t.Fatal(err)
	}
	want("after another client's set and a getattr", a, root, v1, nil)

	// Another client removes it: seen at the next open.
	if err := b.RemoveXattr(ctx, root, ino, caps); err != nil {
		t.Fatal(err)
	}
	fh2, _, err := a.Open(ctx, root, ino, syscall.O_RDONLY)
	if err != nil {
		t.Fatal(err)
	}
	a.Release(ctx, fh2)
	want("after another client's remove and an open", a, root, nil, syscall.ENODATA)

	// This client's own changes are seen at once.
	v2 := []byte("value-2")
	if err := a.SetXattr(ctx, root, ino, caps, v2, 0); err != nil {
		t.Fatal(err)
	}
	want("after own set", a, root, v2, nil)
	if err := a.RemoveXattr(ctx, root, ino, caps); err != nil {
		t.Fatal(err)
	}
	want("after own remove", a, root, nil, syscall.ENODATA)

	// Permission follows the mode another client sets.
	if _, err := b.SetAttr(ctx, root, ino, 0, vfs.SetMode, 0, meta.Attr{Mode: 0o644}); err != nil {
		t.Fatal(err)
	}
	if _, err := a.GetAttr(ctx, ino); err != nil {
		t.Fatal(err)
	}
	want("other caller after chmod 0644", a, user, nil, syscall.ENODATA)
	if _, err := a.SetAttr(ctx, root, ino, 0, vfs.SetMode, 0, meta.Attr{Mode: 0o600}); err != nil {
		t.Fatal(err)
	}
	want("other caller after own chmod 0600", a, user, nil, syscall.EACCES)

	// A file not open here is always read from meta.
	if err := b.SetXattr(ctx, root, ino, caps, v1, 0); err != nil {
		t.Fatal(err)
	}
	want("not open on b", b, root, v1, nil)
}
