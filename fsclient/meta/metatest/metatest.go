// Package metatest is the conformance suite every metadata backend of
// package meta passes: POSIX namespace rules, attributes, sessions and
// open-but-unlinked files, chunk records, id allocation, and concurrent
// clients keeping link counts exact.
package metatest

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/skiff-fs/skiff/fsclient/format"
	"github.com/skiff-fs/skiff/fsclient/meta"
	"github.com/skiff-fs/skiff/fsclient/meta/kv"
	"github.com/skiff-fs/skiff/fsclient/slice"
)

// Volume is one empty volume under test.
type Volume struct {
	// Open returns a new client of the volume: its own *meta.Meta (own id
	// batches, own session once the suite calls NewSession). The suite
	// closes every client it opens; the backend releases what Open and
	// NewVolume allocated in t.Cleanup.
	Open func(t testing.TB, opts meta.Options) *meta.Meta
	// Restart stops and restarts the server behind the volume, keeping its
	// data. nil for embedded engines (the restart test is then not run).
	Restart func(t testing.TB)
}

// Run runs the suite. newVolume returns a fresh, unformatted volume.
func Run(t *testing.T, newVolume func(t testing.TB) Volume) {
	s := &suite{newVolume: newVolume}
	tests := []struct {
		name string
		fn   func(t *testing.T)
	}{
		{"Format", s.testFormat},
		{"CreateLookup", s.testCreateLookup},
		{"SetAttr", s.testSetAttr},
		{"MkdirRmdir", s.testMkdirRmdir},
		{"HardLinks", s.testHardLinks},
		{"Symlink", s.testSymlink},
		{"Xattr", s.testXattr},
		{"XattrCap", s.testXattrCap},
		{"Rename", s.testRename},
		{"RenameFlags", s.testRenameFlags},
		{"Permissions", s.testPermissions},
		{"Sticky", s.testSticky},
		{"SetgidDir", s.testSetgidDir},
		{"OpenUnlinked", s.testOpenUnlinked},
		{"StaleSession", s.testStaleSession},
		{"Truncate", s.testTruncate},
		{"Fallocate", s.testFallocate},
		{"CompactChunk", s.testCompactChunk},
		{"IDs", s.testIDs},
		{"StatFS", s.testStatFS},
		{"CheckTree", s.testCheckTree},
		{"Concurrency", s.testConcurrency},
		{"RenameLoopRace", s.testRenameLoopRace},
		{"ReadOnly", s.testReadOnly},
		{"Flock", s.testFlock},
		{"PosixLocks", s.testPosixLocks},
		{"ReleaseLocks", s.testReleaseLocks},
		{"StaleSessionLocks", s.testStaleSessionLocks},
		{"LockRace", s.testLockRace},
		{"Restart", s.testRestart},
		{"SliceFloor", s.testSliceFloor},
	}
	for _, tc := range tests {
		t.Run(tc.name, tc.fn)
	}
}

type suite struct {
	newVolume func(t testing.TB) Volume
}

var ctx = context.Background()

var (
	root  = meta.RootCaller()
	alice = meta.Caller{Uid: 1000, Gids: []uint32{1000, 50}}
	bob   = meta.Caller{Uid: 1001, Gids: []uint32{1001}}
)

func testFormat() *format.Format {
	return &format.Format{
		Name: "test-vol", UUID: "8a1f0f4e-0000-4000-8000-000000000001", BlockSize: 4 << 20,
		Compression: "none", Bucket: "file:///nonexistent/bucket",
	}
}

func defaultOpts() meta.Options {
	return meta.Options{IDBatch: 10, SliceFreeDelay: time.Hour}
}

