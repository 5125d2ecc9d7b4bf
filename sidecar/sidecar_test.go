package sidecar

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/skiff-fs/skiff/fsclient/fuse"
	"github.com/skiff-fs/skiff/fsclient/volume"
	"github.com/skiff-fs/skiff/sidecar/contract"
)

type logWriter struct{ t testing.TB }

func (w logWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

func testLogger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(logWriter{t}, &slog.HandlerOptions{Level: slog.LevelInfo}))
}

// pod is a sidecar's inputs in a temp dir: one bolt volume "data" with
// its blocks in a directory, its Secret, a mount path and a cache dir.
type pod struct {
	root, mountPath, secretDir, cacheDir string
}

func newPod(t *testing.T) *pod {
	root := t.TempDir()
	p := &pod{root: root, mountPath: filepath.Join(root, "skiff", "data"),
		secretDir: filepath.Join(root, "secrets", "data"), cacheDir: filepath.Join(root, "cache")}
	metaURL := "bolt://" + filepath.Join(root, "meta.db")
	if _, err := volume.Create(context.Background(), volume.FormatConfig{MetaURL: metaURL, Name: "data", Bucket: "file://" + filepath.Join(root, "blocks")}); err != nil {
		t.Fatal(err)
	}
	writeSecret(t, p.secretDir, map[string]string{contract.SecretKeyMetaURL: metaURL + "\n"})
	return p
}

func (p *pod) config(t *testing.T) Config {
	return Config{
		Volumes:     []contract.Volume{{Name: "data", MountPath: p.mountPath, SecretDir: p.secretDir}},
		CacheDir:    p.cacheDir,
		GracePeriod: 10 * time.Second,
		Version:     "test",
		Logger:      testLogger(t),
		TrustInputs: true, // a bolt:// volume
	}
}

// running is a Sidecar serving on a free port.
type running struct {
	s    *Sidecar
	url  string
	stop context.CancelFunc
	done chan error
}

func start(t *testing.T, cfg Config) *running {
	t.Helper()
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{s: s, url: "http://" + ln.Addr().String(), stop: cancel, done: make(chan error, 1)}
	go func() { r.done <- s.Serve(ctx, ln) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-r.done:
		case <-time.After(30 * time.Second):
			t.Error("sidecar did not stop")
		}
		for _, v := range cfg.Volumes {
			if ok, _ := skiffMounted(v.MountPath); ok {
				_ = fuse.Unmount(v.MountPath, true)
			}
		}
	})
	return r
}

