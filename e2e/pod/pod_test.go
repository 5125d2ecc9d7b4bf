package pod

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/skiff-fs/skiff/fsclient/object/gcs/gcstest"
	"github.com/skiff-fs/skiff/fsclient/volume"
	"github.com/skiff-fs/skiff/internal/testredis"
	"github.com/skiff-fs/skiff/sidecar/contract"
)

// miniPod is a pod in miniature: the emptyDir skiff-data on the "host",
// the sidecar's Secret, cache and staging directories, and the paths
// each container sees.
type miniPod struct {
	t         *testing.T
	bin       string
	emptyDir  string // host side, shared
	sidecarAt string // the sidecar's mountPath (Bidirectional)
	appAt     string // the app's mountPath (HostToContainer)
	stageDir  string // the sidecar's staging directory (SKIFF_STAGE_DIR)
	env       []string
	port      int
}

func newMiniPod(t *testing.T, metaURL string, extraEnv ...string) *miniPod {
	root := t.TempDir()
	p := &miniPod{t: t, bin: sidecarBinary(t), emptyDir: filepath.Join(root, "kubelet", "skiff-data"),
		sidecarAt: filepath.Join(root, "sidecar", "skiff", "data"), appAt: filepath.Join(root, "app", "data"),
		stageDir: filepath.Join(root, "run", "stage"), port: freePort(t)}
	sharedDir(t, p.emptyDir)
	// The Secret as the kubelet lays it out: <secrets root>/<volume>/<key>.
	secretDir := filepath.Join(root, "etc", "skiff", "secrets", "data")
	if err := os.MkdirAll(secretDir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(secretDir, contract.SecretKeyMetaURL), []byte(metaURL+"\n"), 0o400); err != nil {
		t.Fatal(err)
	}
	vols, err := contract.MarshalVolumes([]contract.Volume{{Name: "data", MountPath: p.sidecarAt, SecretDir: secretDir}})
	if err != nil {
		t.Fatal(err)
	}
	p.env = append([]string{
		contract.EnvVolumes + "=" + vols,
		contract.EnvProbePort + "=" + strconv.Itoa(p.port),
		"SKIFF_CACHE_DIR=" + filepath.Join(root, "var", "cache", "skiff"),
		"SKIFF_STAGE_DIR=" + p.stageDir,
		"SKIFF_GRACE_PERIOD=20s",
	}, extraEnv...)
	return p
}

func (p *miniPod) startSidecar(name string) *proc {
	return startIn(p.t, name, "bidirectional", p.emptyDir, p.sidecarAt, p.env, p.bin)
}

// startApp starts the app container: it waits on the sidecar's
// readiness with the exec probe, writes and reads a file, says so and
// sleeps; the test then works in its mount namespace through
// /proc/<pid>/root.
func (p *miniPod) startApp() *proc {
	script := `until "$0" probe readyz >/dev/null 2>&1; do sleep 0.1; done
echo hello from the app > "$1/hello" && cat "$1/hello" > "$1/hello.copy" && echo app-ok
exec sleep 3600`
	return startIn(p.t, "app", "host-to-container", p.emptyDir, p.appAt, p.env, "/bin/sh", "-c", script, p.bin, p.appAt)
}

// inApp is path name of the volume as the app sees it.
func (p *miniPod) inApp(app *proc, name string) string {
	return filepath.Join("/proc", strconv.Itoa(app.cmd.Process.Pid), "root", p.appAt, name)
}

func randomBytes(n int) []byte {
	b := make([]byte, n)
	rand.Read(b)
	return b
}

