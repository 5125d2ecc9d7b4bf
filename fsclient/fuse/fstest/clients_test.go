package fstest

import (
	"bytes"
	"os"
	"syscall"
	"testing"
	"time"

	"github.com/skiff-fs/skiff/fsclient/fuse/fusetest"
	"github.com/skiff-fs/skiff/internal/testredis"
)

// eventually polls check until it returns "" or the deadline passes; it
// never asserts how fast a change arrives.
func eventually(t *testing.T, what string, check func() string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		msg := check()
		if msg == "" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: still after 10s:\n%s", what, msg)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// sameTrees polls until the trees under a and b are equal, contents
// included.
func sameTrees(t *testing.T, what, a, b string) {
	t.Helper()
	eventually(t, what, func() string {
		ta, err := scan(a)
		if err != nil {
			return err.Error()
		}
		tb, err := scan(b)
		if err != nil {
			return err.Error()
		}
		if d := diffTrees(ta, tb); d != "" {
			return d
		}
		for _, p := range ta.paths() {
			if ta[p].Type == "file" {
				d, err := sameData(a+"/"+p, b+"/"+p)
				if err != nil {
					return err.Error()
				}
				if d != "" {
					return p + ": " + d
				}
			}
		}
		return ""
	})
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// TestTwoClients mounts one Redis volume twice (two clients with their
// own sessions and caches) and checks that each sees the other's
// changes once the attribute and entry timeouts have passed: creates,
// writes after close, renames, unlinks, mkdir, rmdir, hard links, symlinks
// and chmod; and that a file written on one is read byte-exact on the
// other, also after it is overwritten.
func TestTwoClients(t *testing.T) {
	srv := testredis.Start(t)
	a := fusetest.Start(t, fusetest.Config{MetaURL: srv.URL()})
	b := fusetest.Start(t, fusetest.Config{MetaURL: srv.URL(), Existing: true})
	A, B := a.Path(), b.Path()
	sameTrees(t, "empty volume", A, B)

	// Creates on A.
	must(t, os.WriteFile(A+"/f", []byte("from A"), 0o644))
	must(t, os.Mkdir(A+"/d", 0o755))
	must(t, os.Mkdir(A+"/d/sub", 0o700))
	must(t, os.WriteFile(A+"/d/g", bytes.Repeat([]byte("g"), 300<<10), 0o600))
	must(t, os.Symlink("../f", A+"/d/sym"))
	must(t, os.Link(A+"/f", A+"/d/f-link"))
	must(t, syscall.Mkfifo(A+"/fifo", 0o640))
	sameTrees(t, "B sees A's creates", A, B)

	// A file written and closed on A reads byte-exact on B, across
	// blocks.
	big := make([]byte, 9<<20+12345)
	fill(big, 0, 42)
	must(t, os.WriteFile(A+"/big", big, 0o644))
	eventually(t, "B reads A's big file", func() string {
		got, err := os.ReadFile(B + "/big")
		if err != nil {
			return err.Error()
		}
		return equalBytes(big, got)
	})

	// Changes on A: rename (file, over an existing file, directory),
	// unlink, rmdir, chmod, overwrite, extend, truncate.
	must(t, os.Rename(A+"/d/g", A+"/g"))
	must(t, os.WriteFile(A+"/victim", []byte("v"), 0o644))
	sameTrees(t, "B sees victim", A, B)
	must(t, os.Rename(A+"/g", A+"/victim"))
	must(t, os.Rename(A+"/d", A+"/dir"))
	must(t, os.Remove(A+"/dir/f-link"))
	must(t, os.Remove(A+"/dir/sub"))
	must(t, os.Chmod(A+"/f", 0o604))
	must(t, os.Chmod(A+"/dir", 0o711))
	must(t, os.WriteFile(A+"/f", []byte("rewritten by A, longer"), 0o644))
	must(t, os.Truncate(A+"/victim", 1000))
	sameTrees(t, "B sees A's renames, unlinks, rmdir, chmod, writes", A, B)

	// Overwrite the middle of the big file on A: B reads the new data
	// (never anything but the old or the new bytes).
	f, err := os.OpenFile(A+"/big", os.O_WRONLY, 0)
	must(t, err)
	patch := make([]byte, 5<<20)
	fill(patch, 2<<20, 43)
	_, err = f.WriteAt(patch, 2<<20)
	must(t, err)
	must(t, f.Close())
	old := append([]byte(nil), big...)
	copy(big[2<<20:], patch)
	eventually(t, "B reads A's overwrite", func() string {
		got, err := os.ReadFile(B + "/big")
		if err != nil {
			return err.Error()
		}
		if !bytes.Equal(got, big) && !bytes.Equal(got, old) {
			t.Fatalf("B reads neither the old nor the new contents: %s from the new", equalBytes(big, got))
		}
		return equalBytes(big, got)
	})

	// And the other way: changes on B seen by A.
	must(t, os.WriteFile(B+"/fromB", []byte("from B"), 0o644))
	must(t, os.Mkdir(B+"/dirB", 0o755))
	must(t, os.Rename(B+"/f", B+"/dirB/f"))
	must(t, os.Link(B+"/dirB/f", B+"/dirB/f2"))
	must(t, os.Remove(B+"/victim"))
	must(t, os.Remove(B+"/fifo"))
	must(t, os.Remove(B+"/dir/sym"))
	must(t, os.Chmod(B+"/big", 0o640))
	sameTrees(t, "A sees B's changes", B, A)
	must(t, os.Rename(B+"/dirB/f2", B+"/dir/f2"))
	must(t, os.Remove(B+"/dir/f2"))
	must(t, os.Remove(B+"/dir"))
	sameTrees(t, "A sees B's rmdir", B, A)

	// A reads what B wrote in an existing file A has open.
	fa, err := os.Open(A + "/fromB")
	must(t, err)
	defer fa.Close()
	must(t, os.WriteFile(B+"/fromB", []byte("from B, second version"), 0o644))
	eventually(t, "A's open file shows B's write", func() string {
		buf := make([]byte, 100)
		n, _ := fa.ReadAt(buf, 0)
		return equalBytes([]byte("from B, second version"), buf[:n])
	})
}
