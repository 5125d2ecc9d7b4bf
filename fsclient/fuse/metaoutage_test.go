package fuse_test

import (
	"bytes"
	"errors"
	"os"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/skiff-fs/skiff/fsclient/fuse/fusetest"
	"github.com/skiff-fs/skiff/fsclient/meta"
	"github.com/skiff-fs/skiff/internal/testredis"
)

// TestXattrCapMount: the second 64 KiB xattr on one inode goes past
// meta.MaxXattrBytes and gets ENOSPC; removing the first makes room.
func TestXattrCapMount(t *testing.T) {
	m := fusetest.NewBolt(t)
	p := m.Path("f")
	if err := os.WriteFile(p, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	v := bytes.Repeat([]byte("x"), 64<<10)
	if err := unix.Setxattr(p, "user.a", v, 0); err != nil {
		t.Fatalf("first 64 KiB xattr: %v", err)
	}
	if err := unix.Setxattr(p, "user.b", v, 0); err != unix.ENOSPC {
		t.Fatalf("second 64 KiB xattr: %v, want ENOSPC", err)
	}
	if err := unix.Removexattr(p, "user.a"); err != nil {
		t.Fatal(err)
	}
	if err := unix.Setxattr(p, "user.b", v, 0); err != nil {
		t.Fatalf("64 KiB xattr after removing the other: %v", err)
	}
}

const outageBound = 2 * time.Second

// outageMount mounts a Redis volume with a 2s metadata timeout and no
// kernel caching of names or attributes, and creates file f.
func outageMount(t *testing.T) (*testredis.Server, *fusetest.Mount) {
	srv := testredis.Start(t, testredis.WithPersistence())
	cfg := fusetest.Config{MetaURL: srv.URL(), Meta: meta.Options{OpTimeout: outageBound}}
	cfg.VFS.AttrTimeout, cfg.VFS.EntryTimeout = time.Nanosecond, time.Nanosecond
	m := fusetest.Start(t, cfg)
	if err := os.WriteFile(m.Path("f"), []byte("data"), 0o644); err != nil {
		t.Fatal(err)
	}
	return srv, m
}

// checkEIOWithin runs stat and open on the mount while Redis is out:
// each fails with EIO (not ECONNREFUSED, not ETIMEDOUT) within the
// metadata timeout.
func checkEIOWithin(t *testing.T, m *fusetest.Mount) {
	t.Helper()
	ops := []struct {
		name string
		fn   func() error
	}{
		{"stat", func() error { _, err := os.Stat(m.Path("f")); return err }},
		{"stat missing", func() error { _, err := os.Stat(m.Path("nope")); return err }},
		{"open", func() error {
			f, err := os.Open(m.Path("f"))
			if err == nil {
				f.Close()
			}
			return err
		}},
	}
	for round := range 3 {
		for _, op := range ops {
			t0 := time.Now()
			err := op.fn()
			d := time.Since(t0)
			t.Logf("%s (round %d): %v after %v", op.name, round, err, d.Round(time.Millisecond))
			if !errors.Is(err, syscall.EIO) {
				t.Errorf("%s with redis out: %v, want EIO", op.name, err)
			}
			if d > outageBound+time.Second {
				t.Errorf("%s with redis out took %v, want at most the 2s metadata timeout (+1s)", op.name, d)
			}
		}
	}
}

// TestRedisKilled: with Redis killed, file operations fail with EIO
// within the metadata timeout, and work again once it is back.
func TestRedisKilled(t *testing.T) {
	srv, m := outageMount(t)
	srv.Kill()
	checkEIOWithin(t, m)
	if err := srv.StartAgain(); err != nil {
		t.Fatal(err)
	}
	waitBack(t, m)
}

// TestRedisHung: a hung Redis (SIGSTOP) is bounded the same way.
func TestRedisHung(t *testing.T) {
	srv, m := outageMount(t)
	resume := srv.Pause(t)
	checkEIOWithin(t, m)
	resume()
	waitBack(t, m)
}

func waitBack(t *testing.T, m *fusetest.Mount) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		b, err := os.ReadFile(m.Path("f"))
		if err == nil && string(b) == "data" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("mount did not recover after redis came back: %q %v", b, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
