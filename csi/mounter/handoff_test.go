package mounter_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/skiff-fs/skiff/csi/internal/mnt"
	"github.com/skiff-fs/skiff/csi/mounter"
	"github.com/skiff-fs/skiff/fsclient/volume"
	"github.com/skiff-fs/skiff/internal/syncbuf"
)

var versioned struct {
	once sync.Once
	err  error
}

// versionedSkiff builds skiff with -X main.version=version (v1 and v2,
// once per run) into the test binaries' directory.
func versionedSkiff(t *testing.T, version string) string {
	t.Helper()
	skiffBinary(t) // makes bin.dir
	versioned.once.Do(func() {
		for _, v := range []string{"v1", "v2"} {
			cmd := exec.Command("go", "build", "-o", filepath.Join(bin.dir, "skiff-"+v), "-ldflags", "-X main.version="+v, "github.com/skiff-fs/skiff/cmd/skiff")
			if out, err := cmd.CombinedOutput(); err != nil {
				versioned.err = fmt.Errorf("go build cmd/skiff %s: %v\n%s", v, err, out)
				return
			}
		}
	})
	if versioned.err != nil {
		t.Fatal(versioned.err)
	}
	return filepath.Join(bin.dir, "skiff-"+version)
}

// served runs a mounter's Serve on a socket of its own.
type served struct {
	s      *mounter.Server
	c      *mounter.Client
	cancel context.CancelFunc
	done   chan error
}

func serve(t *testing.T, s *mounter.Server, sock string) *served {
	t.Helper()
	l, err := mounter.Listen(sock)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	p := &served{s: s, c: mounter.NewClient(sock), cancel: cancel, done: make(chan error, 1)}
	go func() { p.done <- s.Serve(ctx, l) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-p.done:
		case <-time.After(60 * time.Second):
			t.Error("a mounter did not stop within 60s")
		}
	})
	return p
}

func stDev(t *testing.T, path string) uint64 {
	t.Helper()
	var st syscall.Stat_t
	if err := syscall.Stat(path, &st); err != nil {
		t.Fatalf("stat %s: %v", path, err)
	}
	return st.Dev
}