// client opens a client of vol and starts its session.
func client(t testing.TB, vol Volume, opts meta.Options) *meta.Meta {
	t.Helper()
	m := vol.Open(t, opts)
	t.Cleanup(func() {
		if err := m.Close(ctx); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	if err := m.NewSession(ctx, meta.SessionInfo{Version: "test", Hostname: "host", MountPoint: "/mnt/" + t.Name(), PID: 1}); err != nil {
		t.Fatalf("NewSession: %v", err)
	}
	return m
}

// fresh formats a new volume and returns it with a first client.
func (s *suite) fresh(t testing.TB, opts meta.Options) (Volume, *meta.Meta) {
	t.Helper()
	vol := s.newVolume(t)
	m := vol.Open(t, opts)
	if err := m.Format(ctx, testFormat(), false); err != nil {
		t.Fatalf("Format: %v", err)
	}
	if err := m.Close(ctx); err != nil {
		t.Fatalf("Close: %v", err)
	}
	return vol, client(t, vol, opts)
}

func ok(t testing.TB, err error, what string) {
	t.Helper()
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

func wantErr(t testing.TB, err, want error, what string) {
	t.Helper()
	if !errors.Is(err, want) {
		t.Fatalf("%s: got error %v, want %v", what, err, want)
	}
}

func mkfile(t testing.TB, m *meta.Meta, c meta.Caller, parent meta.Ino, name string, mode uint16) meta.Ino {
	t.Helper()
	ino, _, err := m.Mknod(ctx, c, parent, name, meta.TypeFile, mode, 0)
	ok(t, err, "Mknod "+name)
	return ino
}

func mkdir(t testing.TB, m *meta.Meta, c meta.Caller, parent meta.Ino, name string, mode uint16) meta.Ino {
	t.Helper()
	ino, _, err := m.Mkdir(ctx, c, parent, name, mode)
	ok(t, err, "Mkdir "+name)
	return ino
}

func getattr(t testing.TB, m *meta.Meta, ino meta.Ino) meta.Attr {
	t.Helper()
	a, err := m.GetAttr(ctx, ino)
	ok(t, err, fmt.Sprintf("GetAttr %d", ino))
	return a
}

func checkTree(t testing.TB, m *meta.Meta) meta.Report {
	t.Helper()
	r, err := m.CheckTree(ctx)
	ok(t, err, "CheckTree")
	if len(r.Problems) > 0 {
		t.Fatalf("CheckTree found problems:\n%s", strings.Join(r.Problems, "\n"))
	}
	return r
}

func names(t testing.TB, m *meta.Meta, dir meta.Ino) []string {
	t.Helper()
	es, err := m.Readdir(ctx, root, dir, false)
	ok(t, err, "Readdir")
	var out []string
	for _, e := range es {
		out = append(out, e.Name)
	}
	return out
}

func (s *suite) testFormat(t *testing.T) {
	vol := s.newVolume(t)
	m := vol.Open(t, defaultOpts())
	defer m.Close(ctx)
	_, err := m.Load(ctx)
	if !errors.Is(err, meta.ErrNoVolume) || !strings.Contains(err.Error(), "skiff format") {
		t.Fatalf("Load of an empty engine: %v, want ErrNoVolume naming skiff format", err)
	}
	if err := m.NewSession(ctx, meta.SessionInfo{}); !errors.Is(err, meta.ErrNoVolume) {
		t.Fatalf("NewSession before format: %v, want ErrNoVolume", err)
	}
	bad := testFormat()
	bad.BlockSize = 1000
	if err := m.Format(ctx, bad, false); err == nil {
		t.Fatal("Format accepted block size 1000")
	}
	ok(t, m.Format(ctx, testFormat(), false), "Format")
	err = m.Format(ctx, testFormat(), false)
	if err == nil || !strings.Contains(err.Error(), "already formatted") || !strings.Contains(err.Error(), "--force") {
		t.Fatalf("second Format: %v, want a refusal naming --force", err)
	}
	f, err := m.Load(ctx)
	ok(t, err, "Load")
	if f.Name != "test-vol" || f.BlockSize != 4<<20 || f.Version != format.Version {
		t.Fatalf("Load = %+v", f)
	}
	if strings.Contains(m.Name(), "secret") {
		t.Fatalf("Name() leaks the password: %s", m.Name())
	}
	// Force on a volume with data keeps files and may change the bucket,
	// but not the data layout.
	ok(t, m.NewSession(ctx, meta.SessionInfo{}), "NewSession")
	ino := mkfile(t, m, root, meta.RootIno, "keep", 0o644)
	f2 := testFormat()
	f2.Bucket = "file:///elsewhere"
	ok(t, m.Format(ctx, f2, true), "Format --force")
	if got, _, err := m.Lookup(ctx, root, meta.RootIno, "keep"); err != nil || got != ino {
		t.Fatalf("file lost by Format --force: %v %v", got, err)
	}
	f3 := testFormat()
	f3.BlockSize = 1 << 20
	if err := m.Format(ctx, f3, true); err == nil || !strings.Contains(err.Error(), "block size") {
		t.Fatalf("Format --force changing the block size of a volume with data: %v", err)
	}
	f, err = m.Load(ctx)
	ok(t, err, "Load")
	if f.Bucket != "file:///elsewhere" || f.UUID != testFormat().UUID {
		t.Fatalf("after Format --force: %+v", f)
	}
	checkTree(t, m)

	// Corrupt settings are reported, not used.
	ok(t, m.Engine().Update(ctx, func(tx kv.Tx) error { tx.Set("setting", []byte("{")); return nil }), "corrupt")
	if _, err := m.Load(ctx); err == nil || !strings.Contains(err.Error(), "corrupt") {
		t.Fatalf("Load of corrupt settings: %v", err)
	}
}

func (s *suite) testCreateLookup(t *testing.T) {
	_, m := s.fresh(t, defaultOpts())
	c := alice
	c.Umask = 0o022
	dir := mkdir(t, m, root, meta.RootIno, "d", 0o777)
	ino, attr, err := m.Create(ctx, c, dir, "f", 0o666, syscall.O_RDWR)
	ok(t, err, "Create")
	ok(t, m.Release(ctx, ino), "Release")
	if attr.Typ != meta.TypeFile || attr.Mode != 0o644 || attr.Uid != 1000 || attr.Gid != 1000 || attr.Nlink != 1 || attr.Size != 0 {
		t.Fatalf("Create attr = %+v", attr)
	}
	if attr.SMode() != syscall.S_IFREG|0o644 {
		t.Fatalf("SMode = %o", attr.SMode())
	}
	got, gattr, err := m.Lookup(ctx, c, dir, "f")
	ok(t, err, "Lookup")
	if got != ino {
		t.Fatalf("Lookup = %d, want %d", got, ino)
	}
	if diff := cmp.Diff(attr, gattr); diff != "" {
		t.Fatalf("Lookup attr (-create +lookup):\n%s", diff)
	}
	if diff := cmp.Diff(attr, getattr(t, m, ino)); diff != "" {
		t.Fatalf("GetAttr (-create +getattr):\n%s", diff)
	}
	if got, _, err := m.Lookup(ctx, c, dir, "."); err != nil || got != dir {
		t.Fatalf("Lookup . = %d, %v", got, err)
	}
	if got, _, err := m.Lookup(ctx, c, dir, ".."); err != nil || got != meta.RootIno {
		t.Fatalf("Lookup .. = %d, %v", got, err)
	}
	if got, _, err := m.Lookup(ctx, c, meta.RootIno, ".."); err != nil || got != meta.RootIno {
		t.Fatalf("Lookup /.. = %d, %v", got, err)
	}
	_, _, err = m.Lookup(ctx, c, dir, "missing")
	wantErr(t, err, syscall.ENOENT, "Lookup missing")
	_, _, err = m.Lookup(ctx, c, ino, "x")
	wantErr(t, err, syscall.ENOTDIR, "Lookup in a file")
	_, _, err = m.Create(ctx, c, dir, "f", 0o644, 0)
	wantErr(t, err, syscall.EEXIST, "Create existing")
	_, _, err = m.Mknod(ctx, c, dir, strings.Repeat("n", 256), meta.TypeFile, 0o644, 0)
	wantErr(t, err, syscall.ENAMETOOLONG, "Mknod long name")
	_, _, err = m.Mknod(ctx, c, ino, "x", meta.TypeFile, 0o644, 0)
	wantErr(t, err, syscall.ENOTDIR, "Mknod in a file")
	_, _, err = m.Mknod(ctx, c, dir, "dev", meta.TypeCharDev, 0o644, 0x0501)
	wantErr(t, err, syscall.EPERM, "Mknod device as non-root")
	for _, tc := range []struct {
		name string
		typ  uint8
		rdev uint32
	}{{"fifo", meta.TypeFIFO, 0}, {"sock", meta.TypeSocket, 0}, {"chr", meta.TypeCharDev, 0x0501}, {"blk", meta.TypeBlockDev, 0x0802}} {
		ino, a, err := m.Mknod(ctx, root, dir, tc.name, tc.typ, 0o640, tc.rdev)
		ok(t, err, "Mknod "+tc.name)
		if a.Typ != tc.typ || a.Rdev != tc.rdev || getattr(t, m, ino).Rdev != tc.rdev {
			t.Fatalf("Mknod %s attr = %+v", tc.name, a)
		}
	}
	if d := getattr(t, m, dir); d.Nlink != 2 || d.Typ != meta.TypeDir || d.Parent != meta.RootIno {
		t.Fatalf("dir attr = %+v", d)
	}
	want := []string{".", "..", "blk", "chr", "f", "fifo", "sock"}
	if diff := cmp.Diff(want, names(t, m, dir)); diff != "" {
		t.Fatalf("Readdir (-want +got):\n%s", diff)
	}
	es, err := m.Readdir(ctx, root, dir, true)
	ok(t, err, "Readdir plus")
	for _, e := range es {
		if e.Name == "f" && (e.Ino != ino || e.Attr.Mode != 0o644 || e.Attr.Uid != 1000) {
			t.Fatalf("Readdir plus entry = %+v", e)
		}
		if e.Name == ".." && (e.Ino != meta.RootIno || e.Attr.Typ != meta.TypeDir) {
			t.Fatalf("Readdir plus .. = %+v", e)
		}
	}
	_, err = m.Readdir(ctx, root, ino, false)
	wantErr(t, err, syscall.ENOTDIR, "Readdir of a file")
	checkTree(t, m)
}

func (s *suite) testSetAttr(t *testing.T) {
	_, m := s.fresh(t, defaultOpts())
	pub := mkdir(t, m, root, meta.RootIno, "pub", 0o777)
	ino := mkfile(t, m, alice, pub, "f", 0o755)

	a, err := m.SetAttr(ctx, alice, ino, meta.SetMode, meta.Attr{Mode: 0o4750})
	ok(t, err, "chmod by owner")
	if a.Mode != 0o4750 {
		t.Fatalf("mode = %o", a.Mode)
	}
	_, err = m.SetAttr(ctx, bob, ino, meta.SetMode, meta.Attr{Mode: 0o777})
	wantErr(t, err, syscall.EPERM, "chmod by another user")
	// Owner outside the file's group cannot set setgid.
	_, err = m.SetAttr(ctx, root, ino, meta.SetGID, meta.Attr{Gid: 7})
	ok(t, err, "chgrp by root")
	a, err = m.SetAttr(ctx, alice, ino, meta.SetMode, meta.Attr{Mode: 0o2755})
	ok(t, err, "chmod g+s by owner outside the group")
	if a.Mode != 0o755 {
		t.Fatalf("setgid kept for a non-member: %o", a.Mode)
	}
	// chown: only root changes the owner; the owner may chgrp to its groups.
	_, err = m.SetAttr(ctx, alice, ino, meta.SetUID, meta.Attr{Uid: 1001})
	wantErr(t, err, syscall.EPERM, "chown by owner")
	_, err = m.SetAttr(ctx, alice, ino, meta.SetGID, meta.Attr{Gid: 1001})
	wantErr(t, err, syscall.EPERM, "chgrp to a foreign group")
	_, err = m.SetAttr(ctx, bob, ino, meta.SetGID, meta.Attr{Gid: 1001})
	wantErr(t, err, syscall.EPERM, "chgrp by a non-owner")
	ok(t, errOnly(m.SetAttr(ctx, alice, ino, meta.SetMode, meta.Attr{Mode: 0o6775})), "chmod")
	a, err = m.SetAttr(ctx, alice, ino, meta.SetGID, meta.Attr{Gid: 50})
	ok(t, err, "chgrp to own group")
	if a.Gid != 50 || a.Mode != 0o775 {
		t.Fatalf("after chgrp: gid %d mode %o, want 50 and setuid/setgid cleared", a.Gid, a.Mode)
	}
	a, err = m.SetAttr(ctx, root, ino, meta.SetUID|meta.SetGID, meta.Attr{Uid: 1001, Gid: 1001})
	ok(t, err, "chown by root")
	if a.Uid != 1001 || a.Gid != 1001 {
		t.Fatalf("after chown: %+v", a)
	}
	// Times: explicit values need ownership, "now" needs write permission.
	_, err = m.SetAttr(ctx, alice, ino, meta.SetMtime, meta.Attr{Mtime: 1})
	wantErr(t, err, syscall.EPERM, "utimes by non-owner")
	_, err = m.SetAttr(ctx, alice, ino, meta.SetAtimeNow|meta.SetMtimeNow, meta.Attr{})
	wantErr(t, err, syscall.EACCES, "utimes(now) without write permission")
	ok(t, errOnly(m.SetAttr(ctx, bob, ino, meta.SetMode, meta.Attr{Mode: 0o666})), "chmod")
	_, err = m.SetAttr(ctx, alice, ino, meta.SetMtimeNow, meta.Attr{})
	ok(t, err, "utimes(now) by a non-owner with write permission")
	a, err = m.SetAttr(ctx, bob, ino, meta.SetAtime|meta.SetMtime, meta.Attr{Atime: 100, Atimensec: 5, Mtime: 200, Mtimensec: 6})
	ok(t, err, "utimes by owner")
	if a.Atime != 100 || a.Atimensec != 5 || a.Mtime != 200 || a.Mtimensec != 6 {
		t.Fatalf("times = %+v", a)
	}
	if g := getattr(t, m, ino); g.Mtime != 200 || g.Ctime < 1000 {
		t.Fatalf("stored times = %+v", g)
	}
}

func errOnly(_ meta.Attr, err error) error { return err }

func (s *suite) testMkdirRmdir(t *testing.T) {
	_, m := s.fresh(t, defaultOpts())
	c := alice
	c.Umask = 0o027
	d, a, err := m.Mkdir(ctx, c, meta.RootIno, "d", 0o777)
	ok(t, err, "Mkdir")
	if a.Mode != 0o750 || a.Nlink != 2 || a.Parent != meta.RootIno {
		t.Fatalf("Mkdir attr = %+v", a)
	}
	if r := getattr(t, m, meta.RootIno); r.Nlink != 3 {
		t.Fatalf("root nlink = %d, want 3", r.Nlink)
	}
	sub := mkdir(t, m, c, d, "sub", 0o755)
	mkfile(t, m, c, d, "f", 0o644)
	if a := getattr(t, m, d); a.Nlink != 3 {
		t.Fatalf("d nlink = %d, want 3", a.Nlink)
	}
	_, _, err = m.Mkdir(ctx, c, d, "sub", 0o755)
	wantErr(t, err, syscall.EEXIST, "Mkdir existing")
	wantErr(t, m.Rmdir(ctx, c, meta.RootIno, "d"), syscall.ENOTEMPTY, "Rmdir non-empty")
	wantErr(t, m.Rmdir(ctx, c, d, "f"), syscall.ENOTDIR, "Rmdir file")
	wantErr(t, m.Unlink(ctx, c, d, "sub"), syscall.EISDIR, "Unlink dir")
	wantErr(t, m.Rmdir(ctx, c, d, "."), syscall.EINVAL, "Rmdir .")
	wantErr(t, m.Rmdir(ctx, c, d, "missing"), syscall.ENOENT, "Rmdir missing")
	ok(t, m.Rmdir(ctx, c, d, "sub"), "Rmdir sub")
	_, err = m.GetAttr(ctx, sub)
	wantErr(t, err, syscall.ENOENT, "GetAttr removed dir")
	_, _, err = m.Mknod(ctx, c, sub, "x", meta.TypeFile, 0o644, 0)
	wantErr(t, err, syscall.ENOENT, "Mknod in removed dir")
	ok(t, m.Unlink(ctx, c, d, "f"), "Unlink f")
	ok(t, m.Rmdir(ctx, c, meta.RootIno, "d"), "Rmdir d")
	if r := getattr(t, m, meta.RootIno); r.Nlink != 2 {
		t.Fatalf("root nlink = %d, want 2", r.Nlink)
	}
	if diff := cmp.Diff([]string{".", ".."}, names(t, m, meta.RootIno)); diff != "" {
		t.Fatal(diff)
	}
	checkTree(t, m)
}

func (s *suite) testHardLinks(t *testing.T) {
	_, m := s.fresh(t, defaultOpts())
	d1 := mkdir(t, m, root, meta.RootIno, "d1", 0o755)
	d2 := mkdir(t, m, root, meta.RootIno, "d2", 0o755)
	ino := mkfile(t, m, root, d1, "f", 0o644)
	a, err := m.Link(ctx, root, ino, d2, "g")
	ok(t, err, "Link")
	if a.Nlink != 2 {
		t.Fatalf("nlink after Link = %d", a.Nlink)
	}
	_, err = m.Link(ctx, root, ino, d2, "g")
	wantErr(t, err, syscall.EEXIST, "Link existing")
	_, err = m.Link(ctx, root, d1, d2, "dirlink")
	wantErr(t, err, syscall.EPERM, "Link dir")
	_, err = m.Link(ctx, alice, ino, d2, "h")
	wantErr(t, err, syscall.EACCES, "Link into a dir without write permission")
	if got, _, err := m.Lookup(ctx, root, d2, "g"); err != nil || got != ino {
		t.Fatalf("Lookup link = %d, %v", got, err)
	}
	checkTree(t, m)
	ok(t, m.Unlink(ctx, root, d1, "f"), "Unlink f")
	if a := getattr(t, m, ino); a.Nlink != 1 {
		t.Fatalf("nlink = %d, want 1", a.Nlink)
	}
	ok(t, m.Unlink(ctx, root, d2, "g"), "Unlink g")
	_, err = m.GetAttr(ctx, ino)
	wantErr(t, err, syscall.ENOENT, "GetAttr after last unlink")
	wantErr(t, m.Unlink(ctx, root, d2, "g"), syscall.ENOENT, "Unlink twice")
	checkTree(t, m)
}

func (s *suite) testSymlink(t *testing.T) {
	_, m := s.fresh(t, defaultOpts())
	c := alice
	c.Umask = 0o077
	ino, a, err := m.Symlink(ctx, c, meta.RootIno, "l", "../some/target")
	ok(t, err, "Symlink")
	if a.Typ != meta.TypeSymlink || a.Mode != 0o777 || a.Size != uint64(len("../some/target")) {
		t.Fatalf("Symlink attr = %+v", a)
	}
	got, err := m.ReadLink(ctx, ino)
	ok(t, err, "ReadLink")
	if got != "../some/target" {
		t.Fatalf("ReadLink = %q", got)
	}
	f := mkfile(t, m, root, meta.RootIno, "f", 0o644)
	_, err = m.ReadLink(ctx, f)
	wantErr(t, err, syscall.EINVAL, "ReadLink of a file")
	_, _, err = m.Symlink(ctx, c, meta.RootIno, "l", "x")
	wantErr(t, err, syscall.EEXIST, "Symlink existing")
	_, _, err = m.Symlink(ctx, c, meta.RootIno, "long", strings.Repeat("x", 5000))
	wantErr(t, err, syscall.ENAMETOOLONG, "Symlink long target")
	ok(t, m.Unlink(ctx, c, meta.RootIno, "l"), "Unlink symlink")
	_, err = m.ReadLink(ctx, ino)
	wantErr(t, err, syscall.ENOENT, "ReadLink removed")
	checkTree(t, m)
}

func (s *suite) testXattr(t *testing.T) {
	_, m := s.fresh(t, defaultOpts())
	ino := mkfile(t, m, alice, meta.RootIno+0, "f", 0o644)
	_ = ino
	_, err := m.GetXattr(ctx, alice, ino, "user.a")
	wantErr(t, err, syscall.ENODATA, "GetXattr missing")
	wantErr(t, m.SetXattr(ctx, alice, ino, "user.a", []byte("1"), meta.XattrReplace), syscall.ENODATA, "SetXattr replace missing")
	ok(t, m.SetXattr(ctx, alice, ino, "user.a", []byte("1"), meta.XattrCreate), "SetXattr create")
	wantErr(t, m.SetXattr(ctx, alice, ino, "user.a", []byte("2"), meta.XattrCreate), syscall.EEXIST, "SetXattr create existing")
	ok(t, m.SetXattr(ctx, alice, ino, "user.a", []byte("2"), meta.XattrReplace), "SetXattr replace")
	ok(t, m.SetXattr(ctx, alice, ino, "user.b", nil, 0), "SetXattr empty value")
	wantErr(t, m.SetXattr(ctx, bob, ino, "user.c", []byte("x"), 0), syscall.EACCES, "SetXattr without write permission")
	wantErr(t, m.SetXattr(ctx, alice, ino, "trusted.x", []byte("x"), 0), syscall.EPERM, "SetXattr trusted as non-root")
	ok(t, m.SetXattr(ctx, root, ino, "trusted.x", []byte("t"), 0), "SetXattr trusted as root")
	v, err := m.GetXattr(ctx, bob, ino, "user.a")
	ok(t, err, "GetXattr")
	if string(v) != "2" {
		t.Fatalf("GetXattr = %q", v)
	}
	if v, err := m.GetXattr(ctx, bob, ino, "user.b"); err != nil || len(v) != 0 {
		t.Fatalf("GetXattr empty = %q, %v", v, err)
	}
	l, err := m.ListXattr(ctx, alice, ino)
	ok(t, err, "ListXattr")
	if diff := cmp.Diff([]string{"user.a", "user.b"}, l); diff != "" {
		t.Fatalf("ListXattr (-want +got):\n%s", diff)
	}
	l, err = m.ListXattr(ctx, root, ino)
	ok(t, err, "ListXattr")
	if diff := cmp.Diff([]string{"trusted.x", "user.a", "user.b"}, l); diff != "" {
		t.Fatalf("ListXattr as root (-want +got):\n%s", diff)
	}
	ok(t, m.RemoveXattr(ctx, alice, ino, "user.a"), "RemoveXattr")
	wantErr(t, m.RemoveXattr(ctx, alice, ino, "user.a"), syscall.ENODATA, "RemoveXattr missing")
	_, err = m.GetXattr(ctx, alice, ino, "user.a")
	wantErr(t, err, syscall.ENODATA, "GetXattr removed")
}

func (s *suite) testRename(t *testing.T) {
	_, m := s.fresh(t, defaultOpts())
	a := mkdir(t, m, root, meta.RootIno, "a", 0o755)
	b := mkdir(t, m, root, meta.RootIno, "b", 0o755)
	f1 := mkfile(t, m, root, a, "f1", 0o644)
	f2 := mkfile(t, m, root, b, "f2", 0o644)

	// File over file: the replaced file goes.
	ok(t, m.Rename(ctx, root, a, "f1", b, "f2", 0), "rename file over file")
	if got, _, err := m.Lookup(ctx, root, b, "f2"); err != nil || got != f1 {
		t.Fatalf("b/f2 = %d, %v; want %d", got, err, f1)
	}
	_, _, err := m.Lookup(ctx, root, a, "f1")
	wantErr(t, err, syscall.ENOENT, "old name after rename")
	_, err = m.GetAttr(ctx, f2)
	wantErr(t, err, syscall.ENOENT, "replaced file")
	checkTree(t, m)

	// Rename within one directory.
	ok(t, m.Rename(ctx, root, b, "f2", b, "g", 0), "rename in place")
	if diff := cmp.Diff([]string{".", "..", "g"}, names(t, m, b)); diff != "" {
		t.Fatal(diff)
	}

	// Directory across parents, over an empty directory.
	d := mkdir(t, m, root, a, "d", 0o755)
	mkfile(t, m, root, d, "inside", 0o644)
	empty := mkdir(t, m, root, b, "empty", 0o755)
	ok(t, m.Rename(ctx, root, a, "d", b, "empty", 0), "rename dir over empty dir")
	_, err = m.GetAttr(ctx, empty)
	wantErr(t, err, syscall.ENOENT, "replaced dir")
	if got := getattr(t, m, d); got.Parent != b {
		t.Fatalf("moved dir parent = %d, want %d", got.Parent, b)
	}
	if got := getattr(t, m, a); got.Nlink != 2 {
		t.Fatalf("a nlink = %d, want 2", got.Nlink)
	}
	if got := getattr(t, m, b); got.Nlink != 3 {
		t.Fatalf("b nlink = %d, want 3", got.Nlink)
	}
	if got, _, err := m.Lookup(ctx, root, d, ".."); err != nil || got != b {
		t.Fatalf("moved dir .. = %d, %v", got, err)
	}
	checkTree(t, m)

	// Over a non-empty dir, type mismatches.
	mkdir(t, m, root, a, "d2", 0o755)
	wantErr(t, m.Rename(ctx, root, a, "d2", b, "empty", 0), syscall.ENOTEMPTY, "rename over non-empty dir")
	wantErr(t, m.Rename(ctx, root, b, "g", b, "empty", 0), syscall.EISDIR, "rename file over dir")
	wantErr(t, m.Rename(ctx, root, a, "d2", b, "g", 0), syscall.ENOTDIR, "rename dir over file")
	wantErr(t, m.Rename(ctx, root, a, "missing", b, "x", 0), syscall.ENOENT, "rename missing")

	// Into its own subtree.
	deep := mkdir(t, m, root, d, "deep", 0o755)
	wantErr(t, m.Rename(ctx, root, b, "empty", deep, "x", 0), syscall.EINVAL, "rename dir into own subtree")
	wantErr(t, m.Rename(ctx, root, b, "empty", d, "x", 0), syscall.EINVAL, "rename dir into itself")
	// Moving it up is fine.
	ok(t, m.Rename(ctx, root, d, "deep", meta.RootIno, "deep", 0), "rename dir up")

	// Two names of one inode: nothing happens.
	_, err = m.Link(ctx, root, f1, a, "hard")
	ok(t, err, "Link")
	ok(t, m.Rename(ctx, root, a, "hard", b, "g", 0), "rename onto another link of itself")
	if got := getattr(t, m, f1); got.Nlink != 2 {
		t.Fatalf("nlink = %d, want 2", got.Nlink)
	}
	checkTree(t, m)
}

func (s *suite) testRenameFlags(t *testing.T) {
	_, m := s.fresh(t, defaultOpts())
	a := mkdir(t, m, root, meta.RootIno, "a", 0o755)
	b := mkdir(t, m, root, meta.RootIno, "b", 0o755)
	f := mkfile(t, m, root, a, "f", 0o644)
	d := mkdir(t, m, root, b, "d", 0o755)
	mkfile(t, m, root, d, "x", 0o644)
	g := mkfile(t, m, root, b, "g", 0o644)

	wantErr(t, m.Rename(ctx, root, a, "f", b, "g", meta.RenameNoReplace), syscall.EEXIST, "NOREPLACE onto existing")
	wantErr(t, m.Rename(ctx, root, a, "f", b, "none", meta.RenameExchange), syscall.ENOENT, "EXCHANGE with missing")
	wantErr(t, m.Rename(ctx, root, a, "f", b, "g", meta.RenameExchange|meta.RenameNoReplace), syscall.EINVAL, "both flags")
	ok(t, m.Rename(ctx, root, a, "f", a, "f2", meta.RenameNoReplace), "NOREPLACE onto a free name")

	// Exchange a file in a with a non-empty directory in b.
	ok(t, m.Rename(ctx, root, a, "f2", b, "d", meta.RenameExchange), "EXCHANGE file<->dir")
	if got, _, err := m.Lookup(ctx, root, a, "f2"); err != nil || got != d {
		t.Fatalf("a/f2 = %d, %v; want dir %d", got, err, d)
	}
	if got, _, err := m.Lookup(ctx, root, b, "d"); err != nil || got != f {
		t.Fatalf("b/d = %d, %v; want file %d", got, err, f)
	}
	if got := getattr(t, m, d); got.Parent != a {
		t.Fatalf("exchanged dir parent = %d, want %d", got.Parent, a)
	}
	if na, nb := getattr(t, m, a).Nlink, getattr(t, m, b).Nlink; na != 3 || nb != 2 {
		t.Fatalf("nlink a=%d b=%d, want 3 and 2", na, nb)
	}
	es, err := m.Readdir(ctx, root, a, true)
	ok(t, err, "Readdir")
	for _, e := range es {
		if e.Name == "f2" && e.Attr.Typ != meta.TypeDir {
			t.Fatalf("entry type not exchanged: %+v", e)
		}
	}
	checkTree(t, m)
	// Exchanging a directory into its own subtree is refused.
	sub := mkdir(t, m, root, d, "sub", 0o755)
	mkfile(t, m, root, sub, "y", 0o644)
	wantErr(t, m.Rename(ctx, root, a, "f2", sub, "y", meta.RenameExchange), syscall.EINVAL, "EXCHANGE into own subtree")
	// Exchange two files in one directory.
	ok(t, m.Rename(ctx, root, b, "d", b, "g", meta.RenameExchange), "EXCHANGE in one dir")
	if got, _, _ := m.Lookup(ctx, root, b, "g"); got != f {
		t.Fatalf("b/g = %d, want %d", got, f)
	}
	if got, _, _ := m.Lookup(ctx, root, b, "d"); got != g {
		t.Fatalf("b/d = %d, want %d", got, g)
	}
	checkTree(t, m)
}

func (s *suite) testPermissions(t *testing.T) {
	_, m := s.fresh(t, defaultOpts())
	pub := mkdir(t, m, root, meta.RootIno, "pub", 0o755)
	priv := mkdir(t, m, root, meta.RootIno, "priv", 0o700)
	mkfile(t, m, root, priv, "secret", 0o600)
	f := mkfile(t, m, root, pub, "f", 0o644)
	noread := mkdir(t, m, root, meta.RootIno, "noread", 0o711)
	mkfile(t, m, root, noread, "known", 0o644)

	_, _, err := m.Mknod(ctx, alice, pub, "x", meta.TypeFile, 0o644, 0)
	wantErr(t, err, syscall.EACCES, "create in a dir without write permission")
	_, _, err = m.Mkdir(ctx, alice, pub, "x", 0o755)
	wantErr(t, err, syscall.EACCES, "mkdir in a dir without write permission")
	_, _, err = m.Lookup(ctx, alice, priv, "secret")
	wantErr(t, err, syscall.EACCES, "lookup in a dir without search permission")
	_, err = m.Readdir(ctx, alice, noread, false)
	wantErr(t, err, syscall.EACCES, "readdir without read permission")
	if _, _, err := m.Lookup(ctx, alice, noread, "known"); err != nil {
		t.Fatalf("lookup with only search permission: %v", err)
	}
	wantErr(t, m.Unlink(ctx, alice, pub, "f"), syscall.EACCES, "unlink without write permission")
	wantErr(t, m.Rename(ctx, alice, pub, "f", meta.RootIno, "g", 0), syscall.EACCES, "rename without write permission")
	_, err = m.Open(ctx, alice, f, syscall.O_WRONLY)
	wantErr(t, err, syscall.EACCES, "open for writing without permission")
	_, err = m.Open(ctx, alice, f, syscall.O_RDONLY|syscall.O_TRUNC)
	wantErr(t, err, syscall.EACCES, "O_TRUNC without write permission")
	_, err = m.Open(ctx, alice, f, syscall.O_RDONLY)
	ok(t, err, "open for reading")
	ok(t, m.Release(ctx, f), "Release")
	_, err = m.Open(ctx, root, pub, syscall.O_RDWR)
	wantErr(t, err, syscall.EISDIR, "open a dir for writing")
	_, err = m.Truncate(ctx, alice, f, 0)
	wantErr(t, err, syscall.EACCES, "truncate without write permission")

	wantErr(t, m.Access(ctx, alice, f, meta.R_OK), nil, "access R")
	wantErr(t, m.Access(ctx, alice, f, meta.W_OK), syscall.EACCES, "access W")
	wantErr(t, m.Access(ctx, root, f, meta.R_OK|meta.W_OK), nil, "root access RW")
	wantErr(t, m.Access(ctx, root, f, meta.X_OK), syscall.EACCES, "root exec on a non-executable file")
	wantErr(t, m.Access(ctx, root, priv, meta.X_OK), nil, "root search")
	// Group permissions.
	ok(t, errOnly(m.SetAttr(ctx, root, f, meta.SetGID|meta.SetMode, meta.Attr{Gid: 50, Mode: 0o664})), "chgrp")
	wantErr(t, m.Access(ctx, alice, f, meta.W_OK), nil, "group write")
	wantErr(t, m.Access(ctx, bob, f, meta.W_OK), syscall.EACCES, "other write")
	// Owner bits apply even when they give less than the group bits.
	ok(t, errOnly(m.SetAttr(ctx, root, f, meta.SetUID|meta.SetMode, meta.Attr{Uid: 1000, Mode: 0o074})), "chown")
	wantErr(t, m.Access(ctx, alice, f, meta.R_OK), syscall.EACCES, "owner without read bit")
}

func (s *suite) testSticky(t *testing.T) {
	_, m := s.fresh(t, defaultOpts())
	tmp := mkdir(t, m, root, meta.RootIno, "tmp", 0o1777)
	mkfile(t, m, alice, tmp, "a", 0o666)
	mkfile(t, m, bob, tmp, "b", 0o666)
	wantErr(t, m.Unlink(ctx, bob, tmp, "a"), syscall.EPERM, "unlink another's file in a sticky dir")
	wantErr(t, m.Rename(ctx, bob, tmp, "a", tmp, "c", 0), syscall.EPERM, "rename another's file in a sticky dir")
	wantErr(t, m.Rename(ctx, bob, tmp, "b", tmp, "a", 0), syscall.EPERM, "rename over another's file in a sticky dir")
	ok(t, m.Rename(ctx, alice, tmp, "a", tmp, "a2", 0), "rename own file")
	ok(t, m.Unlink(ctx, bob, tmp, "b"), "unlink own file")
	ok(t, m.Unlink(ctx, root, tmp, "a2"), "root unlinks anything")
	d := mkdir(t, m, alice, tmp, "d", 0o777)
	_ = d
	wantErr(t, m.Rmdir(ctx, bob, tmp, "d"), syscall.EPERM, "rmdir another's dir in a sticky dir")
	// The owner of the sticky directory may remove anything in it.
	own := mkdir(t, m, root, meta.RootIno, "own", 0o777)
	ok(t, errOnly(m.SetAttr(ctx, root, own, meta.SetUID|meta.SetMode, meta.Attr{Uid: bob.Uid, Mode: 0o1777})), "chown")
	mkfile(t, m, alice, own, "x", 0o644)
	ok(t, m.Unlink(ctx, bob, own, "x"), "dir owner unlinks in sticky dir")
	checkTree(t, m)
}

func (s *suite) testSetgidDir(t *testing.T) {
	_, m := s.fresh(t, defaultOpts())
	shared := mkdir(t, m, root, meta.RootIno, "shared", 0o777)
	ok(t, errOnly(m.SetAttr(ctx, root, shared, meta.SetGID|meta.SetMode, meta.Attr{Gid: 777, Mode: 0o2777})), "chmod g+s")
	_, fa, err := m.Mknod(ctx, bob, shared, "f", meta.TypeFile, 0o2755, 0)
	ok(t, err, "Mknod")
	if fa.Gid != 777 {
		t.Fatalf("file gid = %d, want the directory's 777", fa.Gid)
	}
	if fa.Mode&0o2000 != 0 {
		t.Fatalf("file kept setgid of a group its creator is not in: %o", fa.Mode)
	}
	sub, sa, err := m.Mkdir(ctx, bob, shared, "sub", 0o755)
	ok(t, err, "Mkdir")
	if sa.Gid != 777 || sa.Mode != 0o2755 {
		t.Fatalf("subdir gid %d mode %o, want 777 and 2755", sa.Gid, sa.Mode)
	}
	_, ga, err := m.Mknod(ctx, bob, sub, "g", meta.TypeFile, 0o644, 0)
	ok(t, err, "Mknod in subdir")
	if ga.Gid != 777 {
		t.Fatalf("grandchild gid = %d, want 777", ga.Gid)
	}
	_, pa, err := m.Mknod(ctx, alice, meta.RootIno, "plain", meta.TypeFile, 0o644, 0)
	ok(t, err, "Mknod in plain dir")
	if pa.Gid != alice.Gids[0] {
		t.Fatalf("gid in a plain dir = %d, want the caller's %d", pa.Gid, alice.Gids[0])
	}
}

// deleted collects the slice ids a Meta's deleter was called with.
type deleted struct {
	mu  sync.Mutex
	ids map[uint64]uint32
}

func watchDeletes(m *meta.Meta) *deleted {
	d := &deleted{ids: make(map[uint64]uint32)}
	m.SetDeleter(func(ctx context.Context, id uint64, size uint32) error {
		d.mu.Lock()
		d.ids[id] = size
		d.mu.Unlock()
		return nil
	})
	return d
}

func (d *deleted) has(id uint64) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	_, ok := d.ids[id]
	return ok
}

func waitFor(t testing.TB, what string, timeout time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// writeSlice stores a new slice of length n at pos of chunk.
func writeSlice(t testing.TB, m *meta.Meta, ino meta.Ino, chunk, pos, n uint32) slice.Slice {
	t.Helper()
	id, err := m.NewSliceID(ctx)
	ok(t, err, "NewSliceID")
	s := slice.Slice{Pos: pos, ID: id, Size: n, Len: n}
	ok(t, m.WriteChunk(ctx, ino, chunk, s, time.Now()), "WriteChunk")
	return s
}

func (s *suite) testOpenUnlinked(t *testing.T) {
	opts := defaultOpts()
	opts.JobInterval = 20 * time.Millisecond
	vol, m := s.fresh(t, opts)
	del := watchDeletes(m)
	other := client(t, vol, opts)

	ino, _, err := m.Create(ctx, alice, meta.RootIno, "f", 0o644, syscall.O_RDWR)
	ok(t, err, "Create")
	sl := writeSlice(t, m, ino, 0, 0, 4096)
	// A second handle, then unlink by another client.
	_, err = m.Open(ctx, alice, ino, syscall.O_RDONLY)
	ok(t, err, "Open")
	ok(t, other.Unlink(ctx, alice, meta.RootIno, "f"), "Unlink")
	a, err := m.GetAttr(ctx, ino)
	ok(t, err, "GetAttr of open unlinked file")
	if a.Nlink != 0 || a.Size != 4096 {
		t.Fatalf("open unlinked attr = %+v", a)
	}
	ss, err := m.ReadChunk(ctx, ino, 0)
	ok(t, err, "ReadChunk of open unlinked file")
	if len(ss) != 1 || ss[0] != sl {
		t.Fatalf("ReadChunk = %v", ss)
	}
	// Still writable while open.
	sl2 := writeSlice(t, m, ino, 1, 0, 100)
	checkTree(t, m)
	ok(t, m.Release(ctx, ino), "Release 1")
	time.Sleep(100 * time.Millisecond)
	if del.has(sl.ID) {
		t.Fatal("slice deleted while the file is still open")
	}
	ok(t, errOnly(m.GetAttr(ctx, ino)), "GetAttr while one handle is open")
	ok(t, m.Release(ctx, ino), "Release 2")
	wantErr(t, m.Release(ctx, ino), syscall.EBADF, "Release without Open")
	_, err = m.GetAttr(ctx, ino)
	wantErr(t, err, syscall.ENOENT, "GetAttr after last release")
	waitFor(t, "the deletion of the file's slices", 5*time.Second, func() bool { return del.has(sl.ID) && del.has(sl2.ID) })
	if del.ids[sl.ID] != sl.Size {
		t.Fatalf("deleter got size %d, want %d", del.ids[sl.ID], sl.Size)
	}
	// Queue drained, chunks gone.
	waitFor(t, "an empty delete queue", 5*time.Second, func() bool {
		n := 0
		ok(t, m.PendingSlices(ctx, func(uint64, uint32, time.Time) error { n++; return nil }), "PendingSlices")
		return n == 0
	})
	var live int
	ok(t, m.ListSlices(ctx, func(meta.Ino, uint32, slice.Slice) error { live++; return nil }), "ListSlices")
	if live != 0 {
		t.Fatalf("%d slices still listed after the file was deleted", live)
	}
	checkTree(t, m)

	// A file open in a session is deleted when that session closes.
	ino2, _, err := other.Create(ctx, root, meta.RootIno, "g", 0o644, syscall.O_RDWR)
	ok(t, err, "Create")
	sl3 := writeSlice(t, other, ino2, 0, 0, 10)
	ok(t, m.Unlink(ctx, root, meta.RootIno, "g"), "Unlink")
	ok(t, errOnly(m.GetAttr(ctx, ino2)), "GetAttr while open elsewhere")
	ok(t, other.Close(ctx), "Close")
	_, err = m.GetAttr(ctx, ino2)
	wantErr(t, err, syscall.ENOENT, "GetAttr after the session closed")
	waitFor(t, "the deletion of the closed session's file", 5*time.Second, func() bool { return del.has(sl3.ID) })
	// Unlink of a file nobody has open frees it at once.
	ino3 := mkfile(t, m, root, meta.RootIno, "h", 0o644)
	sl4 := writeSlice(t, m, ino3, 0, 0, 10)
	ok(t, m.Unlink(ctx, root, meta.RootIno, "h"), "Unlink")
	waitFor(t, "the deletion of an unlinked file", 5*time.Second, func() bool { return del.has(sl4.ID) })
	checkTree(t, m)
}

func (s *suite) testStaleSession(t *testing.T) {
	// The stale client never heartbeats within the test; the cleaner
	// considers sessions stale after 300ms.
	staleOpts := defaultOpts()
	staleOpts.Heartbeat = time.Hour
	vol, stale := s.fresh(t, staleOpts)
	ino, _, err := stale.Create(ctx, root, meta.RootIno, "f", 0o644, syscall.O_RDWR)
	ok(t, err, "Create")
	sl := writeSlice(t, stale, ino, 0, 0, 100)
	ok(t, stale.Unlink(ctx, root, meta.RootIno, "f"), "Unlink")
	ok(t, errOnly(stale.GetAttr(ctx, ino)), "GetAttr while open")
	ss, err := stale.Sessions(ctx)
	ok(t, err, "Sessions")
	if len(ss) != 1 || ss[0].Info.Hostname != "host" || time.Since(ss[0].Heartbeat) > time.Minute {
		t.Fatalf("Sessions = %+v", ss)
	}
	staleID := ss[0].ID

	cleanOpts := defaultOpts()
	cleanOpts.Heartbeat = 50 * time.Millisecond
	cleanOpts.SessionTimeout = 300 * time.Millisecond
	cleanOpts.JobInterval = 20 * time.Millisecond
	cleaner := client(t, vol, cleanOpts)
	del := watchDeletes(cleaner)
	waitFor(t, "the stale session's open-unlinked file to be deleted", 10*time.Second, func() bool { return del.has(sl.ID) })
	_, err = cleaner.GetAttr(ctx, ino)
	wantErr(t, err, syscall.ENOENT, "GetAttr after stale cleanup")
	ss, err = cleaner.Sessions(ctx)
	ok(t, err, "Sessions")
	for _, s := range ss {
		if s.ID == staleID {
			t.Fatalf("stale session %d still listed", staleID)
		}
	}
	// The live cleaner's own session survives its own timeout thanks to
	// heartbeats.
	time.Sleep(500 * time.Millisecond)
	ss, err = cleaner.Sessions(ctx)
	ok(t, err, "Sessions")
	if len(ss) != 1 || ss[0].ID == staleID {
		t.Fatalf("sessions after cleanup = %+v", ss)
	}
	checkTree(t, cleaner)
}

func resolve(t testing.TB, m *meta.Meta, ino meta.Ino, chunk uint32) []slice.Slice {
	t.Helper()
	ss, err := m.ReadChunk(ctx, ino, chunk)
	ok(t, err, "ReadChunk")
	return slice.Resolve(ss)
}

func (s *suite) testTruncate(t *testing.T) {
	opts := defaultOpts()
	opts.SliceFreeDelay = 200 * time.Millisecond
	opts.JobInterval = 20 * time.Millisecond
	_, m := s.fresh(t, opts)
	ino := mkfile(t, m, alice, meta.RootIno, "f", 0o644)
	s0 := writeSlice(t, m, ino, 0, 0, 1<<20)
	if a := getattr(t, m, ino); a.Size != 1<<20 {
		t.Fatalf("size after write = %d", a.Size)
	}
	a, err := m.Truncate(ctx, alice, ino, 100)
	ok(t, err, "Truncate down")
	if a.Size != 100 {
		t.Fatalf("size = %d", a.Size)
	}
	ok(t, errOnly(m.SetAttr(ctx, alice, ino, meta.SetMode, meta.Attr{Mode: 0o4755})), "chmod u+s")
	ok(t, errOnly(m.Truncate(ctx, alice, ino, 1<<20)), "Truncate up")
	if a := getattr(t, m, ino); a.Mode != 0o755 {
		t.Fatalf("setuid survived a truncate by a non-root caller: %o", a.Mode)
	}
	want := []slice.Slice{{Pos: 0, ID: s0.ID, Size: s0.Size, Len: 100}, {Pos: 100, Len: 1<<20 - 100}}
	if diff := cmp.Diff(want, resolve(t, m, ino, 0)); diff != "" {
		t.Fatalf("visible after truncate down+up (-want +got):\n%s", diff)
	}
	// Growing past old data needs no record: the gap reads as zeros.
	ok(t, errOnly(m.Truncate(ctx, alice, ino, 3<<20)), "Truncate up further")
	if got := getattr(t, m, ino).Size; got != 3<<20 {
		t.Fatalf("size = %d", got)
	}

	// Across chunks: chunk 2 goes, chunk 1 gets a hole past the end.
	del := watchDeletes(m)
	s1 := writeSlice(t, m, ino, 1, 0, 1000)
	s2 := writeSlice(t, m, ino, 2, 0, 1000)
	if got := getattr(t, m, ino).Size; got != 2*slice.ChunkSize+1000 {
		t.Fatalf("size = %d", got)
	}
	start := time.Now()
	ok(t, errOnly(m.Truncate(ctx, alice, ino, slice.ChunkSize+10)), "Truncate across chunks")
	ss, err := m.ReadChunk(ctx, ino, 2)
	ok(t, err, "ReadChunk 2")
	if len(ss) != 0 {
		t.Fatalf("chunk 2 past the end still has records %v", ss)
	}
	pending := map[uint64]bool{}
	ok(t, m.PendingSlices(ctx, func(id uint64, _ uint32, _ time.Time) error { pending[id] = true; return nil }), "PendingSlices")
	if !pending[s2.ID] {
		t.Fatalf("slice %d of the dropped chunk is not pending deletion: %v", s2.ID, pending)
	}
	want = []slice.Slice{{Pos: 0, ID: s1.ID, Size: s1.Size, Len: 10}, {Pos: 10, Len: 990}}
	if diff := cmp.Diff(want, resolve(t, m, ino, 1)); diff != "" {
		t.Fatalf("chunk 1 after truncate (-want +got):\n%s", diff)
	}
	waitFor(t, "the dropped slice to be freed", 5*time.Second, func() bool { return del.has(s2.ID) })
	if since := time.Since(start); since < opts.SliceFreeDelay {
		t.Fatalf("slice freed after %v, before SliceFreeDelay %v", since, opts.SliceFreeDelay)
	}
	// Truncate to zero drops everything.
	ok(t, errOnly(m.Truncate(ctx, alice, ino, 0)), "Truncate to 0")
	for c := uint32(0); c < 3; c++ {
		if ss, _ := m.ReadChunk(ctx, ino, c); len(ss) != 0 {
			t.Fatalf("chunk %d after truncate to 0: %v", c, ss)
		}
	}
	d := mkdir(t, m, root, meta.RootIno, "d", 0o755)
	_, err = m.Truncate(ctx, root, d, 0)
	wantErr(t, err, syscall.EISDIR, "Truncate dir")
	wantErr(t, m.WriteChunk(ctx, d, 0, s0, time.Now()), syscall.EISDIR, "WriteChunk dir")
	if err := m.WriteChunk(ctx, ino, 0, slice.Slice{ID: 1, Size: 10, Len: 0}, time.Now()); err == nil {
		t.Fatal("WriteChunk accepted an invalid slice")
	}
}

func (s *suite) testFallocate(t *testing.T) {
	_, m := s.fresh(t, defaultOpts())
	ino := mkfile(t, m, alice, meta.RootIno, "f", 0o644)
	s0 := writeSlice(t, m, ino, 0, 0, 1000)
	ok(t, m.Fallocate(ctx, alice, ino, meta.FallocPunchHole|meta.FallocKeepSize, 100, 200), "punch hole")
	want := []slice.Slice{{Pos: 0, ID: s0.ID, Size: 1000, Len: 100}, {Pos: 100, Len: 200}, {Pos: 300, ID: s0.ID, Size: 1000, Off: 300, Len: 700}}
	if diff := cmp.Diff(want, resolve(t, m, ino, 0)); diff != "" {
		t.Fatalf("after punch (-want +got):\n%s", diff)
	}
	if got := getattr(t, m, ino).Size; got != 1000 {
		t.Fatalf("punch changed size to %d", got)
	}
	wantErr(t, m.Fallocate(ctx, alice, ino, meta.FallocPunchHole, 0, 10), syscall.EOPNOTSUPP, "punch without keep-size")
	ok(t, m.Fallocate(ctx, alice, ino, meta.FallocKeepSize, 0, 5000), "keep-size allocate")
	if got := getattr(t, m, ino).Size; got != 1000 {
		t.Fatalf("keep-size changed size to %d", got)
	}
	ok(t, m.Fallocate(ctx, alice, ino, 0, 500, 5000), "allocate")
	if got := getattr(t, m, ino).Size; got != 5500 {
		t.Fatalf("size after allocate = %d, want 5500", got)
	}
	wantErr(t, m.Fallocate(ctx, bob, ino, 0, 0, 1), syscall.EACCES, "allocate without write permission")
	wantErr(t, m.Fallocate(ctx, alice, ino, 0, 0, 0), syscall.EINVAL, "zero length")
}

func (s *suite) testCompactChunk(t *testing.T) {
	opts := defaultOpts()
	opts.SliceFreeDelay = 300 * time.Millisecond
	opts.JobInterval = 20 * time.Millisecond
	_, m := s.fresh(t, opts)
	del := watchDeletes(m)
	ino := mkfile(t, m, root, meta.RootIno, "f", 0o644)
	a := writeSlice(t, m, ino, 0, 0, 100)
	b := writeSlice(t, m, ino, 0, 50, 100)
	old, err := m.ReadChunk(ctx, ino, 0)
	ok(t, err, "ReadChunk")
	// A write lands after the compactor read the list.
	c := writeSlice(t, m, ino, 0, 140, 10)
	merged, err := m.NewSliceID(ctx)
	ok(t, err, "NewSliceID")
	repl := []slice.Slice{{Pos: 0, ID: merged, Size: 150, Len: 150}}
	before := slice.Resolve(append(append([]slice.Slice{}, repl...), c))
	start := time.Now()
	ok(t, m.CompactChunk(ctx, ino, 0, old, repl), "CompactChunk")
	got, err := m.ReadChunk(ctx, ino, 0)
	ok(t, err, "ReadChunk")
	if diff := cmp.Diff([]slice.Slice{repl[0], c}, got); diff != "" {
		t.Fatalf("records after compaction (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(before, slice.Resolve(got)); diff != "" {
		t.Fatal(diff)
	}
	// A stale list is refused.
	err = m.CompactChunk(ctx, ino, 0, old, repl)
	if !errors.Is(err, meta.ErrChunkChanged) {
		t.Fatalf("CompactChunk with a stale list: %v, want ErrChunkChanged", err)
	}
	if del.has(a.ID) || del.has(b.ID) {
		t.Fatal("compacted slices freed at once, before SliceFreeDelay")
	}
	waitFor(t, "compacted slices to be freed", 5*time.Second, func() bool { return del.has(a.ID) && del.has(b.ID) })
	if since := time.Since(start); since < opts.SliceFreeDelay {
		t.Fatalf("freed after %v, before SliceFreeDelay", since)
	}
	if del.has(merged) || del.has(c.ID) {
		t.Fatal("a live slice was freed")
	}
	live := map[uint64]bool{}
	ok(t, m.ListSlices(ctx, func(i meta.Ino, ch uint32, s slice.Slice) error {
		if i != ino || ch != 0 {
			t.Errorf("ListSlices: unexpected %d/%d", i, ch)
		}
		live[s.ID] = true
		return nil
	}), "ListSlices")
	if diff := cmp.Diff(map[uint64]bool{merged: true, c.ID: true}, live); diff != "" {
		t.Fatalf("ListSlices (-want +got):\n%s", diff)
	}
}

func (s *suite) testIDs(t *testing.T) {
	vol, m1 := s.fresh(t, defaultOpts())
	m2 := client(t, vol, defaultOpts())
	var mu sync.Mutex
	seen := map[uint64]bool{}
	inos := map[meta.Ino]bool{}
	var wg sync.WaitGroup
	for i, m := range []*meta.Meta{m1, m2, m1, m2} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := 0; j < 50; j++ {
				id, err := m.NewSliceID(ctx)
				if err != nil {
					t.Errorf("NewSliceID: %v", err)
					return
				}
				ino, _, err := m.Mknod(ctx, root, meta.RootIno, fmt.Sprintf("f%d-%d", i, j), meta.TypeFile, 0o644, 0)
				if err != nil {
					t.Errorf("Mknod: %v", err)
					return
				}
				mu.Lock()
				if id == 0 || seen[id] {
					t.Errorf("slice id %d handed out twice (or zero)", id)
				}
				if ino <= meta.RootIno || inos[ino] {
					t.Errorf("inode %d handed out twice (or reserved)", ino)
				}
				seen[id], inos[ino] = true, true
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if len(seen) != 200 || len(inos) != 200 {
		t.Fatalf("got %d slice ids and %d inodes, want 200 each", len(seen), len(inos))
	}
	checkTree(t, m1)
}

func (s *suite) testStatFS(t *testing.T) {
	_, m := s.fresh(t, defaultOpts())
	st, err := m.StatFS(ctx)
	ok(t, err, "StatFS")
	if st.UsedInodes != 1 || st.UsedBytes != 0 || st.TotalBytes == 0 || st.AvailBytes != st.TotalBytes || st.Inodes <= 1 {
		t.Fatalf("StatFS of an empty volume = %+v", st)
	}
	ino := mkfile(t, m, root, meta.RootIno, "f", 0o644)
	mkdir(t, m, root, meta.RootIno, "d", 0o755)
	writeSlice(t, m, ino, 0, 0, 1<<20)
	writeSlice(t, m, ino, 0, 0, 100) // overwrite: no growth
	st, err = m.StatFS(ctx)
	ok(t, err, "StatFS")
	if st.UsedInodes != 3 || st.UsedBytes != 1<<20 || st.AvailBytes != st.TotalBytes-st.UsedBytes {
		t.Fatalf("StatFS = %+v, want 3 inodes and 1 MiB", st)
	}
	ok(t, errOnly(m.Truncate(ctx, root, ino, 5000)), "Truncate")
	st, _ = m.StatFS(ctx)
	if st.UsedBytes != 8192 {
		t.Fatalf("used after truncate to 5000 = %d, want 8192", st.UsedBytes)
	}
	ok(t, m.Unlink(ctx, root, meta.RootIno, "f"), "Unlink")
	ok(t, m.Rmdir(ctx, root, meta.RootIno, "d"), "Rmdir")
	st, _ = m.StatFS(ctx)
	if st.UsedInodes != 1 || st.UsedBytes != 0 {
		t.Fatalf("StatFS after removing everything = %+v", st)
	}
}

func (s *suite) testCheckTree(t *testing.T) {
	_, m := s.fresh(t, defaultOpts())
	d := mkdir(t, m, root, meta.RootIno, "d", 0o755)
	f := mkfile(t, m, root, d, "f", 0o644)
	_, err := m.Link(ctx, root, f, meta.RootIno, "f2")
	ok(t, err, "Link")
	mkdir(t, m, root, d, "e", 0o755)
	_, _, err = m.Symlink(ctx, root, d, "l", "f")
	ok(t, err, "Symlink")
	r := checkTree(t, m)
	if r.Inodes != 5 || r.Dirs != 3 || r.Entries != 5 {
		t.Fatalf("CheckTree = %+v, want 5 inodes, 3 dirs, 5 entries", r)
	}
	// Break the tree behind meta's back (key schema in meta's doc.go): a
	// dentry to a missing inode must be reported.
	err = m.Engine().Update(ctx, func(tx kv.Tx) error {
		tx.Delete(fmt.Sprintf("i%d", f))
		return nil
	})
	ok(t, err, "corrupt")
	r, err = m.CheckTree(ctx)
	ok(t, err, "CheckTree")
	if len(r.Problems) == 0 {
		t.Fatal("CheckTree missed entries pointing to a deleted inode")
	}
}

// Concurrency: clients race on one directory; afterwards every entry
// points to a live inode, link counts equal the entries, no inode is lost
// or left behind, and every file a client made under a private name exists.
func (s *suite) testConcurrency(t *testing.T) {
	opts := defaultOpts()
	vol, first := s.fresh(t, opts)
	dir := mkdir(t, first, root, meta.RootIno, "race", 0o777)
	const clients, ops = 4, 120
	ms := []*meta.Meta{first}
	for len(ms) < clients {
		ms = append(ms, client(t, vol, opts))
	}
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	var wg sync.WaitGroup
	private := make([][]string, clients)
	for i, m := range ms {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rnd := rand.New(rand.NewPCG(seed, uint64(i)))
			name := func() string { return fmt.Sprintf("n%d", rnd.IntN(12)) }
			for j := 0; j < ops; j++ {
				var err error
				var what string
				switch op := rnd.IntN(7); op {
				case 0:
					what = "create"
					var ino meta.Ino
					ino, _, err = m.Create(ctx, root, dir, name(), 0o644, syscall.O_RDWR)
					if err == nil {
						err = m.Release(ctx, ino)
					}
				case 1:
					what = "mkdir"
					_, _, err = m.Mkdir(ctx, root, dir, name(), 0o755)
				case 2:
					what = "rename"
					err = m.Rename(ctx, root, dir, name(), dir, name(), uint32(rnd.IntN(3)))
				case 3:
					what = "link"
					var ino meta.Ino
					if ino, _, err = m.Lookup(ctx, root, dir, name()); err == nil {
						_, err = m.Link(ctx, root, ino, dir, name())
					}
				case 4:
					what = "unlink"
					err = m.Unlink(ctx, root, dir, name())
				case 5:
					what = "rmdir"
					err = m.Rmdir(ctx, root, dir, name())
				case 6:
					what = "private create"
					p := fmt.Sprintf("p%d-%d", i, j)
					if _, _, err = m.Mknod(ctx, root, dir, p, meta.TypeFile, 0o644, 0); err == nil {
						private[i] = append(private[i], p)
					}
				}
				switch {
				case err == nil, errors.Is(err, syscall.EEXIST), errors.Is(err, syscall.ENOENT),
					errors.Is(err, syscall.ENOTEMPTY), errors.Is(err, syscall.EISDIR),
					errors.Is(err, syscall.ENOTDIR), errors.Is(err, syscall.EPERM):
				default:
					t.Errorf("client %d %s: %v", i, what, err)
				}
			}
		}()
	}
	wg.Wait()
	r := checkTree(t, first)
	got := names(t, first, dir)
	for i, ps := range private {
		for _, p := range ps {
			if !slices.Contains(got, p) {
				t.Errorf("client %d's file %s is lost", i, p)
			}
		}
	}
	st, err := first.StatFS(ctx)
	ok(t, err, "StatFS")
	if st.UsedInodes != uint64(r.Inodes) {
		t.Errorf("StatFS counts %d inodes, the tree holds %d", st.UsedInodes, r.Inodes)
	}
	t.Logf("after the race: %d inodes, %d entries", r.Inodes, r.Entries)
}

// Restart: the server restarts while clients create and rename; every
// operation succeeds or fails with an error, and the tree stays consistent.
func (s *suite) testRestart(t *testing.T) {
	vol := s.newVolume(t)
	if vol.Restart == nil {
		t.Log("engine has no server to restart")
		return
	}
	opts := defaultOpts()
	m0 := vol.Open(t, opts)
	ok(t, m0.Format(ctx, testFormat(), false), "Format")
	ok(t, m0.Close(ctx), "Close")
	ms := []*meta.Meta{client(t, vol, opts), client(t, vol, opts), client(t, vol, opts)}
	dir := mkdir(t, ms[0], root, meta.RootIno, "d", 0o777)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var mu sync.Mutex
	var okOps, failed int
	for i, m := range ms {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := 0; ; j++ {
				select {
				case <-stop:
					return
				default:
				}
				var err error
				name := fmt.Sprintf("c%d-%d", i, j%20)
				if j%2 == 0 {
					_, _, err = m.Mknod(ctx, root, dir, name, meta.TypeFile, 0o644, 0)
				} else {
					err = m.Rename(ctx, root, dir, fmt.Sprintf("c%d-%d", i, (j-1)%20), dir, fmt.Sprintf("c%d-%d", (i+1)%len(ms), j%20), 0)
				}
				mu.Lock()
				if err == nil || errors.Is(err, syscall.EEXIST) || errors.Is(err, syscall.ENOENT) {
					okOps++
				} else {
					failed++
					if err.Error() == "" {
						t.Errorf("operation failed without a message")
					}
				}
				mu.Unlock()
				if err != nil && !errors.Is(err, syscall.EEXIST) && !errors.Is(err, syscall.ENOENT) {
					time.Sleep(20 * time.Millisecond)
				}
			}
		}()
	}
	time.Sleep(300 * time.Millisecond)
	vol.Restart(t)
	time.Sleep(700 * time.Millisecond)
	close(stop)
	wg.Wait()
	t.Logf("%d operations succeeded, %d failed around the restart", okOps, failed)
	if okOps == 0 {
		t.Fatal("no operation succeeded")
	}
	// After the restart, clients work again.
	mkfile(t, ms[1], root, dir, "after", 0o644)
	checkTree(t, ms[0])
}

// RenameLoopRace: two clients move directories x and y into each other at
// the same time; the subtree check must stop them from forming a cycle cut
// off from the root.
func (s *suite) testRenameLoopRace(t *testing.T) {
	vol, m1 := s.fresh(t, defaultOpts())
	m2 := client(t, vol, defaultOpts())
	x := mkdir(t, m1, root, meta.RootIno, "x", 0o755)
	y := mkdir(t, m1, root, meta.RootIno, "y", 0o755)
	for round := 0; round < 20; round++ {
		var wg sync.WaitGroup
		var moved [2]bool
		move := func(k int, m *meta.Meta, name string, into meta.Ino) {
			defer wg.Done()
			err := m.Rename(ctx, root, meta.RootIno, name, into, name, 0)
			if err != nil && !errors.Is(err, syscall.ENOENT) && !errors.Is(err, syscall.EINVAL) {
				t.Errorf("rename %s: %v", name, err)
			}
			moved[k] = err == nil
		}
		wg.Add(2)
		go move(0, m1, "x", y)
		go move(1, m2, "y", x)
		wg.Wait()
		if moved[0] && moved[1] {
			t.Fatalf("round %d: both x into y and y into x succeeded", round)
		}
		checkTree(t, m1)
		if moved[0] {
			ok(t, m1.Rename(ctx, root, y, "x", meta.RootIno, "x", 0), "move x back")
		}
		if moved[1] {
			ok(t, m1.Rename(ctx, root, x, "y", meta.RootIno, "y", 0), "move y back")
		}
	}
	checkTree(t, m1)
}

func (s *suite) testReadOnly(t *testing.T) {
	vol, m := s.fresh(t, defaultOpts())
	f := mkfile(t, m, root, meta.RootIno, "f", 0o644)
	ropts := defaultOpts()
	ropts.ReadOnly = true
	ro := client(t, vol, ropts)
	_, _, err := ro.Mknod(ctx, root, meta.RootIno, "g", meta.TypeFile, 0o644, 0)
	wantErr(t, err, syscall.EROFS, "Mknod on a read-only client")
	wantErr(t, ro.Unlink(ctx, root, meta.RootIno, "f"), syscall.EROFS, "Unlink on a read-only client")
	_, err = ro.Open(ctx, root, f, syscall.O_RDWR)
	wantErr(t, err, syscall.EROFS, "Open for writing on a read-only client")
	_, err = ro.Open(ctx, root, f, syscall.O_RDONLY)
	ok(t, err, "Open for reading on a read-only client")
	ok(t, ro.Release(ctx, f), "Release")
	if got, _, err := ro.Lookup(ctx, root, meta.RootIno, "f"); err != nil || got != f {
		t.Fatalf("Lookup on a read-only client: %d, %v", got, err)
	}
	wantErr(t, ro.Access(ctx, root, f, meta.W_OK), syscall.EROFS, "Access W on a read-only client")
}
