package driver_test

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/skiff-fs/skiff/csi/driver"
	"github.com/skiff-fs/skiff/csi/internal/mnt"
	"github.com/skiff-fs/skiff/csi/mounter"
	"github.com/skiff-fs/skiff/fsclient/volume"
	"github.com/skiff-fs/skiff/internal/syncbuf"
	"github.com/skiff-fs/skiff/internal/testredis"
)

// envDriver makes the test binary run a driver instead of the tests
// (see runDriver): the driver of TestTwoTargets is a process of its own,
// so that the test can kill and restart it.
const envDriver = "SKIFF_CSI_TEST_DRIVER"

func TestMain(m *testing.M) {
	if v := os.Getenv(envDriver); v != "" {
		os.Exit(runDriver(v))
	}
	code := m.Run()
	if bin.dir != "" {
		os.RemoveAll(bin.dir)
	}
	os.Exit(code)
}

// runDriver serves node and controller on "ENDPOINT|MOUNTER_SOCKET" until
// SIGTERM.
func runDriver(v string) int {
	ep, sock, _ := strings.Cut(v, "|")
	err := func() error {
		d, err := driver.New(driver.Config{Node: true, Controller: true, NodeID: "node-1", MounterSocket: sock,
			Logger: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug})), TrustInputs: true})
		if err != nil {
			return err
		}
		l, err := driver.Listen(ep)
		if err != nil {
			return err
		}
		ctx, cancel := signal.NotifyContext(context.Background(), syscall.SIGTERM)
		defer cancel()
		return d.Serve(ctx, l)
	}()
	if err != nil {
		fmt.Fprintln(os.Stderr, "driver:", err)
		return 1
	}
	return 0
}

// bin is the skiff binary the mounter runs, built once per test run
// (without -race: it is not under test here).
var bin struct {
	once sync.Once
	dir  string
	path string
	err  error
}

func skiffBinary(t testing.TB) string {
	t.Helper()
	bin.once.Do(func() {
		bin.dir, bin.err = os.MkdirTemp("", "skiff-csi-test")
		if bin.err != nil {
			return
		}
		bin.path = filepath.Join(bin.dir, "skiff")
		out, err := exec.Command("go", "build", "-o", bin.path, "github.com/skiff-fs/skiff/cmd/skiff").CombinedOutput()
		if err != nil {
			bin.err = fmt.Errorf("go build cmd/skiff: %v\n%s", err, out)
		}
	})
	if bin.err != nil {
		t.Fatal(bin.err)
	}
	return bin.path
}

// redisPassword is in every META_URL of the tests: no log may show it.
const redisPassword = "s3cret-redis-pass"

// newVolume formats a volume on a redis-server of its own (blocks in a
// directory) and returns its META_URL.
func newVolume(t testing.TB) string {
	t.Helper()
	srv := testredis.Start(t, testredis.WithPassword(redisPassword))
	metaURL := srv.URL()
	if !strings.Contains(metaURL, redisPassword) {
		t.Fatalf("META_URL %q does not carry the password", metaURL)
	}
	if _, err := volume.Create(context.Background(), volume.FormatConfig{
		MetaURL: metaURL, Name: "csi", Bucket: "file://" + filepath.Join(t.TempDir(), "blocks"),
	}); err != nil {
		t.Fatal(err)
	}
	return metaURL
}

// startMounter serves a mounter (supervised children) on dir/mounter.sock
// in this process; Cleanup stops it and every child.
func startMounter(t *testing.T, dir string, logs, out *syncbuf.Buffer) (string, *mounter.Server) {
	t.Helper()
	s, err := mounter.New(mounter.Config{
		Skiff:        skiffBinary(t),
		Supervise:    true,
		StateDir:     filepath.Join(dir, "state"),
		StartTimeout: 30 * time.Second,
		StopTimeout:  20 * time.Second,
		Output:       out,
		Logger:       slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
		TrustInputs:  true, // blocks in a directory
	})
	if err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(dir, "mounter.sock")
	l, err := mounter.Listen(sock)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx, l) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("mounter: %v", err)
		}
	})
	return sock, s
}

// noMountsUnder fails the test if anything is still mounted under dir.
func noMountsUnder(t *testing.T, dir string) {
	t.Helper()
	ms, err := mnt.Under(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range ms {
		t.Errorf("left mounted: %s (%s %s)", m.MountPoint, m.FsType, m.Source)
	}
}

// detachAllUnder is a Cleanup of last resort: a failed test must not
// leave mounts on the machine.
func detachAllUnder(t *testing.T, dir string) {
	t.Cleanup(func() {
		ms, _ := mnt.Under(dir)
		for i := len(ms) - 1; i >= 0; i-- {
			_, _ = mnt.DetachFUSE(ms[i].MountPoint)
			_ = unix.Unmount(ms[i].MountPoint, unix.MNT_DETACH)
		}
	})
}
