package pod

import (
	"bufio"
	"context"
	"crypto/rand"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/fsouza/fake-gcs-server/fakestorage"

	"github.com/skiff-fs/skiff/fsclient/object/gcs/gcstest"
	"github.com/skiff-fs/skiff/fsclient/volume"
	"github.com/skiff-fs/skiff/internal/testredis"
	"github.com/skiff-fs/skiff/sidecar/contract"
)

// slowGCS starts a fake GCS server that keeps objects on disk (so 3 GiB
// do not sit in this process) behind a proxy that delays every request
// by delay: a slow object store. It returns the proxy's and the
// server's host:port.
func slowGCS(t *testing.T, delay time.Duration, bucket string) (slow, fast string) {
	t.Helper()
	port := freePort(t)
	fast = net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	srv, err := fakestorage.NewServerWithOptions(fakestorage.Options{
		Scheme: "http", Host: "127.0.0.1", Port: uint16(port), PublicHost: fast,
		StorageRoot: t.TempDir(), Writer: io.Discard,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Stop)
	gcstest.CreateBucket(t, fast, bucket)
	target, _ := url.Parse("http://" + fast)
	proxy := httputil.NewSingleHostReverseProxy(target)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	hs := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		time.Sleep(delay)
		proxy.ServeHTTP(w, r)
	})}
	go hs.Serve(ln)
	t.Cleanup(func() { hs.Close() })
	return ln.Addr().String(), fast
}

// vmHWM is the peak resident set of pid in bytes (/proc/pid/status).
func vmHWM(t *testing.T, pid int) int64 {
	t.Helper()
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmHWM:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			if err != nil {
				t.Fatal(err)
			}
			return kb << 10
		}
	}
	t.Fatal("no VmHWM")
	return 0
}

// TestMemoryBudget writes 3 GiB through the sidecar to an object store
// that answers every request 300 ms late: writers must stall on the write
// buffer budget, and the sidecar's peak RSS must stay under its memory
// budget (write buffer + cache memory) + 150 MiB.
func TestMemoryBudget(t *testing.T) {
	const (
		total    = 3 << 30
		gomemlim = 1 << 30 // the budget is then min(300M, 25%) + min(64M, 10%)
		slack    = 150 << 20
	)
	redis := testredis.Start(t)
	slow, fast := slowGCS(t, 300*time.Millisecond, "slow-bucket")
	ctx := context.Background()
	t.Setenv(gcstest.EnvHost, fast)
	if _, err := volume.Create(ctx, volume.FormatConfig{MetaURL: redis.URL(), Name: "mem", Bucket: "gs://slow-bucket/v"}); err != nil {
		t.Fatal(err)
	}
	root := t.TempDir()
	secretDir := filepath.Join(root, "secrets", "mem")
	os.MkdirAll(secretDir, 0o700)
	os.WriteFile(filepath.Join(secretDir, contract.SecretKeyMetaURL), []byte(redis.URL()), 0o400)
	mp := filepath.Join(root, "skiff", "mem")
	vols, _ := contract.MarshalVolumes([]contract.Volume{{Name: "mem", MountPath: mp, SecretDir: secretDir}})
	port := freePort(t)
	cmd := exec.Command(sidecarBinary(t))
	cmd.Env = append(os.Environ(),
		gcstest.EnvHost+"="+slow,
		"GOMEMLIMIT="+strconv.Itoa(gomemlim),
		contract.EnvVolumes+"="+vols,
		contract.EnvProbePort+"="+strconv.Itoa(port),
		"SKIFF_CACHE_DIR="+filepath.Join(root, "cache"),
		"SKIFF_STAGE_DIR="+filepath.Join(root, "stage"),
		"SKIFF_GRACE_PERIOD=60s",
	)
	sc := startCmd(t, "sidecar", cmd)
	waitReady(t, port, sc, 60*time.Second)
	budget := int64(256<<20) + 64<<20 // write buffer + cache memory (min(64M, 10% of GOMEMLIMIT))
	if !strings.Contains(sc.out.String(), "bufferBytes="+strconv.Itoa(256<<20)) {
		t.Fatalf("the write buffer was not sized from GOMEMLIMIT:\n%s", sc.out.String())
	}

	start := time.Now()
	f, err := os.Create(filepath.Join(mp, "big"))
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 1<<20)
	rand.Read(buf)
	var peakDuring int64
	for off := 0; off < total; off += len(buf) {
		buf[0], buf[1] = byte(off>>20), byte(off>>28) // every MiB differs
		if _, err := f.Write(buf); err != nil {
			t.Fatal(err)
		}
		if off%(256<<20) == 0 {
			peakDuring = max(peakDuring, vmHWM(t, sc.cmd.Process.Pid))
		}
	}
	if err := f.Close(); err != nil { // waits for the upload
		t.Fatal(err)
	}
	el := time.Since(start)
	peak := vmHWM(t, sc.cmd.Process.Pid)
	t.Logf("3 GiB written in %s (%.0f MiB/s) to a store with 300 ms per request; sidecar peak RSS (VmHWM) %d MiB; budget %d MiB (write buffer 256 MiB + cache memory 64 MiB); limit budget + 150 MiB = %d MiB; peak seen while writing %d MiB",
		el.Round(time.Millisecond), float64(total>>20)/el.Seconds(), peak>>20, budget>>20, (budget+slack)>>20, peakDuring>>20)
	if peak > budget+slack {
		t.Errorf("peak RSS %d MiB exceeds the budget %d MiB + 150 MiB", peak>>20, budget>>20)
	}
	var st syscall.Stat_t
	if err := syscall.Stat(filepath.Join(mp, "big"), &st); err != nil || st.Size != total {
		t.Fatalf("size after close: %d, %v", st.Size, err)
	}
	if err := sc.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if code := sc.wait(t, 60*time.Second); code != 0 {
		t.Fatalf("sidecar exited %d", code)
	}
}