func (r *running) get(t *testing.T, path string) (int, string) {
	t.Helper()
	resp, err := http.Get(r.url + path)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func (r *running) waitReady(t *testing.T) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		code, body := r.get(t, contract.PathReady)
		if code == http.StatusOK {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("not ready after 30 s: %d %s", code, body)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (r *running) wait(t *testing.T) error {
	t.Helper()
	select {
	case err := <-r.done:
		r.done <- err // for Cleanup
		return err
	case <-time.After(30 * time.Second):
		t.Fatal("sidecar did not stop within 30 s")
		return nil
	}
}

// TestLifecycle mounts a real volume, checks the probes and metrics,
// survives an unmount from outside, and on stop flushes a file that is
// still open with unflushed writes.
func TestLifecycle(t *testing.T) {
	p := newPod(t)
	r := start(t, p.config(t))
	r.waitReady(t)
	if code, body := r.get(t, contract.PathHealth); code != http.StatusOK {
		t.Fatalf("healthz: %d %s", code, body)
	}

	closed := make([]byte, 5<<20+123)
	rand.Read(closed)
	if err := os.WriteFile(filepath.Join(p.mountPath, "closed"), closed, 0o644); err != nil {
		t.Fatal(err)
	}
	_, body := r.get(t, contract.PathMetrics)
	for _, want := range []string{
		`skiff_volume_mounted{volume="data"} 1`,
		`skiff_object_requests_total{op="put",volume="data"} 2`,
		`skiff_write_buffer_limit_bytes{volume="data"} 3.145728e+08`,
		`skiff_statfs_duration_seconds_count{volume="data"}`,
		`skiff_memory_budget_bytes{part="write_buffer"}`,
		`skiff_cache_misses_total{volume="data"}`,
		`skiff_fuse_op_duration_seconds_count{op="write",volume="data"}`,
		"go_memstats_heap_alloc_bytes",
	} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
	if t.Failed() {
		t.Log(body)
	}

	// Someone unmounts the volume: the loop mounts it again.
	if err := fuse.Unmount(p.mountPath, false); err != nil {
		t.Fatal(err)
	}
	r.waitReady(t)
	if n := r.s.vols[0].mounts.Load(); n != 2 {
		t.Fatalf("mounted %d times, want 2", n)
	}

	// A file still open for writing at SIGTERM: its data must be flushed.
	open := make([]byte, 3<<20)
	rand.Read(open)
	f, err := os.Create(filepath.Join(p.mountPath, "open"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write(open); err != nil {
		t.Fatal(err)
	}
	r.stop()
	// The busy mount is detached lazily; then the writer lets go.
	deadline := time.Now().Add(10 * time.Second)
	for {
		if ok, _ := skiffMounted(p.mountPath); !ok {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the busy mount was not detached")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if code, _ := r.get(t, contract.PathReady); code == http.StatusOK {
		t.Error("ready while stopping")
	}
	f.Close()
	if err := r.wait(t); err != nil {
		t.Fatalf("Run: %v", err)
	}
	if ok, _ := skiffMounted(p.mountPath); ok {
		t.Fatal("still mounted after Run returned")
	}

	// A new sidecar finds both files whole.
	r2 := start(t, p.config(t))
	r2.waitReady(t)
	for name, want := range map[string][]byte{"closed": closed, "open": open} {
		got, err := os.ReadFile(filepath.Join(p.mountPath, name))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want) {
			t.Errorf("%s: %d bytes read, want %d, or content differs", name, len(got), len(want))
		}
	}
	r2.stop()
	if err := r2.wait(t); err != nil {
		t.Fatalf("Run: %v", err)
	}
}

// fakeMounter mounts nothing; its mounts end when told.
type fakeMounter struct {
	mu     sync.Mutex
	mounts []*fakeMounted
	fail   error
}

type fakeMounted struct {
	done     chan struct{}
	shutdown atomic.Int32
}

func (f *fakeMounter) Mount(ctx context.Context, s *Spec) (Mounted, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.fail != nil {
		return nil, f.fail
	}
	m := &fakeMounted{done: make(chan struct{})}
	f.mounts = append(f.mounts, m)
	return m, nil
}

func (m *fakeMounted) Done() <-chan struct{} { return m.done }
func (m *fakeMounted) Stats() Stats          { return Stats{} }
func (m *fakeMounted) Shutdown(ctx context.Context) error {
	m.shutdown.Add(1)
	return nil
}

// TestHungMount: a statfs that never answers makes /readyz fail within
// the timeout, starts no second statfs, and leaves /healthz alone.
func TestHungMount(t *testing.T) {
	root := t.TempDir()
	writeSecret(t, filepath.Join(root, "s"), map[string]string{contract.SecretKeyMetaURL: "bolt:///none"})
	fm := &fakeMounter{}
	cfg := Config{
		Volumes:      []contract.Volume{{Name: "data", MountPath: filepath.Join(root, "mnt"), SecretDir: filepath.Join(root, "s")}},
		ReadyTimeout: 200 * time.Millisecond,
		Mounter:      fm,
		Logger:       testLogger(t),
	}
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	var calls atomic.Int32
	release := make(chan struct{})
	s.statfs = func(string) error {
		calls.Add(1)
		<-release
		return nil
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx, ln) }()
	defer func() {
		cancel()
		<-done
	}()
	url := "http://" + ln.Addr().String()
	for s.vols[0].mounted() == nil {
		time.Sleep(time.Millisecond)
	}
	for range 3 {
		start := time.Now()
		resp, err := http.Get(url + contract.PathReady)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if el := time.Since(start); resp.StatusCode != http.StatusServiceUnavailable || el > time.Second || strings.TrimSpace(string(b)) != "not ready" {
			t.Fatalf("readyz on a hung mount: %d %q after %s", resp.StatusCode, b, el)
		}
	}
	if n := calls.Load(); n != 1 {
		t.Errorf("%d statfs calls in flight, want 1", n)
	}
	if err := Probe(context.Background(), ln.Addr().(*net.TCPAddr).Port, contract.PathHealth); err != nil {
		t.Errorf("healthz on a hung mount: %v", err)
	}
	if err := Probe(context.Background(), ln.Addr().(*net.TCPAddr).Port, contract.PathReady); err == nil {
		t.Error("Probe readyz passed on a hung mount")
	}
	close(release)
	// The answer comes back: ready.
	deadline := time.Now().Add(5 * time.Second)
	for s.Ready() != nil {
		if time.Now().After(deadline) {
			t.Fatalf("not ready after the statfs answered: %v", s.Ready())
		}
		time.Sleep(10 * time.Millisecond)
	}
	// A mount that goes away is mounted again.
	close(fm.mounts[0].done)
	for s.vols[0].mounts.Load() < 2 {
		time.Sleep(time.Millisecond)
	}
	if fm.mounts[0].shutdown.Load() != 1 {
		t.Error("the lost mount was not cleaned up")
	}
}

// TestMountRetry: failing mounts are retried and reported by /readyz.
func TestMountRetry(t *testing.T) {
	root := t.TempDir()
	writeSecret(t, filepath.Join(root, "s"), map[string]string{contract.SecretKeyMetaURL: "bolt:///none"})
	fm := &fakeMounter{fail: errors.New("redis is not up yet")}
	s, err := New(Config{
		Volumes: []contract.Volume{{Name: "data", MountPath: filepath.Join(root, "mnt"), SecretDir: filepath.Join(root, "s")}},
		Mounter: fm,
		Logger:  testLogger(t),
	})
	if err != nil {
		t.Fatal(err)
	}
	s.statfs = func(string) error { return nil }
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx, ln) }()
	for s.vols[0].failures.Load() < 2 {
		time.Sleep(5 * time.Millisecond)
	}
	if err := s.Ready(); err == nil || !strings.Contains(err.Error(), "redis is not up yet") {
		t.Errorf("Ready = %v", err)
	}
	fm.mu.Lock()
	fm.fail = nil
	fm.mu.Unlock()
	deadline := time.Now().Add(5 * time.Second)
	for s.Ready() != nil {
		if time.Now().After(deadline) {
			t.Fatalf("not ready: %v", s.Ready())
		}
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if fm.mounts[0].shutdown.Load() != 1 {
		t.Error("not shut down")
	}
}