// TestUpgradeHandsOverMounts: a volume staged by a mounter running skiff
// v1 and published (bound) into a target path survives the mounter's
// replacement by one running skiff v2: the new mounter adopts it on the
// same FUSE connection, the old one retires without unmounting, and the
// target keeps working.
func TestUpgradeHandsOverMounts(t *testing.T) {
	dir := t.TempDir()
	metaURL := "bolt://" + filepath.Join(dir, "meta.db")
	if _, err := volume.Create(context.Background(), volume.FormatConfig{MetaURL: metaURL, Name: "upgrade-test", Bucket: "file://" + filepath.Join(dir, "blocks")}); err != nil {
		t.Fatal(err)
	}
	out := &syncbuf.Buffer{}
	handOff := filepath.Join(dir, "handoff")
	newServer := func(version, state string) *mounter.Server {
		s, err := mounter.New(mounter.Config{
			Skiff: versionedSkiff(t, version), Supervise: true, HandOffDir: handOff,
			StateDir: filepath.Join(dir, state), Output: out, StopTimeout: 20 * time.Second, TrustInputs: true,
		})
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	stage := filepath.Join(dir, "stage")
	target := filepath.Join(dir, "target")
	var (
		dev  uint64
		want string
	)
	t.Cleanup(func() {
		syscall.Unmount(target, syscall.MNT_DETACH)
		if ms, _ := mnt.At(stage); len(ms) > 0 && dev != 0 {
			minor := (dev & 0xff) | ((dev >> 12) & 0xfff00)
			os.WriteFile(fmt.Sprintf("/sys/fs/fuse/connections/%d/abort", minor), []byte("1"), 0)
		}
		mnt.DetachFUSE(stage)
		if t.Failed() {
			t.Logf("skiff output:\n%s", out)
		}
	})

	old := serve(t, newServer("v1", "state-old"), filepath.Join(dir, "old.sock"))
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	v, err := old.c.Stage(ctx, mounter.StageRequest{VolumeID: "vol", Path: stage, MetaURL: metaURL, Passphrase: "not-needed"})
	if err != nil {
		t.Fatal(err)
	}
	dev = stDev(t, stage)
	// Publish, as csi-node does: a bind of the staging path.
	if err := os.Mkdir(target, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mount(stage, target, "", syscall.MS_BIND, ""); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(target, "before"), []byte("v1"), 0o644); err != nil {
		t.Fatal(err)
	}

	// A large file, and its checksum, by other processes (as a pod's).
	big := filepath.Join(target, "big")
	if out, err := exec.Command("sh", "-c", "head -c 268435456 /dev/urandom > "+big+" && sha256sum "+big).CombinedOutput(); err != nil {
		t.Fatalf("write the large file: %v: %s", err, out)
	} else {
		want = strings.Fields(string(out))[0]
	}
	os.WriteFile("/proc/sys/vm/drop_caches", []byte("3"), 0)

	// The upgrade: a new mounter adopts, then serves, while a pod's
	// process reads the large file through the target.
	reader := exec.Command("sha256sum", big)
	var readOut strings.Builder
	reader.Stdout, reader.Stderr = &readOut, &readOut
	if err := reader.Start(); err != nil {
		t.Fatal(err)
	}
	readDone := make(chan error, 1)
	go func() { readDone <- reader.Wait() }()
	t.Cleanup(func() { reader.Process.Kill() })
	nw := newServer("v2", "state-new")
	n, err := nw.Adopt(ctx)
	if err != nil || n != 1 {
		t.Fatalf("adopt: %d volumes, %v", n, err)
	}
	select {
	case err := <-readDone:
		if err != nil || !strings.HasPrefix(readOut.String(), want) {
			t.Fatalf("reading through the upgrade: %v: %q, want checksum %s", err, readOut.String(), want)
		}
	case <-time.After(2 * time.Minute):
		t.Fatal("the read through the upgrade did not finish")
	}
	select {
	case err := <-old.done:
		old.done <- err // for its cleanup
		if err != nil {
			t.Fatalf("the old mounter after the hand-off: %v", err)
		}
	case <-time.After(60 * time.Second):
		t.Fatal("the old mounter did not retire after handing its volume over")
	}
	if err := syscall.Kill(v.PID, 0); !errors.Is(err, syscall.ESRCH) {
		t.Errorf("the old mounter's child %d still runs (%v)", v.PID, err)
	}
	if vs := old.s.Volumes(); len(vs) != 0 {
		t.Errorf("the old mounter still lists %+v", vs)
	}
	if files, _ := filepath.Glob(filepath.Join(dir, "state-old", "*", "*")); len(files) != 0 {
		t.Errorf("the old mounter left secret files: %v", files)
	}
	nws := serve(t, nw, filepath.Join(dir, "new.sock"))
	vs, err := nws.c.Volumes(ctx)
	if err != nil || len(vs) != 1 || vs[0].Path != stage || vs[0].PID == 0 || vs[0].PID == v.PID {
		t.Fatalf("the new mounter's volumes: %+v, %v", vs, err)
	}
	if !strings.Contains(out.String(), "adopted the mount on "+stage) || !strings.Contains(out.String(), "version v2") {
		t.Fatalf("no v2 client adopted the mount")
	}
	// Same connection, still published, both ways.
	if stDev(t, stage) != dev || stDev(t, target) != dev {
		t.Fatal("the staging path or the target is not on the same FUSE connection after the upgrade")
	}
	if b, err := os.ReadFile(filepath.Join(target, "before")); err != nil || string(b) != "v1" {
		t.Fatalf("read through the target after the upgrade: %q, %v", b, err)
	}
	if err := os.WriteFile(filepath.Join(target, "after"), []byte("v2"), 0o644); err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(filepath.Join(stage, "after")); err != nil || string(b) != "v2" {
		t.Fatalf("read through the staging path: %q, %v", b, err)
	}
	// Unpublish, unstage: nothing left behind.
	if err := syscall.Unmount(target, 0); err != nil {
		t.Fatal(err)
	}
	if err := nws.c.Unstage(ctx, stage); err != nil {
		t.Fatal(err)
	}
	if ms, _ := mnt.At(stage); len(ms) != 0 {
		t.Errorf("left mounted: %+v", ms)
	}
	if socks, _ := filepath.Glob(filepath.Join(handOff, "vol-*")); len(socks) != 0 {
		t.Errorf("hand-off sockets left: %v", socks)
	}
}

// TestAdoptWithoutPredecessor: the first mounter on a node, or one whose
// predecessor died (a stale socket nobody answers on), adopts nothing.
func TestAdoptWithoutPredecessor(t *testing.T) {
	dir := t.TempDir()
	handOff := filepath.Join(dir, "handoff")
	s, err := mounter.New(mounter.Config{Skiff: "/nonexistent/skiff", Supervise: true, HandOffDir: handOff, StateDir: filepath.Join(dir, "state")})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if n, err := s.Adopt(ctx); n != 0 || err != nil {
		t.Fatalf("adopt with no predecessor: %d, %v", n, err)
	}
	// A stale socket: a socket file nobody listens on (its mounter died).
	if err := syscall.Mknod(s.HandOffSocket(), syscall.S_IFSOCK|0o600, 0); err != nil {
		t.Fatal(err)
	}
	if n, err := s.Adopt(ctx); n != 0 || err != nil {
		t.Fatalf("adopt with a stale socket: %d, %v", n, err)
	}
}
