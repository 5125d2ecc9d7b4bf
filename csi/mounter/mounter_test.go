package mounter_test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/skiff-fs/skiff/csi/internal/mnt"
	"github.com/skiff-fs/skiff/csi/mounter"
	"github.com/skiff-fs/skiff/fsclient/volume"
	"github.com/skiff-fs/skiff/internal/syncbuf"
)

func TestArgs(t *testing.T) {
	r := &mounter.StageRequest{
		VolumeID: "v", Path: "/stage", MetaURL: "redis://:pw@r/1", Subdir: "a/b",
		Options: []string{"ro", "attr_timeout=5s", "buffer-size=64M", "debug", "nosuid", "entry-timeout", "--evil"},
	}
	args, ignored := mounter.Args(true, r, []string{"--passphrase-file=/p"})
	want := []string{"mount", "--supervise", "--allow-other=true", "--read-only=true", "--subdir=a/b",
		"--attr-timeout=5s", "--buffer-size=64M", "--debug=true", "--passphrase-file=/p", "/stage"}
	if d := cmp.Diff(want, args); d != "" {
		t.Errorf("args (-want +got):\n%s", d)
	}
	if d := cmp.Diff([]string{"nosuid", "entry-timeout", "--evil"}, ignored); d != "" {
		t.Errorf("ignored (-want +got):\n%s", d)
	}
	args, _ = mounter.Args(false, &mounter.StageRequest{MetaURL: "m", Path: "/p"}, nil)
	if slices.Contains(args, "--supervise") || !slices.Contains(args, "--read-only=false") {
		t.Errorf("plain mount args: %v", args)
	}
}

var bin struct {
	once sync.Once
	dir  string
	path string
	err  error
}

func TestMain(m *testing.M) {
	code := m.Run()
	if bin.dir != "" {
		os.RemoveAll(bin.dir)
	}
	os.Exit(code)
}

func skiffBinary(t *testing.T) string {
	bin.once.Do(func() {
		bin.dir, bin.err = os.MkdirTemp("", "skiff-mounter-test")
		if bin.err != nil {
			return
		}
		bin.path = filepath.Join(bin.dir, "skiff")
		if out, err := exec.Command("go", "build", "-o", bin.path, "github.com/skiff-fs/skiff/cmd/skiff").CombinedOutput(); err != nil {
			bin.err = fmt.Errorf("go build cmd/skiff: %v\n%s", err, out)
		}
	})
	if bin.err != nil {
		t.Fatal(bin.err)
	}
	return bin.path
}

// TestPlainMountRestarted: without the supervisor, a skiff mount that
// dies is started again on the staging path (its dead mount detached),
// and Unstage leaves nothing mounted. Over the unix-socket API.
func TestPlainMountRestarted(t *testing.T) {
	dir := t.TempDir()
	metaURL := "bolt://" + filepath.Join(dir, "meta.db")
	if _, err := volume.Create(context.Background(), volume.FormatConfig{MetaURL: metaURL, Name: "mounter-test", Bucket: "file://" + filepath.Join(dir, "blocks")}); err != nil {
		t.Fatal(err)
	}
	out := &syncbuf.Buffer{}
	s, err := mounter.New(mounter.Config{Skiff: skiffBinary(t), StateDir: filepath.Join(dir, "state"), Output: out, StopTimeout: 20 * time.Second, TrustInputs: true})
	if err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(dir, "m.sock")
	l, err := mounter.Listen(sock)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx, l) }()
	stage := filepath.Join(dir, "stage")
	t.Cleanup(func() {
		cancel()
		<-done
		_, _ = mnt.DetachFUSE(stage)
		if t.Failed() {
			t.Logf("skiff output:\n%s", out)
		}
	})
	c := mounter.NewClient("unix://" + sock)
	req := mounter.StageRequest{VolumeID: "v1", Path: stage, MetaURL: metaURL, Passphrase: "not-needed"}
	v, err := c.Stage(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(stage, "f"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	// Idempotent; a different request for the same path is refused.
	if v2, err := c.Stage(ctx, req); err != nil || v2.PID != v.PID {
		t.Fatalf("stage again: %+v, %v", v2, err)
	}
	other := req
	other.ReadOnly = true
	if _, err := c.Stage(ctx, other); status.Code(err) != codes.AlreadyExists {
		t.Fatalf("stage with other settings: %v, want AlreadyExists", err)
	}
	// The passphrase and the META_URL reach the child as files, never as
	// arguments.
	cmdline, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", v.PID))
	if strings.Contains(string(cmdline), "not-needed") || !strings.Contains(string(cmdline), "--passphrase-file=") ||
		strings.Contains(string(cmdline), metaURL) || !strings.Contains(string(cmdline), "--meta-url-file=") {
		t.Errorf("child command line: %q", cmdline)
	}

	if err := syscall.Kill(v.PID, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		vs, err := c.Volumes(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if len(vs) == 1 && vs[0].Starts == 2 && vs[0].PID != 0 && mnt.StatFUSE(stage) == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the killed client was not restarted: %+v", vs)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if b, err := os.ReadFile(filepath.Join(stage, "f")); err != nil || string(b) != "x" {
		t.Fatalf("read after the restart: %q, %v", b, err)
	}
	if err := c.Unstage(ctx, stage); err != nil {
		t.Fatal(err)
	}
	if ms, _ := mnt.At(stage); len(ms) != 0 {
		t.Errorf("left mounted: %+v", ms)
	}
	if vs, _ := c.Volumes(ctx); len(vs) != 0 {
		t.Errorf("volumes after unstage: %+v", vs)
	}
	if files, _ := filepath.Glob(filepath.Join(dir, "state", "*", "*")); len(files) != 0 {
		t.Errorf("secret files left: %v", files)
	}
	// Unstage of a path with nothing staged succeeds.
	if err := c.Unstage(ctx, stage); err != nil {
		t.Fatal(err)
	}
}
