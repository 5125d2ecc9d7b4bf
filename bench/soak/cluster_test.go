package soak

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/fsouza/fake-gcs-server/fakestorage"
	"golang.org/x/sys/unix"

	"github.com/skiff-fs/skiff/internal/testredis"
)

// stats counts what the run did, for the summary.
type stats struct {
	mu        sync.Mutex
	ops       map[string]int // successful operations by kind
	failed    map[string]int // failed operations by kind
	errnos    map[string]int // errors of failed operations by errno
	faults    map[string]int // faults injected by kind
	hangs     []string
	anomalies []string // wrong bytes returned without an error during the run
	killed    int      // client processes killed -9 and remounted
}

func newStats() *stats {
	return &stats{ops: map[string]int{}, failed: map[string]int{}, errnos: map[string]int{}, faults: map[string]int{}}
}

func (s *stats) op(kind string, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err == nil {
		s.ops[kind]++
		return
	}
	s.failed[kind]++
	s.errnos[errnoName(err)]++
}

func (s *stats) fault(kind string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.faults[kind]++
}

func (s *stats) anomaly(format string, args ...any) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.anomalies = append(s.anomalies, fmt.Sprintf(format, args...))
}

func (s *stats) hang(format string, args ...any) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.hangs = append(s.hangs, fmt.Sprintf(format, args...))
}

// errnoName names err's errno (EIO, ENOTCONN, ...), or "other".
func errnoName(err error) string {
	var e syscall.Errno
	if errors.As(err, &e) {
		if n := unix.ErrnoName(e); n != "" {
			return n
		}
		return e.Error()
	}
	return "other: " + err.Error()
}

// total sums a counter map.
func total(m map[string]int) int {
	n := 0
	for _, v := range m {
		n += v
	}
	return n
}

// sortedCounts prints a counter map as "a 3, b 1" in key order.
func sortedCounts(m map[string]int) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	for i, k := range keys {
		if i > 0 {
			b.WriteString(", ")
		}
		fmt.Fprintf(&b, "%s %d", k, m[k])
	}
	if b.Len() == 0 {
		return "none"
	}
	return b.String()
}

// faultProxy is a reverse proxy on loopback in front of the GCS
// emulator that answers a share of requests with 503 (before or after
// passing them on) and delays another share.
type faultProxy struct {
	target  *httputil.ReverseProxy
	errRate float64       // share of requests failed
	delay   float64       // share of requests delayed
	maxLat  time.Duration // the longest added delay
	on      atomic.Bool

	mu  sync.Mutex
	rng *rand.Rand

	requests, errorsBefore, errorsAfter, delayed atomic.Int64
}

func (p *faultProxy) roll() (errBefore, errAfter bool, lat time.Duration) {
	p.mu.Lock()
	defer p.mu.Unlock()
	r := p.rng.Float64()
	switch {
	case r < p.errRate*2/3:
		errBefore = true
	case r < p.errRate:
		errAfter = true
	}
	if p.rng.Float64() < p.delay {
		lat = time.Duration(p.rng.Int64N(int64(p.maxLat) + 1))
	}
	return
}

func (p *faultProxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	p.requests.Add(1)
	if !p.on.Load() {
		p.target.ServeHTTP(w, r)
		return
	}
	errBefore, errAfter, lat := p.roll()
	if lat > 0 {
		p.delayed.Add(1)
		time.Sleep(lat)
	}
	switch {
	case errBefore:
		p.errorsBefore.Add(1)
		http.Error(w, "soak: injected error", http.StatusServiceUnavailable)
	case errAfter:
		// The request takes effect, but the caller is told it failed.
		p.errorsAfter.Add(1)
		p.target.ServeHTTP(httptest.NewRecorder(), r)
		http.Error(w, "soak: injected error after the fact", http.StatusServiceUnavailable)
	default:
		p.target.ServeHTTP(w, r)
	}
}

