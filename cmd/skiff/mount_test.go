package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/skiff-fs/skiff/fsclient/volume"

	"github.com/skiff-fs/skiff/internal/syncbuf"
)

// startMount runs `skiff mount` in this process and waits until it says
// it is mounted. The returned channel yields the command's result.
func startMount(t *testing.T, args ...string) (*syncbuf.Buffer, <-chan error) {
	t.Helper()
	out := &syncbuf.Buffer{}
	cmd := newMount(&globals{})
	cmd.SetArgs(args)
	cmd.SetOut(out)
	cmd.SetErr(out)
	done := make(chan error, 1)
	go func() { done <- cmd.ExecuteContext(context.Background()) }()
	deadline := time.Now().Add(30 * time.Second)
	for !strings.Contains(out.String(), "mounted on") {
		select {
		case err := <-done:
			t.Fatalf("skiff mount ended: %v\n%s", err, out)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("skiff mount did not get ready:\n%s", out)
		}
		time.Sleep(20 * time.Millisecond)
	}
	mp := args[len(args)-1]
	t.Cleanup(func() { syscall.Unmount(mp, syscall.MNT_DETACH) })
	return out, done
}

// umountAndWait runs skiff umount on mp and waits for the mount's end.
func umountAndWait(t *testing.T, mp string, done <-chan error, out *syncbuf.Buffer) {
	t.Helper()
	um := newUmount(&globals{})
	um.SetArgs([]string{mp})
	if err := um.Execute(); err != nil {
		t.Fatalf("skiff umount: %v", err)
	}
	waitDone(t, done, out)
}

func waitDone(t *testing.T, done <-chan error, out *syncbuf.Buffer) {
	t.Helper()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("skiff mount: %v\n%s", err, out)
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("skiff mount did not stop:\n%s", out)
	}
}

func TestMountCommand(t *testing.T) {
	dir := t.TempDir()
	metaURL := "bolt://" + filepath.Join(dir, "meta.db")
	if _, err := volume.Create(context.Background(), volume.FormatConfig{MetaURL: metaURL, Name: "cli"}); err != nil {
		t.Fatal(err)
	}
	mp := filepath.Join(dir, "mnt")
	os.Mkdir(mp, 0o755)

	// SIGTERM flushes and unmounts.
	out, done := startMount(t, metaURL, mp)
	if !strings.Contains(out.String(), `volume "cli" mounted on `+mp) {
		t.Errorf("ready message: %q", out)
	}
	if err := os.WriteFile(filepath.Join(mp, "f"), []byte("kept"), 0o644); err != nil {
		t.Fatal(err)
	}
	os.Mkdir(filepath.Join(mp, "sub"), 0o755)
	os.WriteFile(filepath.Join(mp, "sub", "g"), []byte("in sub"), 0o644)
	syscall.Kill(os.Getpid(), syscall.SIGTERM)
	waitDone(t, done, out)
	if !strings.Contains(out.String(), "unmounted") {
		t.Errorf("no unmount message: %q", out)
	}

	// Mount again read-only on a sub-directory; skiff umount ends it.
	out, done = startMount(t, "--read-only", "--subdir", "sub", "--attr-timeout", "100ms", metaURL, mp)
	if b, err := os.ReadFile(filepath.Join(mp, "g")); err != nil || string(b) != "in sub" {
		t.Errorf("read after remount: %q %v", b, err)
	}
	if err := os.WriteFile(filepath.Join(mp, "x"), nil, 0o644); !os.IsPermission(err) && !strings.Contains(errString(err), "read-only") {
		t.Errorf("write on a read-only mount: %v", err)
	}
	umountAndWait(t, mp, done, out)

	// The data survived, and mounting fails clearly where it cannot work.
	out, done = startMount(t, metaURL, mp)
	if b, err := os.ReadFile(filepath.Join(mp, "f")); err != nil || string(b) != "kept" {
		t.Errorf("read after remount: %q %v", b, err)
	}
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{metaURL, mp}, "already a mount point"},
		{[]string{metaURL, dir}, "not empty"},
		{[]string{metaURL, filepath.Join(dir, "nope")}, "does not exist"},
		{[]string{"--buffer-size", "lots", metaURL, t.TempDir()}, "--buffer-size"},
	} {
		cmd := newMount(&globals{})
		cmd.SetArgs(c.args)
		cmd.SetOut(&bytes.Buffer{})
		cmd.SetErr(&bytes.Buffer{})
		if err := cmd.Execute(); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("skiff mount %v: %v, want an error containing %q", c.args, err, c.want)
		}
	}
	um := newUmount(&globals{})
	um.SetArgs([]string{"--force", mp})
	if err := um.Execute(); err != nil {
		t.Fatalf("skiff umount --force: %v", err)
	}
	waitDone(t, done, out)
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}
