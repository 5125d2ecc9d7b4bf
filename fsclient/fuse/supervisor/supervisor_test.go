package supervisor_test

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/skiff-fs/skiff/fsclient/fuse"
	"github.com/skiff-fs/skiff/fsclient/fuse/supervisor"
	"github.com/skiff-fs/skiff/fsclient/volume"
	"github.com/skiff-fs/skiff/internal/syncbuf"
)

// The workers are real skiff binaries (`skiff __worker`), built once per
// test run without -race: two of them, with different version strings,
// for the upgrade.
var bins struct {
	dir  string
	once sync.Once
	err  error
}

func TestMain(m *testing.M) {
	if mode := os.Getenv(appEnv); mode != "" {
		os.Exit(appMain(mode))
	}
	code := m.Run()
	if bins.dir != "" {
		os.RemoveAll(bins.dir)
	}
	os.Exit(code)
}

func skiffBinary(t testing.TB, version string) string {
	t.Helper()
	bins.once.Do(func() {
		bins.dir, bins.err = os.MkdirTemp("", "skiff-supervisor-test")
		if bins.err != nil {
			return
		}
		for _, v := range []string{"v1", "v2"} {
			cmd := exec.Command("go", "build", "-o", filepath.Join(bins.dir, "skiff-"+v),
				"-ldflags", "-X main.version="+v, "github.com/skiff-fs/skiff/cmd/skiff")
			cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
			if out, err := cmd.CombinedOutput(); err != nil {
				bins.err = fmt.Errorf("go build %s: %v\n%s", v, err, out)
				return
			}
		}
	})
	if bins.err != nil {
		t.Fatal(bins.err)
	}
	return filepath.Join(bins.dir, "skiff-"+version)
}

// newVolume formats a bbolt volume with blocks in a directory.
func newVolume(t testing.TB) string {
	t.Helper()
	dir := t.TempDir()
	metaURL := "bolt://" + filepath.Join(dir, "meta.db")
	if _, err := volume.Create(context.Background(), volume.FormatConfig{MetaURL: metaURL, Name: "sup", Bucket: "file://" + filepath.Join(dir, "blocks")}); err != nil {
		t.Fatal(err)
	}
	return metaURL
}

func workerCmd(t testing.TB, version, metaURL string, log io.Writer) supervisor.Command {
	return supervisor.Command{Path: skiffBinary(t, version), Args: []string{"__worker", metaURL}, Stderr: log}
}

// start mounts metaURL under t.TempDir() with a supervisor running the v1
// worker; it is shut down (or at least detached) in t.Cleanup.
func start(t *testing.T, metaURL string) (*supervisor.Supervisor, *syncbuf.Buffer) {
	t.Helper()
	logs := &syncbuf.Buffer{}
	return startCmd(t, workerCmd(t, "v1", metaURL, logs), logs), logs
}

// startCmd mounts a supervisor running worker.
func startCmd(t *testing.T, worker supervisor.Command, logs *syncbuf.Buffer) *supervisor.Supervisor {
	t.Helper()
	return startWith(t, supervisor.Config{Worker: worker}, logs)
}

// startWith mounts a supervisor configured by cfg under t.TempDir(); it
// fills in Mountpoint, AllowOther, Logger (into logs) and StartTimeout.
// In t.Cleanup it is shut down, and a mount still there (left to no one
// by a hand-off) has its connection aborted.
func startWith(t *testing.T, cfg supervisor.Config, logs *syncbuf.Buffer) *supervisor.Supervisor {
	t.Helper()
	mp := filepath.Join(t.TempDir(), "mnt")
	if err := os.Mkdir(mp, 0o755); err != nil {
		t.Fatal(err)
	}
	cfg.Mountpoint, cfg.AllowOther, cfg.StartTimeout = mp, true, 30*time.Second
	cfg.Logger = slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelInfo}))
	s, err := supervisor.Start(cfg)
	if err != nil {
		t.Fatalf("start: %v\n%s", err, logs)
	}
	dev := devOf(t, mp)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("logs:\n%s", logs)
		}
		select {
		case <-s.Done():
		default:
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			if err := s.Shutdown(ctx); err != nil {
				t.Errorf("shutdown: %v", err)
			}
		}
		if mounted(t, mp) {
			abortConnection(dev, mp)
		}
	})
	return s
}

// checkRead reads path back from a separate process and checks it is the
// fileSize bytes of stream(seed).
func checkRead(t *testing.T, path string, seed uint64, what string) {
	t.Helper()
	sum, n := app(t, "read", path, 0, 0, fileSize+1, nil)
	if n != fileSize {
		t.Fatalf("read back %d bytes, want %d", n, fileSize)
	}
	if want := sumOf(seed, fileSize); sum != want {
		t.Fatalf("checksum %s: got %x, want %x", what, sum, want)
	}
}