// startGCS starts the GCS emulator with the bucket behind a fault proxy
// and returns the proxy's "127.0.0.1:PORT", for STORAGE_EMULATOR_HOST.
// The emulator's public host is the proxy, so upload sessions it hands
// out go through the faults too.
func startGCS(t *testing.T, bucket string, seed uint64, errRate float64, maxLat time.Duration) (*faultProxy, string) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	proxyAddr := ln.Addr().String()
	var srv *fakestorage.Server
	for range 5 {
		port, perr := freePort()
		if perr != nil {
			t.Fatal(perr)
		}
		srv, err = fakestorage.NewServerWithOptions(fakestorage.Options{
			Scheme:     "http",
			Host:       "127.0.0.1",
			Port:       port,
			PublicHost: proxyAddr,
			Writer:     discard{},
		})
		if err == nil {
			break
		}
	}
	if err != nil {
		ln.Close()
		t.Fatalf("start the GCS emulator: %v", err)
	}
	t.Cleanup(srv.Stop)
	srv.CreateBucketWithOpts(fakestorage.CreateBucketOpts{Name: bucket})
	u, _ := url.Parse(srv.URL())
	p := &faultProxy{
		target:  httputil.NewSingleHostReverseProxy(u),
		errRate: errRate,
		delay:   0.2,
		maxLat:  maxLat,
		rng:     rand.New(rand.NewPCG(seed, 7)),
	}
	p.target.ErrorLog = log.New(io.Discard, "", 0) // a caller gone away is no news here
	hs := &http.Server{Handler: p, ReadHeaderTimeout: 10 * time.Second}
	go hs.Serve(ln)
	t.Cleanup(func() { hs.Close() })
	return p, proxyAddr
}

type discard struct{}

func (discard) Write(p []byte) (int, error) { return len(p), nil }

func freePort() (uint16, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return uint16(l.Addr().(*net.TCPAddr).Port), nil
}

// cluster is the volume under test: Redis, the object store, the skiff
// binary and the environment its processes run in.
type cluster struct {
	t       *testing.T
	skiff   string
	dir     string
	env     []string
	metaURL string
	redis   *testredis.Server
	proxy   *faultProxy // nil for a directory store
	st      *stats

	// faultMu serialises faults (and the hang watchdog's remounts).
	faultMu sync.Mutex
}

// run runs a skiff sub-command to completion (bounded by timeout) and
// returns its combined output.
func (c *cluster) run(timeout time.Duration, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, c.skiff, args...)
	cmd.Env = c.env
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	out, err := cmd.CombinedOutput()
	if ctx.Err() != nil {
		err = fmt.Errorf("timed out after %v: %w", timeout, err)
	}
	return string(out), err
}

// client is one `skiff mount` process on its own mountpoint, remounted
// after each kill. Operations on the mount hold gate for reading; a
// remount holds it for writing, so no operation ever reaches the empty
// directory under a detached mount.
type client struct {
	id  int
	c   *cluster
	mnt string

	gate sync.RWMutex
	gen  int // the mount's generation; changes under gate
	cmd  *exec.Cmd
	done chan struct{} // closed when cmd has exited

	opStart atomic.Int64 // UnixNano when the operation in flight began, 0 if none
	opName  atomic.Value // its description
}

// isMounted reports whether mnt is a mount point in mountinfo (the
// test's temporary paths hold no characters mountinfo escapes).
func isMounted(mnt string) bool {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return false
	}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) > 4 && f[4] == mnt {
			return true
		}
	}
	return false
}

// mount starts `skiff mount` (gate held for writing, or before the
// workers start) and waits until the mount is up.
func (cl *client) mount() error {
	c := cl.c
	logf, err := os.Create(filepath.Join(c.dir, fmt.Sprintf("client%d.gen%d.log", cl.id, cl.gen)))
	if err != nil {
		return err
	}
	defer logf.Close()
	cmd := exec.Command(c.skiff, "mount",
		"--cache-dir", filepath.Join(c.dir, fmt.Sprintf("cache%d", cl.id)),
		"--cache-size", "1G", "--cache-mem", "16M", "--buffer-size", "64M",
		c.metaURL, cl.mnt)
	cmd.Env = c.env
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return err
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	cl.cmd, cl.done = cmd, done
	deadline := time.Now().Add(60 * time.Second)
	for !isMounted(cl.mnt) {
		select {
		case <-done:
			return fmt.Errorf("client %d: skiff mount exited: %v (log %s)", cl.id, cmd.ProcessState, logf.Name())
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			cmd.Process.Kill()
			<-done
			return fmt.Errorf("client %d: not mounted after 60s (log %s)", cl.id, logf.Name())
		}
	}
	return nil
}

// detach lazily unmounts whatever is mounted at mnt.
func (cl *client) detach() {
	for i := 0; i < 10 && isMounted(cl.mnt); i++ {
		if err := syscall.Unmount(cl.mnt, syscall.MNT_DETACH); err != nil {
			exec.Command("fusermount3", "-u", "-z", cl.mnt).Run()
		}
	}
}

