package fuse_test

import (
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/skiff-fs/skiff/fsclient/fuse/fusetest"
	"github.com/skiff-fs/skiff/fsclient/vfs"
	"github.com/skiff-fs/skiff/internal/testredis"
)

// longCaches keeps entries in the kernel for a minute, so that a check
// skiff made at lookup cannot stand in for one on each access: the
// kernel walks its cached entries without asking skiff.
var longCaches = vfs.Config{EntryTimeout: time.Minute, DirEntryTimeout: time.Minute}

func asOK(t *testing.T, uid uint32, gids []uint32, want string, op string, args ...string) {
	t.Helper()
	got := fusetest.As(t, uid, gids, op, args...)
	if got != want && !strings.HasPrefix(got, want+" ") {
		t.Errorf("uid %d %s %v: got %q, want %q", uid, op, args, got, want)
	}
}

func mustDo(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// TestPermFIFOOpen: the kernel opens a FIFO without asking the file
// system, so only a permission check in the kernel stops it.
func TestPermFIFOOpen(t *testing.T) {
	m := fusetest.Start(t, fusetest.Config{VFS: longCaches})
	p := m.Path("fifo")
	mustDo(t, syscall.Mkfifo(p, 0o600))
	mustDo(t, os.Chmod(p, 0o600))
	asOK(t, bob, bobG, "EACCES", "open", p, "O_RDONLY,O_NONBLOCK")
	asOK(t, bob, bobG, "EACCES", "open", p, "O_WRONLY,O_NONBLOCK")
	// The group may read it once the mode says so.
	mustDo(t, os.Chown(p, 0, grpS))
	mustDo(t, os.Chmod(p, 0o640))
	asOK(t, alice, aliceG, "0", "open", p, "O_RDONLY,O_NONBLOCK")
	asOK(t, bob, bobG, "EACCES", "open", p, "O_RDONLY,O_NONBLOCK")
}

// TestPermSearchAfterChmod: a user walks a path, its owner closes the
// directory, and every operation through the path is denied at once,
// although the kernel still holds the entries.
func TestPermSearchAfterChmod(t *testing.T) {
	m := fusetest.Start(t, fusetest.Config{VFS: longCaches})
	d := m.Path("d")
	f := m.Path("d", "f")
	mustDo(t, os.Chmod(m.Path(), 0o777))
	mustDo(t, os.Mkdir(d, 0o755))
	mustDo(t, os.WriteFile(f, []byte("data"), 0o666))
	mustDo(t, os.Chmod(f, 0o666))
	mustDo(t, os.Chown(d, bob, grpB))
	mustDo(t, os.Chown(f, alice, grpA))
	// alice walks d: the kernel now caches d and d/f.
	asOK(t, alice, aliceG, "0", "stat", f)
	asOK(t, alice, aliceG, "0", "read", f)
	// bob, the owner of d, closes it.
	asOK(t, bob, bobG, "0", "chmod", d, "0700")
	for _, op := range [][]string{
		{"stat", f},
		{"open", f, "O_RDONLY"},
		{"read", f},
		{"chmod", f, "0644"},
		{"chown", f, "10001", "20001"},
		{"truncate", f, "1"},
		{"ftruncate", f, "1"},
		{"link", f, m.Path("f-link")},
		{"unlink", f},
		{"rename", f, m.Path("moved")},
		{"utimens", f, "now", "now"},
		{"readdir", d},
	} {
		asOK(t, alice, aliceG, "EACCES", op[0], op[1:]...)
	}
	got, err := os.ReadFile(f)
	if err != nil || string(got) != "data" {
		t.Errorf("d/f after the denied operations: %q, %v", got, err)
	}
}

// TestPermSticky: in a sticky directory only the owner of an entry (or
// of the directory, or root) removes or renames it.
func TestPermSticky(t *testing.T) {
	m := fusetest.Start(t, fusetest.Config{VFS: longCaches})
	tmp := m.Path("tmp")
	mustDo(t, os.Mkdir(tmp, 0o777))
	mustDo(t, syscall.Chmod(tmp, 0o1777))
	af := m.Path("tmp", "alice")
	asOK(t, alice, aliceG, "0", "create", af, "0666")
	asOK(t, bob, bobG, "0", "stat", af)
	asOK(t, bob, bobG, "EPERM", "unlink", af)
	asOK(t, bob, bobG, "EPERM", "rename", af, m.Path("tmp", "bob"))
	asOK(t, bob, bobG, "0", "create", m.Path("tmp", "bobs"), "0666")
	asOK(t, bob, bobG, "EPERM", "rename", m.Path("tmp", "bobs"), af) // replaces alice's
	asOK(t, alice, aliceG, "0", "rename", af, m.Path("tmp", "alice2"))
	asOK(t, alice, aliceG, "0", "unlink", m.Path("tmp", "alice2"))
}

// TestPermGroups: supplementary groups grant access; the setgid bit of
// a directory passes its group on.
func TestPermGroups(t *testing.T) {
	m := fusetest.Start(t, fusetest.Config{VFS: longCaches})
	mustDo(t, os.Chmod(m.Path(), 0o755))
	shared := m.Path("shared")
	mustDo(t, os.Mkdir(shared, 0o770))
	mustDo(t, os.Chown(shared, 0, grpS))
	mustDo(t, syscall.Chmod(shared, 0o2770))
	asOK(t, alice, aliceG, "0", "readdir", shared)
	asOK(t, bob, bobG, "EACCES", "readdir", shared)
	asOK(t, bob, bobG, "EACCES", "create", m.Path("shared", "b"), "0644")
	asOK(t, alice, aliceG, "0", "create", m.Path("shared", "a"), "0640")
	asOK(t, alice, aliceG, "0", "mkdir", m.Path("shared", "sub"), "0750")
	for p, want := range map[string]string{"a": "100640 10001 20003", "sub": "42750 10001 20003"} {
		asOK(t, alice, aliceG, "0 "+want, "stat", m.Path("shared", p))
	}
	// alice is no member of bob's group: her chmod g+s drops the bit.
	mine := m.Path("shared", "mine")
	asOK(t, alice, aliceG, "0", "create", mine, "0644")
	asOK(t, alice, aliceG, "EPERM", "chown", mine, "-1", "20002")
	asOK(t, alice, aliceG, "0", "chown", mine, "-1", "20001")
	mustDo(t, os.Chown(mine, alice, grpB))
	asOK(t, alice, aliceG, "0", "chmod", mine, "02755")
	asOK(t, alice, aliceG, "0 100755 10001 20002", "stat", mine)
}

// TestPermOtherClient: a second client of the volume closes a directory
// and the first denies a user who walked it before, within the
// attribute timeout, although it keeps the entries for a minute.
func TestPermOtherClient(t *testing.T) {
	srv := testredis.Start(t)
	a := fusetest.Start(t, fusetest.Config{MetaURL: srv.URL(), VFS: longCaches})
	b := fusetest.Start(t, fusetest.Config{MetaURL: srv.URL(), Existing: true})
	mustDo(t, os.Mkdir(a.Path("d"), 0o755))
	mustDo(t, os.Chmod(a.Path("d"), 0o755))
	mustDo(t, os.WriteFile(a.Path("d", "f"), []byte("x"), 0o644))
	mustDo(t, os.Chmod(a.Path("d", "f"), 0o644))
	asOK(t, bob, bobG, "0", "stat", a.Path("d", "f"))
	mustDo(t, os.Chmod(b.Path("d"), 0o700))
	start := time.Now()
	limit := a.VFS.AttrTimeout() + time.Second
	for {
		got := fusetest.As(t, bob, bobG, "read", a.Path("d", "f"))
		if got == "EACCES" {
			t.Logf("denied %v after the other client's chmod", time.Since(start).Round(time.Millisecond))
			break
		}
		if time.Since(start) > limit {
			t.Fatalf("%v after the other client's chmod 0700, bob still reads d/f: %q", time.Since(start).Round(time.Millisecond), got)
		}
		time.Sleep(100 * time.Millisecond)
	}
	// And back: opened again, bob reads once more.
	mustDo(t, os.Chmod(b.Path("d"), 0o755))
	time.Sleep(limit)
	asOK(t, bob, bobG, "0 x", "read", a.Path("d", "f"))
}