const (
	fileSize  = 512 << 20
	killAfter = 128 << 20
)

// stream is a deterministic pseudo-random byte stream.
func stream(seed uint64) io.Reader {
	return rand.NewChaCha8([32]byte{byte(seed), byte(seed >> 8)})
}

func sumOf(seed uint64, n int64) [32]byte {
	h := sha256.New()
	io.CopyN(h, stream(seed), n)
	var s [32]byte
	copy(s[:], h.Sum(nil))
	return s
}

// progress calls at once, from the I/O goroutine, when n bytes have
// passed.
type progress struct {
	r    io.Reader
	w    io.Writer
	n    int64
	at   int64
	once sync.Once
	hit  func()
}

func (p *progress) count(n int) {
	p.n += int64(n)
	if p.n >= p.at {
		p.once.Do(p.hit)
	}
}

func (p *progress) Read(b []byte) (int, error) {
	n, err := p.r.Read(b)
	p.count(n)
	return n, err
}

func (p *progress) Write(b []byte) (int, error) {
	n, err := p.w.Write(b)
	p.count(n)
	return n, err
}

// killWorker SIGKILLs the current worker and returns its pid.
func killWorker(t *testing.T, s *supervisor.Supervisor) int {
	pid := s.WorkerPID()
	if pid == 0 {
		t.Error("no worker to kill")
		return 0
	}
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Errorf("kill worker %d: %v", pid, err)
	}
	return pid
}

// The application's I/O runs in another process, as in a pod: a process
// that holds files open on the mount must not fork+exec while the mount
// stalls (the child's exec closes, and so flushes, them), and the
// supervisor forks each new worker.
const appEnv = "SKIFF_SUPERVISOR_TEST_APP"

// appMain is the application process: "write" or "read" PATH SEED SIZE AT.
// It prints "at" after AT bytes and "sum HEX N" at the end.
func appMain(mode string) int {
	a := strings.Fields(mode)
	seed, _ := strconv.ParseUint(a[2], 10, 64)
	size, _ := strconv.ParseInt(a[3], 10, 64)
	at, _ := strconv.ParseInt(a[4], 10, 64)
	hit := func() { fmt.Println("at") }
	var (
		sum [32]byte
		n   int64
		err error
	)
	switch a[0] {
	case "write":
		err = writeFile(a[1], seed, size, at, hit)
		n = size
		sum = sumOf(seed, size)
	case "read":
		sum, n, err = readSum(a[1], at, hit)
	}
	if err != nil {
		fmt.Println("error:", err)
		return 1
	}
	fmt.Printf("sum %x %d\n", sum, n)
	return 0
}

// app runs appMain in a child process, calls hit when it reports "at",
// and returns its checksum and byte count.
func app(t *testing.T, mode, path string, seed uint64, size, at int64, hit func()) ([32]byte, int64) {
	t.Helper()
	var sum [32]byte
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), fmt.Sprintf("%s=%s %s %d %d %d", appEnv, mode, path, seed, size, at))
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	timer := time.AfterFunc(2*time.Minute, func() { cmd.Process.Kill() })
	defer timer.Stop()
	var lines []string
	sc := bufio.NewScanner(out)
	for sc.Scan() {
		line := sc.Text()
		lines = append(lines, line)
		if line == "at" && hit != nil {
			hit()
		}
	}
	err = cmd.Wait()
	var n int64
	var hexsum string
	if len(lines) > 0 {
		fmt.Sscanf(lines[len(lines)-1], "sum %s %d", &hexsum, &n)
	}
	if err != nil || hexsum == "" {
		t.Fatalf("%s %s: %v: %q", mode, path, err, lines)
	}
	b, err := hex.DecodeString(hexsum)
	if err != nil || len(b) != len(sum) {
		t.Fatalf("%s %s: bad checksum %q", mode, path, hexsum)
	}
	copy(sum[:], b)
	return sum, n
}

// writeFile streams size bytes of stream(seed) to path in 1 MiB writes,
// calling hit after at bytes; it returns the error of the write or close.
func writeFile(path string, seed uint64, size, at int64, hit func()) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	p := &progress{w: f, at: at, hit: hit}
	_, err = io.CopyBuffer(p, io.LimitReader(stream(seed), size), make([]byte, 1<<20))
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// readSum reads path in 1 MiB reads and returns its checksum and size.
func readSum(path string, at int64, hit func()) ([32]byte, int64, error) {
	var sum [32]byte
	f, err := os.Open(path)
	if err != nil {
		return sum, 0, err
	}
	defer f.Close()
	h := sha256.New()
	p := &progress{r: f, at: at, hit: hit}
	n, err := io.CopyBuffer(h, bufio.NewReaderSize(p, 1<<20), make([]byte, 1<<20))
	copy(sum[:], h.Sum(nil))
	return sum, n, err
}

