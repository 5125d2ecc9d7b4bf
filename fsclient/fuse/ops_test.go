package fuse_test

import (
	"bytes"
	"context"
	"io"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/skiff-fs/skiff/fsclient/fuse"
	"github.com/skiff-fs/skiff/fsclient/fuse/fusetest"
	"github.com/skiff-fs/skiff/fsclient/meta"
	"github.com/skiff-fs/skiff/fsclient/vfs"
)

// Users for permission tests (they need no passwd entries).
const (
	alice = 10001
	bob   = 10002
	grpA  = 20001 // alice's primary group
	grpB  = 20002 // bob's primary group
	grpS  = 20003 // a supplementary group of alice
)

var (
	aliceG = []uint32{grpA, grpS}
	bobG   = []uint32{grpB}
)

// expect fails the test when an operation's result differs.
func expect(t *testing.T, want, got string, what ...string) {
	t.Helper()
	if got != want {
		t.Errorf("%s: got %q, want %q", strings.Join(what, " "), got, want)
	}
}

// do runs a file operation as root in this process.
func do(t *testing.T, want string, args ...string) {
	t.Helper()
	expect(t, want, fusetest.Do(args...), args...)
}

// as runs a file operation as another user.
func as(t *testing.T, uid uint32, gids []uint32, want string, args ...string) {
	t.Helper()
	expect(t, want, fusetest.As(t, uid, gids, args[0], args[1:]...), append([]string{"uid", uitoa(uid)}, args...)...)
}

func uitoa(n uint32) string {
	if n == 0 {
		return "0"
	}
	var b []byte
	for ; n > 0; n /= 10 {
		b = append([]byte{byte('0' + n%10)}, b...)
	}
	return string(b)
}

func stat(t *testing.T, p string) syscall.Stat_t {
	t.Helper()
	var st syscall.Stat_t
	if err := syscall.Lstat(p, &st); err != nil {
		t.Fatalf("stat %s: %v", p, err)
	}
	return st
}

func mustWrite(t *testing.T, p string, data []byte) {
	t.Helper()
	if err := os.WriteFile(p, data, 0o644); err != nil {
		t.Fatal(err)
	}
}

