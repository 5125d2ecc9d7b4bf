package fuse_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/skiff-fs/skiff/fsclient/fuse"
	"github.com/skiff-fs/skiff/fsclient/meta"
	"github.com/skiff-fs/skiff/fsclient/vfs"
	"github.com/skiff-fs/skiff/fsclient/volume"
)

// TestServeConnObserved serves a connection this test mounted itself
// (mount(2) of a /dev/fuse descriptor, as a supervisor does): the
// observer of ConnOptions hears of the operations, and SetReadAhead sets
// the window of the mount once ServeConn has answered INIT.
func TestServeConnObserved(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	metaURL := "bolt://" + filepath.Join(dir, "meta.db")
	if _, err := volume.Create(ctx, volume.FormatConfig{MetaURL: metaURL, Name: "conn", Bucket: "file://" + filepath.Join(dir, "blocks")}); err != nil {
		t.Fatal(err)
	}
	v, err := volume.Open(ctx, volume.Config{MetaURL: metaURL})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { v.Close(ctx) })
	if err := v.Meta.NewSession(ctx, meta.SessionInfo{Version: "test", PID: os.Getpid()}); err != nil {
		t.Fatal(err)
	}
	fs, err := vfs.New(v, vfs.Config{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { fs.Close(ctx) })

	mnt := filepath.Join(dir, "mnt")
	if err := os.Mkdir(mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	fd, err := unix.Open("/dev/fuse", unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	dev := os.NewFile(uintptr(fd), "/dev/fuse")
	t.Cleanup(func() { dev.Close() })
	opts := fmt.Sprintf("fd=%d,rootmode=40000,user_id=0,group_id=0,max_read=%d", fd, 1<<20)
	if err := unix.Mount("skiff:conn", mnt, "fuse.skiff", unix.MS_NOSUID|unix.MS_NODEV, opts); err != nil {
		t.Fatal(err)
	}
	// Touch nothing under mnt before INIT is answered: the kernel holds
	// every request until then.
	conn := connectionOf(t, mnt)
	abort := func() { os.WriteFile("/sys/fs/fuse/connections/"+conn+"/abort", []byte("1"), 0) }
	var log opLog
	type served struct {
		srv *fuse.ConnServer
		err error
	}
	ch := make(chan served, 1)
	go func() {
		srv, err := fuse.ServeConn(fs, dev, fuse.ConnOptions{Options: fuse.Options{Observer: &log}})
		ch <- served{srv, err}
	}()
	var srv *fuse.ConnServer
	select {
	case r := <-ch:
		if r.err != nil {
			abort()
			unix.Unmount(mnt, unix.MNT_DETACH)
			t.Fatal(r.err)
		}
		srv = r.srv
	case <-time.After(10 * time.Second):
		abort()
		unix.Unmount(mnt, unix.MNT_DETACH)
		t.Fatal("ServeConn did not answer INIT within 10s")
	}
	t.Cleanup(func() {
		if err := unix.Unmount(mnt, 0); err != nil {
			t.Errorf("unmount %s: %v; detaching", mnt, err)
			unix.Unmount(mnt, unix.MNT_DETACH)
		}
		select {
		case <-srv.Done():
		case <-time.After(10 * time.Second):
			t.Errorf("the server did not stop within 10s of the unmount; aborting the connection")
			abort()
		}
	})

	// This process serves the mount and uses it: before Go's runtime
	// registers a file of the mount with epoll (os.Open does), the kernel
	// must have learnt that POLL is not supported, or epoll_ctl waits for
	// a POLL answer that may need the thread it blocks (DisablePoll).
	if err := fuse.DisablePoll(mnt); err != nil {
		t.Fatal(err)
	}

	if err := fuse.SetReadAhead(mnt, 2<<20); err != nil {
		t.Fatal(err)
	}
	if ra, err := fuse.ReadAhead(mnt); err != nil || ra != 2<<20 {
		t.Errorf("read-ahead after SetReadAhead(2 MiB): %d, %v", ra, err)
	}

	if err := os.WriteFile(filepath.Join(mnt, "f"), []byte("served on a connection"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(mnt, "missing")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("stat of a missing file: %v, want ENOENT", err)
	}
	log.waitFor("release")
	seen := map[string]int{}
	enoent := false
	for _, o := range log.take() {
		seen[o.op]++
		if o.op == "lookup" && o.errno == syscall.ENOENT {
			enoent = true
		}
	}
	for _, op := range []string{"lookup", "create", "write", "flush", "release"} {
		if seen[op] == 0 {
			t.Errorf("no %q operation observed on the connection; observed %v", op, seen)
		}
	}
	if !enoent {
		t.Errorf("the lookup of a missing name was not reported with ENOENT; observed %v", seen)
	}
	if s := fmt.Sprint(seen); strings.Contains(s, "init") {
		t.Errorf("INIT reported as an operation: %v", seen)
	}
}

// connectionOf is the fusectl connection number (the device minor) of
// the FUSE mount at dir, from mountinfo (a stat could block).
func connectionOf(t *testing.T, dir string) string {
	t.Helper()
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) > 4 && f[4] == dir {
			if _, minor, ok := strings.Cut(f[2], ":"); ok {
				return minor
			}
		}
	}
	t.Fatalf("%s is not in mountinfo", dir)
	return ""
}