func dropCaches(t *testing.T) {
	if err := os.WriteFile("/proc/sys/vm/drop_caches", []byte("3"), 0); err != nil {
		t.Logf("drop caches: %v", err)
	}
}

func waitGeneration(t *testing.T, s *supervisor.Supervisor, gen int) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for s.Generation() < gen || s.WorkerPID() == 0 {
		if time.Now().After(deadline) {
			t.Fatalf("no worker of generation %d (at %d)", gen, s.Generation())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestKillWorkerDuringWrite(t *testing.T) {
	s, _ := start(t, newVolume(t))
	path := filepath.Join(s.Mountpoint(), "big")
	var killed int
	app(t, "write", path, 1, fileSize, killAfter, func() { killed = killWorker(t, s) })
	if killed == 0 {
		t.Fatal("the worker was not killed during the write")
	}
	waitGeneration(t, s, 2)
	if s.WorkerPID() == killed {
		t.Fatal("the killed worker is still the current one")
	}
	dropCaches(t)
	checkRead(t, path, 1, "after a kill during the write")
}

func TestKillWorkerDuringRead(t *testing.T) {
	s, _ := start(t, newVolume(t))
	path := filepath.Join(s.Mountpoint(), "big")
	app(t, "write", path, 2, fileSize, fileSize+1, nil)
	dropCaches(t)
	var killed int
	sum, n := app(t, "read", path, 0, 0, killAfter, func() { killed = killWorker(t, s) })
	if n != fileSize {
		t.Fatalf("read through a worker kill: %d bytes, want %d", n, fileSize)
	}
	if killed == 0 {
		t.Fatal("the worker was not killed during the read")
	}
	if want := sumOf(2, fileSize); sum != want {
		t.Fatalf("checksum: got %x, want %x", sum, want)
	}
	waitGeneration(t, s, 2)
}

func TestUpgradeDuringRead(t *testing.T) {
	metaURL := newVolume(t)
	s, logs := start(t, metaURL)
	if v := s.WorkerVersion(); v != "v1" {
		t.Fatalf("first worker version %q, want v1", v)
	}
	old := s.WorkerPID()
	path := filepath.Join(s.Mountpoint(), "big")
	app(t, "write", path, 3, fileSize, fileSize+1, nil)
	dropCaches(t)
	var (
		version string
		uerr    error
	)
	done := make(chan struct{})
	sum, n := app(t, "read", path, 0, 0, killAfter, func() {
		// Upgrade waits for the reader's request in flight: run it
		// beside the reader, which goes on streaming.
		go func() {
			defer close(done)
			version, uerr = s.Upgrade(context.Background(), workerCmd(t, "v2", metaURL, logs))
		}()
	})
	if n != fileSize {
		t.Fatalf("read through an upgrade: %d bytes, want %d", n, fileSize)
	}
	if want := sumOf(3, fileSize); sum != want {
		t.Fatalf("checksum: got %x, want %x", sum, want)
	}
	select {
	case <-done:
	case <-time.After(60 * time.Second):
		t.Fatal("no upgrade happened during the read")
	}
	if uerr != nil {
		t.Fatalf("upgrade: %v", uerr)
	}
	if got := s.WorkerVersion(); got != "v2" || version != "v2" {
		t.Fatalf("after the upgrade the supervisor reports %q (Upgrade returned %q), want v2", got, version)
	}
	if s.WorkerPID() == old {
		t.Fatal("the worker process did not change")
	}
	// The new worker serves new opens and writes too.
	if err := os.WriteFile(filepath.Join(s.Mountpoint(), "after"), []byte("v2"), 0o644); err != nil {
		t.Fatal(err)
	}
}

// mounted reports whether mp is in this process's mount table.
func mounted(t *testing.T, mp string) bool {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) > 4 && f[4] == mp {
			return true
		}
	}
	return false
}