// killRemount kills the mount process with SIGKILL, detaches its dead
// mount and mounts again. The caller holds c.faultMu.
func (cl *client) killRemount() error {
	if cl.cmd != nil {
		cl.cmd.Process.Kill()
		<-cl.done
	}
	// The operation in flight now fails (ENOTCONN); wait for it to end.
	cl.gate.Lock()
	defer cl.gate.Unlock()
	cl.detach()
	cl.gen++
	var err error
	for range 3 {
		if err = cl.mount(); err == nil {
			return nil
		}
		time.Sleep(time.Second)
	}
	return err
}

// unmount stops the mount process with SIGTERM (it flushes and
// unmounts), waiting at most limit, then kills it. It reports whether
// the process stopped by itself.
func (cl *client) unmount(limit time.Duration) (clean bool) {
	cl.gate.Lock()
	defer cl.gate.Unlock()
	if cl.cmd == nil {
		return true
	}
	cl.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-cl.done:
		clean = cl.cmd.ProcessState.Success()
	case <-time.After(limit):
		cl.cmd.Process.Kill()
		<-cl.done
	}
	cl.detach()
	cl.cmd = nil
	return clean
}

// begin and end mark the operation in flight, for the hang watchdog.
func (cl *client) begin(what string) {
	cl.opName.Store(what)
	cl.opStart.Store(time.Now().UnixNano())
}

func (cl *client) end() { cl.opStart.Store(0) }

// restartRedis stops Redis (SIGTERM, or SIGKILL when kill), leaves it
// down for down, and starts it again on the same port.
func (c *cluster) restartRedis(kill bool, down time.Duration) error {
	if kill {
		c.redis.Kill()
	} else {
		c.redis.Stop()
	}
	time.Sleep(down)
	return c.redis.StartAgain()
}

// readTree reads every regular file and directory under the given
// directories of root (paths relative to root, the directories included).
func readTree(root string, tops []string) (files map[string][]byte, dirs map[string]bool, err error) {
	files, dirs = map[string][]byte{}, map[string]bool{}
	for _, top := range tops {
		err = filepath.WalkDir(filepath.Join(root, top), func(p string, d os.DirEntry, err error) error {
			if err != nil {
				if os.IsNotExist(err) && p == filepath.Join(root, top) {
					return nil // a missing worker directory: Verify reports it
				}
				return err
			}
			rel, _ := filepath.Rel(root, p)
			switch {
			case d.IsDir():
				dirs[rel] = true
			case d.Type().IsRegular():
				b, err := os.ReadFile(p)
				if err != nil {
					return err
				}
				files[rel] = b
			default:
				files[rel] = nil
			}
			return nil
		})
		if err != nil {
			return files, dirs, err
		}
	}
	return files, dirs, nil
}

// moduleRoot is the directory of the main module's go.mod.
func moduleRoot(t *testing.T) string {
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		t.Fatalf("go env GOMOD: %v", err)
	}
	mod := strings.TrimSpace(string(out))
	if mod == "" || mod == os.DevNull {
		t.Fatal("not inside the skiff module")
	}
	return filepath.Dir(mod)
}

// buildSkiff builds ./cmd/skiff into dir.
func buildSkiff(t *testing.T, dir string) string {
	bin := filepath.Join(dir, "skiff")
	cmd := exec.Command("go", "build", "-o", bin, "./cmd/skiff")
	cmd.Dir = moduleRoot(t)
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build skiff: %v\n%s", err, out)
	}
	return bin
}

// durationSetting is the -soak.duration flag, else $SOAK_DURATION, else
// def.
func durationSetting(flagVal time.Duration, def time.Duration) (time.Duration, error) {
	if flagVal > 0 {
		return flagVal, nil
	}
	if s := os.Getenv("SOAK_DURATION"); s != "" {
		d, err := time.ParseDuration(s)
		if err != nil {
			if n, nerr := strconv.Atoi(s); nerr == nil {
				return time.Duration(n) * time.Second, nil
			}
			return 0, fmt.Errorf("SOAK_DURATION=%q: %w", s, err)
		}
		return d, nil
	}
	return def, nil
}

// logTail is the last lines of a file that mention needle.
func grepFile(path, needle string, limit int) []string {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil
	}
	var out []string
	for _, line := range bytes.Split(b, []byte("\n")) {
		if bytes.Contains(line, []byte(needle)) {
			out = append(out, string(line))
			if len(out) >= limit {
				break
			}
		}
	}
	return out
}