func waitFor(t *testing.T, what string, d time.Duration, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %s", what, d)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestPod runs the sidecar and an app in separate mount namespaces,
// joined by an emptyDir as the kubelet joins them, on a Redis + GCS
// emulator volume: readiness, reads and writes, SIGTERM with dirty data,
// and a container restart over a dead mount.
func TestPod(t *testing.T) {
	redis := testredis.Start(t)
	gcstest.Start(t, "pod-bucket") // exports STORAGE_EMULATOR_HOST to the sidecar
	ctx := context.Background()
	if _, err := volume.Create(ctx, volume.FormatConfig{MetaURL: redis.URL(), Name: "data", Bucket: "gs://pod-bucket/vols"}); err != nil {
		t.Fatal(err)
	}
	p := newMiniPod(t, redis.URL())

	// The app starts with the sidecar and waits for its readiness.
	sc1 := p.startSidecar("sidecar-1")
	app := p.startApp()
	waitFor(t, "the app's first write", 60*time.Second, func() bool { return strings.Contains(app.out.String(), "app-ok") })
	if got, err := os.ReadFile(p.inApp(app, "hello.copy")); err != nil || string(got) != "hello from the app\n" {
		t.Fatalf("hello.copy = %q, %v", got, err)
	}
	if m := fuseMountsIn(t, app.cmd.Process.Pid, p.appAt); len(m) != 1 {
		t.Fatalf("app's mounts on %s: %q", p.appAt, m)
	}
	big := randomBytes(24<<20 + 17)
	if err := os.WriteFile(p.inApp(app, "big"), big, 0o644); err != nil {
		t.Fatal(err)
	}
	if got, err := os.ReadFile(p.inApp(app, "big")); err != nil || !bytes.Equal(got, big) {
		t.Fatalf("reading big back: %d bytes, %v", len(got), err)
	}

	// SIGTERM with a file still open and dirty: the data must reach the
	// store, the mount must leave the app's namespace, exit code 0.
	dirty := randomBytes(9<<20 + 5)
	f, err := os.Create(p.inApp(app, "dirty"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write(dirty); err != nil {
		t.Fatal(err)
	}
	if err := sc1.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the mount leaving the app's namespace", 25*time.Second, func() bool {
		return len(fuseMountsIn(t, app.cmd.Process.Pid, p.appAt)) == 0
	})
	f.Close() // the lazily detached mount goes away with its last file
	if code := sc1.wait(t, 30*time.Second); code != 0 {
		t.Fatalf("sidecar exited %d after SIGTERM", code)
	}
	t.Logf("sidecar-1 after SIGTERM: %s", lastLines(sc1.out.String(), 4))
	if _, err := os.Stat(p.inApp(app, "big")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("after shutdown the app still sees files: %v", err)
	}

	// The next sidecar (a new container) reads everything back from the
	// store: the dirty data was flushed.
	sc2 := p.startSidecar("sidecar-2")
	waitReady(t, p.port, sc2, 60*time.Second)
	for name, want := range map[string][]byte{"big": big, "dirty": dirty} {
		if got, err := os.ReadFile(p.inApp(app, name)); err != nil || !bytes.Equal(got, want) {
			t.Fatalf("%s after a restart: %d bytes, %v", name, len(got), err)
		}
	}

	// Container restart: kill -9 leaves a dead mount in the app.
	keep, err := os.Open(p.inApp(app, "big"))
	if err != nil {
		t.Fatal(err)
	}
	defer keep.Close()
	if err := sc2.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	sc2.wait(t, 10*time.Second)
	if _, err := os.Stat(p.inApp(app, "big")); !errors.Is(err, syscall.ENOTCONN) {
		t.Fatalf("after kill -9 the app's stat = %v, want ENOTCONN", err)
	}
	sc3 := p.startSidecar("sidecar-3")
	waitReady(t, p.port, sc3, 60*time.Second)
	// New opens succeed and see the data; the old descriptor is dead.
	if got, err := os.ReadFile(p.inApp(app, "big")); err != nil || !bytes.Equal(got, big) {
		t.Fatalf("big after recovery: %d bytes, %v", len(got), err)
	}
	// An old descriptor is bound to the dead connection: what needs the
	// server fails, pages still in the kernel's cache may be served.
	_, rerr := keep.ReadAt(make([]byte, 10), int64(len(big)-10))
	var st syscall.Stat_t
	t.Logf("old descriptor after recovery: read: %v, fstat: %v", rerr, syscall.Fstat(int(keep.Fd()), &st))
	after := randomBytes(3 << 20)
	if err := os.WriteFile(p.inApp(app, "after"), after, 0o644); err != nil {
		t.Fatalf("write after recovery: %v", err)
	}
	if !strings.Contains(sc3.out.String(), "dead skiff mount") {
		t.Errorf("sidecar-3 did not report the stale mount:\n%s", sc3.out.String())
	}
	if err := sc3.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if code := sc3.wait(t, 30*time.Second); code != 0 {
		t.Fatalf("sidecar-3 exited %d after SIGTERM", code)
	}
	// What the app sees at the end is the dead mount of sidecar-2 again
	// (the pod ends here, and the kubelet removes the emptyDir).
	sc4 := p.startSidecar("sidecar-4")
	waitReady(t, p.port, sc4, 60*time.Second)
	if got, err := os.ReadFile(p.inApp(app, "after")); err != nil || !bytes.Equal(got, after) {
		t.Fatalf("after: %d bytes, %v", len(got), err)
	}
	if err := sc4.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if code := sc4.wait(t, 30*time.Second); code != 0 {
		t.Fatalf("sidecar-4 exited %d", code)
	}
}

func lastLines(s string, n int) string {
	l := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(l) > n {
		l = l[len(l)-n:]
	}
	return strings.Join(l, "\n")
}