// TestSupervisedMountCommand runs `skiff mount --supervise` as a process:
// kill -9 of its worker, then SIGTERM: exit 0, mount gone.
func TestSupervisedMountCommand(t *testing.T) {
	metaURL := newVolume(t)
	bin := skiffBinary(t, "v1")
	mp := filepath.Join(t.TempDir(), "mnt")
	if err := os.Mkdir(mp, 0o755); err != nil {
		t.Fatal(err)
	}
	out := &syncbuf.Buffer{}
	cmd := exec.Command(bin, "mount", "--supervise", metaURL, mp)
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		syscall.Unmount(mp, syscall.MNT_DETACH)
		if t.Failed() {
			t.Logf("output:\n%s", out)
		}
	})
	waitFor(t, out, "supervised mount on")
	if !strings.Contains(out.String(), "version v1") {
		t.Fatalf("no worker version in %q", out)
	}
	if err := os.WriteFile(filepath.Join(mp, "a"), []byte("before"), 0o644); err != nil {
		t.Fatal(err)
	}
	worker := childOf(t, cmd.Process.Pid)
	syscall.Kill(worker, syscall.SIGKILL)
	if err := os.WriteFile(filepath.Join(mp, "b"), []byte("after"), 0o644); err != nil {
		t.Fatalf("write after the worker was killed: %v", err)
	}
	if b, err := os.ReadFile(filepath.Join(mp, "a")); err != nil || string(b) != "before" {
		t.Fatalf("read after the worker was killed: %q, %v", b, err)
	}
	cmd.Process.Signal(syscall.SIGTERM)
	errc := make(chan error, 1)
	go func() { errc <- cmd.Wait() }()
	select {
	case err := <-errc:
		if err != nil {
			t.Fatalf("skiff mount --supervise after SIGTERM: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("skiff mount --supervise did not exit after SIGTERM")
	}
	if mounted(t, mp) {
		t.Fatal("still mounted after SIGTERM")
	}
}

func waitFor(t *testing.T, out *syncbuf.Buffer, s string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !strings.Contains(out.String(), s) {
		if time.Now().After(deadline) {
			t.Fatalf("no %q in:\n%s", s, out)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// childOf returns the only child process of pid.
func childOf(t *testing.T, pid int) int {
	t.Helper()
	tasks, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/children", pid))
	for _, p := range tasks {
		b, _ := os.ReadFile(p)
		for _, f := range strings.Fields(string(b)) {
			if c, err := strconv.Atoi(f); err == nil {
				return c
			}
		}
	}
	t.Fatal("the supervisor has no worker process")
	return 0
}

// An upgrade delivered in place (a new binary renamed onto the worker's
// path) that does not start leaves the mount with the binary the
// supervisor was running, for the fallback and for later restarts.
func TestBrokenDeliveryKeepsPinnedBinary(t *testing.T) {
	metaURL := newVolume(t)
	dir := t.TempDir()
	path := filepath.Join(dir, "skiff")
	deliver := func(data []byte) {
		t.Helper()
		tmp := path + ".new"
		if err := os.WriteFile(tmp, data, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, path); err != nil {
			t.Fatal(err)
		}
	}
	v1, err := os.ReadFile(skiffBinary(t, "v1"))
	if err != nil {
		t.Fatal(err)
	}
	deliver(v1)
	logs := &syncbuf.Buffer{}
	cmd := supervisor.Command{Path: path, Args: []string{"__worker", metaURL}, Stderr: logs}
	s := startCmd(t, cmd, logs)
	file := filepath.Join(s.Mountpoint(), "f")
	if err := os.WriteFile(file, []byte("before"), 0o644); err != nil {
		t.Fatal(err)
	}

	deliver([]byte("#!/bin/sh\nexit 3\n"))
	if _, err := s.Upgrade(context.Background(), cmd); err == nil {
		t.Fatal("upgrade to a broken binary succeeded")
	}
	if v := s.WorkerVersion(); v != "v1" {
		t.Fatalf("after a failed upgrade the worker is %q, want v1 (the pinned binary)", v)
	}
	// A crash now restarts the pinned binary too, not the broken file.
	gen := s.Generation()
	killWorker(t, s)
	waitGeneration(t, s, gen+1)
	if v := s.WorkerVersion(); v != "v1" {
		t.Fatalf("after a crash the worker is %q, want v1", v)
	}
	// The read-ahead the supervisor set on the mount survives restarts.
	if ra, err := fuse.ReadAhead(s.Mountpoint()); err != nil || ra != fuse.DefaultReadAhead {
		t.Errorf("read-ahead after a restart: %d, %v; want %d", ra, err, fuse.DefaultReadAhead)
	}
	if b, err := os.ReadFile(file); err != nil || string(b) != "before" {
		t.Fatalf("read after the failed upgrade: %q, %v", b, err)
	}

	v2, err := os.ReadFile(skiffBinary(t, "v2"))
	if err != nil {
		t.Fatal(err)
	}
	deliver(v2)
	if v, err := s.Upgrade(context.Background(), cmd); err != nil || v != "v2" {
		t.Fatalf("upgrade to a good delivery: %q, %v", v, err)
	}
}
