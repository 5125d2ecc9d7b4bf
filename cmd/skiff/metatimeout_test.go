package main

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/skiff-fs/skiff/fsclient/volume"
	"github.com/skiff-fs/skiff/internal/testredis"
)

// TestMountMetaTimeout: with --meta-timeout 1s and Redis killed, stat on
// the mount fails with EIO within the bound (not ECONNREFUSED, not a
// 50 s wait).
func TestMountMetaTimeout(t *testing.T) {
	srv := testredis.Start(t, testredis.WithPersistence())
	if _, err := volume.Create(context.Background(), volume.FormatConfig{MetaURL: srv.URL(), Name: "mt", Bucket: t.TempDir()}); err != nil {
		t.Fatal(err)
	}
	mp := filepath.Join(t.TempDir(), "mnt")
	os.Mkdir(mp, 0o755)

	cmd := newMount(&globals{})
	cmd.SetArgs([]string{"--meta-timeout", "0s", srv.URL(), mp})
	cmd.SetOut(&bytes.Buffer{})
	cmd.SetErr(&bytes.Buffer{})
	if err := cmd.Execute(); err == nil || !strings.Contains(err.Error(), "--meta-timeout") {
		t.Errorf("skiff mount --meta-timeout 0s: %v, want an error naming --meta-timeout", err)
	}

	out, done := startMount(t, "--meta-timeout", "1s", "--attr-timeout", "0s", "--entry-timeout", "0s", srv.URL(), mp)
	if err := os.WriteFile(filepath.Join(mp, "f"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	srv.Kill()
	for i := range 5 {
		t0 := time.Now()
		_, err := os.Stat(filepath.Join(mp, "f"))
		d := time.Since(t0)
		if !errors.Is(err, syscall.EIO) {
			t.Errorf("stat %d with redis killed: %v, want EIO", i, err)
		}
		if d > 1500*time.Millisecond {
			t.Errorf("stat %d with redis killed took %v, want at most --meta-timeout 1s (+0.5s)", i, d)
		}
	}
	if err := srv.StartAgain(); err != nil {
		t.Fatal(err)
	}
	// The mount recovers by itself (a probe every 200ms).
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, err := os.Stat(filepath.Join(mp, "f")); err == nil {
			break
		} else if time.Now().After(deadline) {
			t.Fatalf("no recovery after redis came back: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	umountAndWait(t, mp, done, out)
}

// TestWorkerGetsMetaTimeout: the supervised worker is started with the
// mount's --meta-timeout, and its command accepts it.
func TestWorkerGetsMetaTimeout(t *testing.T) {
	g := &globals{}
	var f mountFlags
	f.metaTimeout = 1500 * time.Millisecond
	args := workerArgs(g, &f, "redis://127.0.0.1:1/0")
	if !slices.Contains(args, "--meta-timeout=1.5s") {
		t.Fatalf("worker args %q lack --meta-timeout=1.5s", args)
	}
	w := newWorker(g)
	w.Flags().BoolVar(&g.verbose, "verbose", false, "") // the root's persistent flag
	if err := w.ParseFlags(args); err != nil {
		t.Fatalf("worker flags %q: %v", args, err)
	}
	if got, _ := w.Flags().GetDuration("meta-timeout"); got != 1500*time.Millisecond {
		t.Fatalf("worker --meta-timeout = %v", got)
	}
}
