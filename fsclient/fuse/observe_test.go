package fuse_test

import (
	"errors"
	"os"
	"slices"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/skiff-fs/skiff/fsclient/fuse"
	"github.com/skiff-fs/skiff/fsclient/fuse/fusetest"
)

// opLog records what an OpObserver is told.
type opLog struct {
	mu  sync.Mutex
	ops []observedOp
}

type observedOp struct {
	op    string
	d     time.Duration
	errno syscall.Errno
}

func (l *opLog) ObserveOp(op string, d time.Duration, errno syscall.Errno) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.ops = append(l.ops, observedOp{op, d, errno})
}

// waitFor waits up to 10s until op was observed: the kernel sends some
// operations (release) in the background after the call that causes
// them returned.
func (l *opLog) waitFor(op string) {
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		l.mu.Lock()
		found := slices.ContainsFunc(l.ops, func(o observedOp) bool { return o.op == op })
		l.mu.Unlock()
		if found {
			return
		}
	}
}

func (l *opLog) take() []observedOp {
	l.mu.Lock()
	defer l.mu.Unlock()
	ops := l.ops
	l.ops = nil
	return ops
}

// TestObserver checks that Options.Observer hears of the operations of a
// real mount under their names, with their errnos.
func TestObserver(t *testing.T) {
	var log opLog
	m := fusetest.Start(t, fusetest.Config{Mount: fuse.Options{Observer: &log}})

	data := []byte("hello, observer")
	if err := os.WriteFile(m.Path("f"), data, 0o644); err != nil {
		t.Fatal(err)
	}
	// Drop the page cache of the file so the read reaches skiff.
	f, err := os.Open(m.Path("f"))
	if err != nil {
		t.Fatal(err)
	}
	if err := unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_DONTNEED); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 100)
	n, err := f.ReadAt(buf, 0)
	if n != len(data) {
		t.Fatalf("read %d bytes (%v), want %d", n, err, len(data))
	}
	f.Close()
	if _, err := os.Stat(m.Path("missing")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("stat of a missing file: %v, want ENOENT", err)
	}
	if err := os.Mkdir(m.Path("d"), 0o755); err != nil {
		t.Fatal(err)
	}
	if _, err := os.ReadDir(m.Path("d")); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(m.Path("f")); err != nil {
		t.Fatal(err)
	}

	log.waitFor("release")
	log.waitFor("releasedir")
	ops := log.take()
	seen := map[string]int{}
	enoentLookup := false
	for _, o := range ops {
		seen[o.op]++
		if !slices.Contains(fuse.Ops, o.op) {
			t.Errorf("observed operation %q is not listed in fuse.Ops", o.op)
		}
		if o.d < 0 || o.d > time.Hour {
			t.Errorf("%s took %v, which is not a duration an operation takes", o.op, o.d)
		}
		if o.op == "lookup" && o.errno == syscall.ENOENT {
			enoentLookup = true
		}
		if o.errno != 0 && o.errno != syscall.ENOENT && o.errno != syscall.ENOSYS && o.errno != syscall.ENODATA {
			t.Errorf("%s reported errno %v; none of the operations here fails so", o.op, o.errno)
		}
	}
	for _, op := range []string{"lookup", "getattr", "create", "write", "flush", "release", "open", "read", "mkdir", "opendir", "releasedir", "unlink"} {
		if seen[op] == 0 {
			t.Errorf("no %q operation observed; observed %v", op, seen)
		}
	}
	if seen["readdir"]+seen["readdirplus"] == 0 {
		t.Errorf("no readdir or readdirplus operation observed; observed %v", seen)
	}
	t.Logf("observed: %v", seen)
	if !enoentLookup {
		t.Errorf("the lookup of a missing name was not reported with ENOENT; observed %v", ops)
	}
}