func mustRead(t *testing.T, p string) []byte {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestReadWrite(t *testing.T) {
	m := fusetest.NewBolt(t)
	p := m.Path("f")
	f, err := os.OpenFile(p, os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	data := bytes.Repeat([]byte("0123456789abcdef"), 100000) // 1.6 MB, several requests
	if _, err := f.WriteAt(data, 0); err != nil {
		t.Fatal(err)
	}
	// Before any close: the size shows the writes, and reads see them,
	// through this descriptor and through another one.
	if st, _ := f.Stat(); st.Size() != int64(len(data)) {
		t.Errorf("size before close %d, want %d", st.Size(), len(data))
	}
	got := make([]byte, len(data))
	if _, err := f.ReadAt(got, 0); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("read own writes: %v, equal %v", err, bytes.Equal(got, data))
	}
	if _, err := f.WriteAt([]byte("XYZ"), 5); err != nil {
		t.Fatal(err)
	}
	copy(data[5:], "XYZ")
	if b := mustRead(t, p); !bytes.Equal(b, data) {
		t.Errorf("second descriptor does not see the overwrite")
	}
	// A sparse write far out leaves zeros.
	if _, err := f.WriteAt([]byte("end"), 10<<20); err != nil {
		t.Fatal(err)
	}
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
	hole := make([]byte, 4096)
	if _, err := f.ReadAt(hole, 5<<20); err != nil || !bytes.Equal(hole, make([]byte, 4096)) {
		t.Errorf("hole does not read as zeros: %v", err)
	}
	if st, _ := f.Stat(); st.Size() != 10<<20+3 {
		t.Errorf("size %d, want %d", st.Size(), 10<<20+3)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}

	// O_APPEND from two descriptors interleaves whole writes at the end.
	a := m.Path("append")
	mustWrite(t, a, []byte("start\n"))
	f1, _ := os.OpenFile(a, os.O_WRONLY|os.O_APPEND, 0)
	f2, _ := os.OpenFile(a, os.O_WRONLY|os.O_APPEND, 0)
	f1.WriteString("one\n")
	f2.WriteString("two\n")
	f1.WriteString("three\n")
	f1.Close()
	f2.Close()
	expect(t, "start\none\ntwo\nthree\n", string(mustRead(t, a)), "append")

	// O_TRUNC empties the file.
	tr, err := os.OpenFile(a, os.O_WRONLY|os.O_TRUNC, 0)
	if err != nil {
		t.Fatal(err)
	}
	tr.WriteString("new")
	tr.Close()
	expect(t, "new", string(mustRead(t, a)), "O_TRUNC")

	// The data survives a remount.
	m2 := m.Remount()
	if b := mustRead(t, m2.Path("append")); string(b) != "new" {
		t.Errorf("after remount: %q", b)
	}
	if b := mustRead(t, m2.Path("f")); !bytes.Equal(b[:len(data)], data) || len(b) != 10<<20+3 {
		t.Errorf("big file differs after remount (len %d)", len(b))
	}
}

func TestCreateExcl(t *testing.T) {
	m := fusetest.NewBolt(t)
	p := m.Path("x")
	do(t, "0", "open", p, "O_WRONLY,O_CREAT,O_EXCL", "0644")
	do(t, "EEXIST", "open", p, "O_WRONLY,O_CREAT,O_EXCL", "0644")
	do(t, "0", "open", p, "O_WRONLY,O_CREAT", "0644")
	do(t, "ENOENT", "open", m.Path("nope"), "O_RDONLY")
	do(t, "EISDIR", "open", m.Dir, "O_WRONLY")
	do(t, "ENAMETOOLONG", "open", m.Path(strings.Repeat("n", 256)), "O_WRONLY,O_CREAT", "0644")
	do(t, "0", "open", m.Path(strings.Repeat("n", 255)), "O_WRONLY,O_CREAT", "0644")
}

func TestUnlinkOpenFile(t *testing.T) {
	m := fusetest.NewBolt(t)
	blocks := strings.TrimPrefix(m.Config.Bucket, "file://")
	p := m.Path("victim")
	data := bytes.Repeat([]byte{7}, 3<<20)
	mustWrite(t, p, data)
	before := countFiles(t, blocks)
	f, err := os.OpenFile(p, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(p); err != nil {
		t.Fatal(err)
	}
	do(t, "ENOENT", "stat", p)
	if _, err := f.WriteAt([]byte("more"), int64(len(data))); err != nil {
		t.Fatalf("write after unlink: %v", err)
	}
	got, err := io.ReadAll(io.NewSectionReader(f, 0, 1<<30))
	if err != nil || !bytes.Equal(got, append(data, "more"...)) {
		t.Fatalf("read after unlink: %v (len %d)", err, len(got))
	}
	var st syscall.Stat_t
	syscall.Fstat(int(f.Fd()), &st)
	if st.Nlink != 0 {
		t.Errorf("nlink of unlinked open file %d", st.Nlink)
	}
	if n := countFiles(t, blocks); n <= before-1 {
		t.Fatalf("blocks freed while the file is open: %d -> %d", before, n)
	}
	f.Close()
	// The data is freed after the close (a background job of meta).
	deadline := time.Now().Add(20 * time.Second)
	for {
		n := countFiles(t, blocks)
		if n < before {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("blocks not freed after close: %d objects, %d before the unlink", n, before)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func countFiles(t *testing.T, dir string) int {
	n := 0
	filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() && strings.Contains(p, "/chunks/") {
			n++
		}
		return nil
	})
	return n
}

func TestTruncate(t *testing.T) {
	m := fusetest.NewBolt(t)
	p := m.Path("t")
	mustWrite(t, p, []byte("hello world"))
	if err := os.Truncate(p, 5); err != nil {
		t.Fatal(err)
	}
	expect(t, "hello", string(mustRead(t, p)), "truncate")
	if err := os.Truncate(p, 8); err != nil {
		t.Fatal(err)
	}
	expect(t, "hello\x00\x00\x00", string(mustRead(t, p)), "grow")
	// ftruncate with unflushed writes in the same descriptor.
	f, _ := os.OpenFile(p, os.O_RDWR, 0)
	f.WriteAt([]byte("ABCDEFGHIJ"), 0)
	if err := f.Truncate(3); err != nil {
		t.Fatal(err)
	}
	f.WriteAt([]byte("Z"), 5)
	f.Close()
	expect(t, "ABC\x00\x00Z", string(mustRead(t, p)), "ftruncate")
	do(t, "EISDIR", "truncate", m.Dir, "0")
	do(t, "EINVAL", "truncate", p, "-1")

	// Permissions: truncate needs write permission, ftruncate a
	// descriptor open for writing (even on a file created read-only).
	os.Chmod(m.Dir, 0o777)
	as(t, alice, aliceG, "0", "create-ftruncate", m.Path("ro"), "100")
	st := stat(t, m.Path("ro"))
	if st.Size != 100 || st.Mode&0o777 != 0 {
		t.Errorf("created read-only file: size %d mode %o", st.Size, st.Mode)
	}
	as(t, bob, bobG, "EACCES", "truncate", p, "0")
	as(t, alice, aliceG, "EACCES", "truncate", m.Path("ro"), "0")
}

func TestSetattr(t *testing.T) {
	m := fusetest.NewBolt(t)
	os.Chmod(m.Dir, 0o777)
	p := m.Path("f")
	as(t, alice, aliceG, "0", "create", p, "0644")
	expect(t, "0 100644 10001 20001 0", fusetest.Do("stat", p), "owner from the creator")
	as(t, alice, aliceG, "0", "chmod", p, "0600")
	as(t, bob, bobG, "EPERM", "chmod", p, "0666")
	// chown: only root changes the owner; the owner may change the group
	// to one of its groups.
	as(t, alice, aliceG, "EPERM", "chown", p, uitoa(bob), "-1")
	as(t, alice, aliceG, "0", "chown", p, "-1", uitoa(grpS))
	as(t, alice, aliceG, "EPERM", "chown", p, "-1", uitoa(grpB))
	do(t, "0", "chown", p, uitoa(bob), uitoa(grpB))
	expect(t, "0 100600 10002 20002 0", fusetest.Do("stat", p), "after chown")

	// chown clears setuid and setgid (with group exec).
	do(t, "0", "chmod", p, "06755")
	do(t, "0", "chown", p, uitoa(alice), uitoa(grpA))
	if st := stat(t, p); st.Mode&0o6000 != 0 {
		t.Errorf("chown kept setuid/setgid: %o", st.Mode)
	}
	// A write by a non-root user clears them.
	do(t, "0", "chmod", p, "06777")
	as(t, bob, bobG, "0", "write", p, "data")
	if st := stat(t, p); st.Mode&0o7777 != 0o777 {
		t.Errorf("write by another user left mode %o, want 0777", st.Mode&0o7777)
	}
	// A non-owner outside the group loses setgid on chmod? (only root and
	// the owner may chmod); the owner outside the file's group loses it.
	do(t, "0", "chown", p, uitoa(alice), uitoa(grpB))
	as(t, alice, aliceG, "0", "chmod", p, "02755")
	if st := stat(t, p); st.Mode&0o2000 != 0 {
		t.Errorf("owner outside the group set setgid: %o", st.Mode)
	}

	// utimens: explicit times need ownership, "now" write permission.
	do(t, "0", "chown", p, uitoa(alice), uitoa(grpA))
	do(t, "0", "chmod", p, "0666")
	as(t, alice, aliceG, "0", "utimens", p, "1000", "2000")
	st := stat(t, p)
	if st.Atim.Sec != 1000 || st.Mtim.Sec != 2000 {
		t.Errorf("utimens: atime %d mtime %d", st.Atim.Sec, st.Mtim.Sec)
	}
	as(t, bob, bobG, "EPERM", "utimens", p, "1", "2")
	as(t, bob, bobG, "0", "utimens", p, "now", "now")
	st = stat(t, p)
	if time.Since(time.Unix(st.Mtim.Sec, 0)) > time.Minute {
		t.Errorf("utimens now: mtime %d", st.Mtim.Sec)
	}
	as(t, alice, aliceG, "0", "utimens", p, "omit", "3000")
	st2 := stat(t, p)
	if st2.Mtim.Sec != 3000 || st2.Atim != st.Atim {
		t.Errorf("utimens omit: atime %v (was %v), mtime %d", st2.Atim, st.Atim, st2.Mtim.Sec)
	}
	do(t, "0", "chmod", p, "0644")
	as(t, bob, bobG, "EACCES", "utimens", p, "now", "now")
}

func TestMknod(t *testing.T) {
	m := fusetest.NewBolt(t)
	os.Chmod(m.Dir, 0o777)
	do(t, "0", "mkfifo", m.Path("fifo"), "0644")
	do(t, "0", "mknod", m.Path("chr"), "c", "0644", "1", "3")
	do(t, "0", "mknod", m.Path("blk"), "b", "0600", "7", "0")
	do(t, "0", "mknod", m.Path("sock"), "s", "0600", "0", "0")
	for name, typ := range map[string]uint32{"fifo": syscall.S_IFIFO, "chr": syscall.S_IFCHR, "blk": syscall.S_IFBLK, "sock": syscall.S_IFSOCK} {
		if st := stat(t, m.Path(name)); st.Mode&syscall.S_IFMT != typ {
			t.Errorf("%s: mode %o", name, st.Mode)
		}
	}
	if st := stat(t, m.Path("chr")); unix.Major(st.Rdev) != 1 || unix.Minor(st.Rdev) != 3 {
		t.Errorf("chr: rdev %d:%d", unix.Major(st.Rdev), unix.Minor(st.Rdev))
	}
	do(t, "EEXIST", "mkfifo", m.Path("fifo"), "0644")
	as(t, alice, aliceG, "EPERM", "mknod", m.Path("chr2"), "c", "0644", "1", "3")
	as(t, alice, aliceG, "0", "mkfifo", m.Path("fifo2"), "0644")
}

func TestNamespace(t *testing.T) {
	m := fusetest.NewBolt(t)
	do(t, "0", "mkdir", m.Path("d"), "0755")
	do(t, "EEXIST", "mkdir", m.Path("d"), "0755")
	do(t, "0", "create", m.Path("d", "f"), "0644")
	do(t, "ENOTEMPTY", "rmdir", m.Path("d"))
	do(t, "ENOTDIR", "rmdir", m.Path("d", "f"))
	do(t, "EISDIR", "unlink", m.Path("d"))
	if st := stat(t, m.Path("d")); st.Nlink != 2 {
		t.Errorf("directory nlink %d", st.Nlink)
	}
	do(t, "0", "mkdir", m.Path("d", "sub"), "0755")
	if st := stat(t, m.Path("d")); st.Nlink != 3 {
		t.Errorf("directory nlink with a subdirectory %d", st.Nlink)
	}
	// Symlinks.
	do(t, "0", "symlink", "d/f", m.Path("l"))
	if tgt, err := os.Readlink(m.Path("l")); err != nil || tgt != "d/f" {
		t.Errorf("readlink %q %v", tgt, err)
	}
	do(t, "ELOOP", "open", m.Path("l"), "O_RDONLY,O_NOFOLLOW")
	do(t, "0", "open", m.Path("l"), "O_RDONLY")
	// Hard links.
	do(t, "0", "link", m.Path("d", "f"), m.Path("hard"))
	if st := stat(t, m.Path("hard")); st.Nlink != 2 {
		t.Errorf("nlink after link %d", st.Nlink)
	}
	do(t, "EPERM", "link", m.Path("d"), m.Path("dirlink"))
	do(t, "EEXIST", "link", m.Path("d", "f"), m.Path("l"))
	do(t, "0", "unlink", m.Path("hard"))
	if st := stat(t, m.Path("d", "f")); st.Nlink != 1 {
		t.Errorf("nlink after unlink %d", st.Nlink)
	}
	// Rename, over an open file that stays readable.
	mustWrite(t, m.Path("a"), []byte("A"))
	mustWrite(t, m.Path("b"), []byte("B"))
	fb, _ := os.Open(m.Path("b"))
	do(t, "0", "rename", m.Path("a"), m.Path("b"))
	expect(t, "A", string(mustRead(t, m.Path("b"))), "renamed")
	if b, _ := io.ReadAll(fb); string(b) != "B" {
		t.Errorf("replaced open file reads %q", b)
	}
	fb.Close()
	do(t, "ENOENT", "stat", m.Path("a"))
	do(t, "EINVAL", "rename", m.Path("d"), m.Path("d", "sub", "x"))
	do(t, "ENOTDIR", "rename", m.Path("d"), m.Path("b"))
	do(t, "EISDIR", "rename", m.Path("b"), m.Path("d"))
	do(t, "0", "mkdir", m.Path("e"), "0755")
	do(t, "ENOTEMPTY", "rename", m.Path("e"), m.Path("d"))
	do(t, "0", "rename", m.Path("d"), m.Path("e"))
	do(t, "0 40755 0 0 4096", "stat", m.Path("e", "sub"))
	// renameat2 flags.
	mustWrite(t, m.Path("x"), []byte("X"))
	mustWrite(t, m.Path("y"), []byte("Y"))
	do(t, "EEXIST", "renameat2", m.Path("x"), m.Path("y"), "noreplace")
	do(t, "0", "renameat2", m.Path("x"), m.Path("y"), "exchange")
	expect(t, "Y", string(mustRead(t, m.Path("x"))), "exchanged x")
	expect(t, "X", string(mustRead(t, m.Path("y"))), "exchanged y")
	do(t, "ENOENT", "renameat2", m.Path("x"), m.Path("zz"), "exchange")
	do(t, "0", "renameat2", m.Path("x"), m.Path("zz"), "noreplace")
}

func TestPermissions(t *testing.T) {
	m := fusetest.NewBolt(t)
	os.Chmod(m.Dir, 0o755)
	do(t, "0", "mkdir", m.Path("pub"), "0777")
	do(t, "0", "chmod", m.Path("pub"), "0777") // past our umask
	do(t, "0", "mkdir", m.Path("grp"), "0770")
	do(t, "0", "chmod", m.Path("grp"), "0770")
	do(t, "0", "chown", m.Path("grp"), "0", uitoa(grpS))
	do(t, "0", "mkdir", m.Path("priv"), "0700")

	// Directory write and search permission.
	as(t, alice, aliceG, "EACCES", "create", m.Path("f"), "0644")
	as(t, alice, aliceG, "EACCES", "create", m.Path("priv", "f"), "0644")
	as(t, alice, aliceG, "EACCES", "stat", m.Path("priv", "f"))
	as(t, alice, aliceG, "EACCES", "readdir", m.Path("priv"))
	// Supplementary groups count: alice is in grpS, bob is not.
	as(t, alice, aliceG, "0", "create", m.Path("grp", "f"), "0640")
	as(t, bob, bobG, "EACCES", "create", m.Path("grp", "g"), "0644")
	as(t, alice, aliceG, "0 f", "readdir", m.Path("grp"))

	// File permission bits for owner, group and others.
	as(t, alice, aliceG, "0", "create", m.Path("pub", "a"), "0640")
	as(t, alice, aliceG, "0", "write", m.Path("pub", "a"), "hi")
	as(t, alice, aliceG, "0 hi", "read", m.Path("pub", "a"))
	as(t, bob, bobG, "EACCES", "read", m.Path("pub", "a"))
	as(t, bob, bobG, "EACCES", "write", m.Path("pub", "a"), "x")
	do(t, "0", "chown", m.Path("pub", "a"), uitoa(alice), uitoa(grpB))
	as(t, bob, bobG, "0 hi", "read", m.Path("pub", "a"))
	as(t, bob, bobG, "EACCES", "write", m.Path("pub", "a"), "x")
	as(t, bob, bobG, "0", "access", m.Path("pub", "a"), "r")
	as(t, bob, bobG, "EACCES", "access", m.Path("pub", "a"), "w")
	as(t, alice, aliceG, "0", "access", m.Path("pub", "a"), "rw")
	as(t, alice, aliceG, "EACCES", "access", m.Path("pub", "a"), "x")

	// Sticky directory: only the owner of an entry (or of the directory)
	// removes or renames it.
	do(t, "0", "chmod", m.Path("pub"), "01777")
	as(t, bob, bobG, "EPERM", "unlink", m.Path("pub", "a"))
	as(t, bob, bobG, "EPERM", "rename", m.Path("pub", "a"), m.Path("pub", "b"))
	as(t, alice, aliceG, "0", "rename", m.Path("pub", "a"), m.Path("pub", "b"))
	as(t, alice, aliceG, "0", "unlink", m.Path("pub", "b"))

	// setgid directory: new entries take its group; subdirectories inherit
	// the bit.
	do(t, "0", "chmod", m.Path("grp"), "02770")
	as(t, alice, aliceG, "0", "mkdir", m.Path("grp", "sub"), "0755")
	expect(t, "0 42755 10001 20003 4096", fusetest.Do("stat", m.Path("grp", "sub")), "setgid dir")
	// umask of the caller applies (the child has umask 022 from us).
	as(t, alice, aliceG, "0", "create", m.Path("grp", "u"), "0666")
	if st := stat(t, m.Path("grp", "u")); st.Mode&0o777 != 0o666&^uint32(umask()) {
		t.Errorf("umask not applied: %o", st.Mode&0o777)
	}
}

func umask() int {
	u := syscall.Umask(0)
	syscall.Umask(u)
	return u
}

func TestReaddirStable(t *testing.T) {
	m := fusetest.NewBolt(t)
	d := m.Path("dir")
	os.Mkdir(d, 0o755)
	const n = 600
	name := func(i int) string { return "entry-with-a-fairly-long-name-" + uitoa(uint32(i)) }
	for i := 0; i < n; i++ {
		mustWrite(t, filepath.Join(d, name(i)), nil)
	}
	f, err := os.Open(d)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	seen := map[string]int{}
	first, err := f.ReadDir(50)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range first {
		seen[e.Name()]++
	}
	// Change the directory while it is being read: remove some entries
	// not yet returned, add new ones.
	removed := map[string]bool{}
	for i := 0; i < n; i += 7 {
		if seen[name(i)] == 0 {
			os.Remove(filepath.Join(d, name(i)))
			removed[name(i)] = true
		}
	}
	for i := n; i < n+100; i++ {
		mustWrite(t, filepath.Join(d, name(i)), nil)
	}
	for {
		es, err := f.ReadDir(37)
		for _, e := range es {
			seen[e.Name()]++
		}
		if err == io.EOF || len(es) == 0 {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	for k, c := range seen {
		if c > 1 {
			t.Errorf("%s listed %d times", k, c)
		}
	}
	for i := 0; i < n; i++ {
		if !removed[name(i)] && seen[name(i)] == 0 {
			t.Errorf("%s (present all along) was not listed", name(i))
		}
	}
	// rewinddir reads the directory again.
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		t.Fatal(err)
	}
	all, err := f.Readdirnames(-1)
	if err != nil {
		t.Fatal(err)
	}
	if want := n + 100 - len(removed); len(all) != want {
		t.Errorf("after rewind: %d entries, want %d", len(all), want)
	}
}

func TestXattr(t *testing.T) {
	m := fusetest.NewBolt(t)
	os.Chmod(m.Dir, 0o777)
	p := m.Path("f")
	as(t, alice, aliceG, "0", "create", p, "0644")
	as(t, alice, aliceG, "0", "setxattr", p, "user.k", "v1")
	as(t, alice, aliceG, "0 v1", "getxattr", p, "user.k")
	as(t, bob, bobG, "0 v1", "getxattr", p, "user.k")
	as(t, bob, bobG, "EACCES", "setxattr", p, "user.k", "v2")
	as(t, alice, aliceG, "ENODATA", "getxattr", p, "user.none")
	as(t, alice, aliceG, "EPERM", "setxattr", p, "trusted.k", "v")
	do(t, "0", "setxattr", p, "trusted.k", "t")
	if err := unix.Setxattr(p, "user.k", []byte("x"), unix.XATTR_CREATE); err != unix.EEXIST {
		t.Errorf("XATTR_CREATE on an existing name: %v", err)
	}
	if err := unix.Setxattr(p, "user.new", []byte("x"), unix.XATTR_REPLACE); err != unix.ENODATA {
		t.Errorf("XATTR_REPLACE on a missing name: %v", err)
	}
	buf := make([]byte, 256)
	n, err := unix.Listxattr(p, buf)
	if err != nil {
		t.Fatal(err)
	}
	expect(t, "trusted.k\x00user.k\x00", string(buf[:n]), "listxattr")
	if _, err := unix.Getxattr(p, "user.k", make([]byte, 1)); err != unix.ERANGE {
		t.Errorf("small buffer: %v", err)
	}
	if err := unix.Removexattr(p, "user.k"); err != nil {
		t.Fatal(err)
	}
	if err := unix.Removexattr(p, "user.k"); err != unix.ENODATA {
		t.Errorf("remove missing: %v", err)
	}
}

func TestLocks(t *testing.T) {
	m := fusetest.NewBolt(t)
	p := m.Path("lock")
	mustWrite(t, p, []byte("x"))
	os.Chmod(p, 0o666)

	// flock: exclusive against another process until the holder closes.
	f, _ := os.OpenFile(p, os.O_RDWR, 0)
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		t.Fatal(err)
	}
	as(t, 0, []uint32{0}, "EAGAIN", "flock", p)
	f.Close()
	as(t, 0, []uint32{0}, "0", "flock", p)

	// POSIX locks: conflict across processes, shown by F_GETLK, released
	// when the owner closes any descriptor of the file.
	f, _ = os.OpenFile(p, os.O_RDWR, 0)
	lk := syscall.Flock_t{Type: syscall.F_WRLCK}
	if err := syscall.FcntlFlock(f.Fd(), syscall.F_SETLK, &lk); err != nil {
		t.Fatal(err)
	}
	as(t, 0, []uint32{0}, "EAGAIN", "setlk", p, "r")
	as(t, 0, []uint32{0}, "0 w", "getlk", p, "r")
	// The same process may take another lock through another descriptor
	// (POSIX locks belong to the process), as on ext4.
	f2, _ := os.OpenFile(p, os.O_RDWR, 0)
	rlk := syscall.Flock_t{Type: syscall.F_RDLCK}
	if err := syscall.FcntlFlock(f2.Fd(), syscall.F_SETLK, &rlk); err != nil {
		t.Errorf("second lock of the same process: %v", err)
	}
	f2.Close() // drops every lock of this process on the file
	as(t, 0, []uint32{0}, "0 u", "getlk", p, "w")
	as(t, 0, []uint32{0}, "0", "setlk", p, "w")
	f.Close()

	// A blocking lock waits for the holder.
	f, _ = os.OpenFile(p, os.O_RDWR, 0)
	defer f.Close()
	fd := f.Fd()
	if err := syscall.FcntlFlock(fd, syscall.F_SETLK, &syscall.Flock_t{Type: syscall.F_WRLCK}); err != nil {
		t.Fatal(err)
	}
	unlocked := make(chan error, 1)
	go func() {
		time.Sleep(500 * time.Millisecond)
		unlocked <- syscall.FcntlFlock(fd, syscall.F_SETLK, &syscall.Flock_t{Type: syscall.F_UNLCK})
	}()
	start := time.Now()
	out := fusetest.As(t, 0, []uint32{0}, "setlkw", p, "w")
	if err := <-unlocked; err != nil {
		t.Errorf("unlock: %v", err)
	}
	if out != "0" || time.Since(start) < 400*time.Millisecond {
		t.Errorf("blocking lock: %q after %v", out, time.Since(start))
	}
}

func TestFallocateCopyStatfs(t *testing.T) {
	m := fusetest.NewBolt(t)
	p := m.Path("f")
	mustWrite(t, p, bytes.Repeat([]byte{'a'}, 10000))
	f, err := os.OpenFile(p, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	fd := int(f.Fd())
	if err := unix.Fallocate(fd, 0, 0, 20000); err != nil {
		t.Fatal(err)
	}
	if st := stat(t, p); st.Size != 20000 {
		t.Errorf("fallocate mode 0: size %d", st.Size)
	}
	if err := unix.Fallocate(fd, unix.FALLOC_FL_KEEP_SIZE, 0, 50000); err != nil {
		t.Fatal(err)
	}
	if st := stat(t, p); st.Size != 20000 {
		t.Errorf("fallocate keep size: size %d", st.Size)
	}
	if err := unix.Fallocate(fd, unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, 100, 200); err != nil {
		t.Fatal(err)
	}
	b := mustRead(t, p)
	want := append(bytes.Repeat([]byte{'a'}, 10000), make([]byte, 10000)...)
	clear(want[100:300])
	if !bytes.Equal(b, want) {
		t.Errorf("after punching a hole the content differs")
	}
	if err := unix.Fallocate(fd, unix.FALLOC_FL_COLLAPSE_RANGE, 0, 4096); err != unix.EOPNOTSUPP {
		t.Errorf("collapse range: %v, want EOPNOTSUPP", err)
	}

	// copy_file_range.
	src := m.Path("src")
	data := bytes.Repeat([]byte("copy me "), 300000)
	mustWrite(t, src, data)
	in, _ := os.Open(src)
	defer in.Close()
	out, _ := os.Create(m.Path("dst"))
	offIn, offOut := int64(8), int64(0)
	n, err := unix.CopyFileRange(int(in.Fd()), &offIn, int(out.Fd()), &offOut, len(data), 0)
	if err != nil {
		t.Fatal(err)
	}
	for n < len(data)-8 {
		k, err := unix.CopyFileRange(int(in.Fd()), &offIn, int(out.Fd()), &offOut, len(data), 0)
		if err != nil || k == 0 {
			t.Fatalf("copy_file_range: %v after %d", err, n)
		}
		n += k
	}
	out.Close()
	if !bytes.Equal(mustRead(t, m.Path("dst")), data[8:]) {
		t.Errorf("copied content differs")
	}

	var sfs unix.Statfs_t
	if err := unix.Statfs(m.Dir, &sfs); err != nil {
		t.Fatal(err)
	}
	if sfs.Bsize != 4096 || sfs.Blocks == 0 || sfs.Bfree > sfs.Blocks || sfs.Files == 0 || sfs.Namelen != 255 {
		t.Errorf("statfs: %+v", sfs)
	}
}

func TestSubdirAndReadOnly(t *testing.T) {
	m := fusetest.NewBolt(t)
	os.MkdirAll(m.Path("a", "b"), 0o755)
	mustWrite(t, m.Path("a", "b", "in"), []byte("inside"))
	mustWrite(t, m.Path("a", "out"), []byte("outside"))
	cfg := m.Config
	m.Unmount()

	cfg.VFS.Subdir = "a/b"
	cfg.Dir = ""
	s := fusetest.Start(t, cfg)
	expect(t, "inside", string(mustRead(t, s.Path("in"))), "subdir file")
	// The kernel resolves ".." of the mount's root itself; a lookup that
	// reaches skiff (NFS-style) stays at the root.
	ino, _, err := s.VFS.Lookup(context.Background(), meta.RootCaller(), vfs.RootIno, "..")
	if err != nil || ino != vfs.RootIno {
		t.Errorf("lookup .. of the sub-directory root: %d, %v", ino, err)
	}
	fh, err := s.VFS.OpenDir(context.Background(), meta.RootCaller(), vfs.RootIno)
	if err != nil {
		t.Fatal(err)
	}
	es, err := s.VFS.ReadDir(context.Background(), fh, 0, true)
	s.VFS.ReleaseDir(fh)
	if err != nil || len(es) < 2 || es[1].Name != ".." || es[1].Ino != vfs.RootIno {
		t.Errorf("readdir of the sub-directory root: %+v, %v", es, err)
	}
	f, _ := os.Open(s.Dir)
	names, _ := f.Readdirnames(-1)
	f.Close()
	expect(t, "in", strings.Join(names, ","), "subdir listing")
	mustWrite(t, s.Path("new"), []byte("n"))
	s.Unmount()

	cfg.VFS.Subdir = "a/missing"
	if _, err := startErr(t, cfg); err == nil || !strings.Contains(err.Error(), "does not exist") {
		t.Errorf("missing sub-directory: %v", err)
	}

	cfg.VFS.Subdir = ""
	cfg.VFS.ReadOnly = true
	r := fusetest.Start(t, cfg)
	expect(t, "n", string(mustRead(t, r.Path("a", "b", "new"))), "read-only read")
	do(t, "EROFS", "create", r.Path("x"), "0644")
	do(t, "EROFS", "open", r.Path("a", "out"), "O_WRONLY")
	do(t, "EROFS", "mkdir", r.Path("d"), "0755")
	do(t, "EROFS", "unlink", r.Path("a", "out"))
	do(t, "EROFS", "chmod", r.Path("a", "out"), "0600")
	do(t, "EROFS", "setxattr", r.Path("a", "out"), "user.x", "y")
}

// startErr mounts like fusetest.Start but returns the vfs error.
func startErr(t *testing.T, cfg fusetest.Config) (*fusetest.Mount, error) {
	return fusetest.TryStart(t, cfg)
}

func TestMountErrors(t *testing.T) {
	m := fusetest.NewBolt(t)
	try := func(dir string) error {
		srv, err := fuse.Mount(m.VFS, dir, fuse.Options{})
		if err == nil {
			srv.Unmount()
		}
		return err
	}
	if err := try(m.Dir); err == nil || !strings.Contains(err.Error(), "already a mount point") {
		t.Errorf("mount on a mounted directory: %v", err)
	}
	full := t.TempDir()
	mustWrite(t, filepath.Join(full, "file"), nil)
	if err := try(full); err == nil || !strings.Contains(err.Error(), "not empty") {
		t.Errorf("mount on a non-empty directory: %v", err)
	}
	if err := try(filepath.Join(t.TempDir(), "missing")); err == nil || !strings.Contains(err.Error(), "does not exist") {
		t.Errorf("mount on a missing directory: %v", err)
	}
	if err := try(filepath.Join(full, "file")); err == nil || !strings.Contains(err.Error(), "not a directory") {
		t.Errorf("mount on a file: %v", err)
	}
	if err := fuse.Unmount(full, false); err == nil || !strings.Contains(err.Error(), "not a mount point") {
		t.Errorf("unmount of a plain directory: %v", err)
	}
}

func TestRedisVolume(t *testing.T) {
	m := fusetest.NewRedis(t)
	mustWrite(t, m.Path("f"), []byte("on redis"))
	do(t, "0", "mkdir", m.Path("d"), "0755")
	do(t, "0", "rename", m.Path("f"), m.Path("d", "g"))
	expect(t, "on redis", string(mustRead(t, m.Path("d", "g"))), "redis read")
	do(t, "0 g", "readdir", m.Path("d"))

	// A second client of the same volume sees the file, and a change made
	// by the first once it is closed and the attribute timeout passed.
	cfg := m.Config
	cfg.Dir = ""
	m2 := fusetest.Start(t, cfg)
	expect(t, "on redis", string(mustRead(t, m2.Path("d", "g"))), "second client")
	f2, _ := os.Open(m2.Path("d", "g"))
	defer f2.Close()
	mustWrite(t, m.Path("d", "g"), []byte("changed by the first client"))
	deadline := time.Now().Add(10 * time.Second)
	for {
		b, _ := io.ReadAll(io.NewSectionReader(f2, 0, 1<<20))
		if string(b) == "changed by the first client" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("second client still reads %q", b)
		}
		time.Sleep(100 * time.Millisecond)
	}
	// Locks are shared by the clients.
	f, _ := os.OpenFile(m.Path("d", "g"), os.O_RDWR, 0)
	defer f.Close()
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		t.Fatal(err)
	}
	g, _ := os.OpenFile(m2.Path("d", "g"), os.O_RDWR, 0)
	defer g.Close()
	if err := syscall.Flock(int(g.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != syscall.EWOULDBLOCK {
		t.Errorf("flock held by the other client: %v, want EWOULDBLOCK", err)
	}
}
