package driver_test

import (
	"bufio"
	"context"
	"crypto/sha256"
	"errors"
	"io"
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

	"github.com/container-storage-interface/spec/lib/go/csi"
	"golang.org/x/sys/unix"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/skiff-fs/skiff/csi/internal/mnt"

	"github.com/skiff-fs/skiff/internal/syncbuf"
)

// driverProc is the CSI driver running as a process of its own (this
// test binary, see runDriver), as csi-node runs in its container.
type driverProc struct {
	t     *testing.T
	ep    string
	msock string
	logs  *syncbuf.Buffer
	cmd   *exec.Cmd
	done  chan struct{}
	conn  *grpc.ClientConn
}

func startDriver(t *testing.T, ep, msock string, logs *syncbuf.Buffer) *driverProc {
	t.Helper()
	p := &driverProc{t: t, ep: ep, msock: msock, logs: logs}
	p.start()
	t.Cleanup(func() {
		if p.cmd != nil {
			_ = p.cmd.Process.Signal(syscall.SIGTERM)
			<-p.done
		}
		if p.conn != nil {
			p.conn.Close()
		}
	})
	return p
}

func (p *driverProc) start() {
	t := p.t
	t.Helper()
	p.cmd = exec.Command(os.Args[0], "-test.run=^$")
	p.cmd.Env = append(os.Environ(), envDriver+"="+p.ep+"|"+p.msock)
	p.cmd.Stdout, p.cmd.Stderr = p.logs, p.logs
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p.done = make(chan struct{})
	go func(cmd *exec.Cmd, done chan struct{}) {
		_ = cmd.Wait()
		close(done)
	}(p.cmd, p.done)
	conn, err := grpc.NewClient(p.ep, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	p.conn = conn
	// Ready when Probe answers.
	deadline := time.Now().Add(30 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		r, err := csi.NewIdentityClient(conn).Probe(ctx, &csi.ProbeRequest{})
		cancel()
		if err == nil && r.GetReady().GetValue() {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the driver did not become ready: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// kill SIGKILLs the driver, as a crash or an eviction of csi-node would.
func (p *driverProc) kill() {
	_ = p.cmd.Process.Kill()
	<-p.done
	p.conn.Close()
	p.cmd, p.conn = nil, nil
}

func (p *driverProc) node() csi.NodeClient             { return csi.NewNodeClient(p.conn) }
func (p *driverProc) controller() csi.ControllerClient { return csi.NewControllerClient(p.conn) }

func rwx() *csi.VolumeCapability {
	return &csi.VolumeCapability{
		AccessType: &csi.VolumeCapability_Mount{Mount: &csi.VolumeCapability_MountVolume{}},
		AccessMode: &csi.VolumeCapability_AccessMode{Mode: csi.VolumeCapability_AccessMode_MULTI_NODE_MULTI_WRITER},
	}
}

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

// hitReader calls hit once, from the reading goroutine, after at bytes.
type hitReader struct {
	r    io.Reader
	n    int64
	at   int64
	once sync.Once
	hit  func()
}

func (p *hitReader) Read(b []byte) (int, error) {
	n, err := p.r.Read(b)
	p.n += int64(n)
	if p.n >= p.at {
		p.once.Do(p.hit)
	}
	return n, err
}

// workerOf returns the child process of pid (the supervisor's worker),
// or 0.
func workerOf(pid int) int {
	tasks, _ := filepath.Glob("/proc/" + strconv.Itoa(pid) + "/task/*/children")
	for _, f := range tasks {
		b, _ := os.ReadFile(f)
		for _, c := range strings.Fields(string(b)) {
			if n, err := strconv.Atoi(c); err == nil {
				return n
			}
		}
	}
	return 0
}

func waitWorker(t *testing.T, sup, not int) int {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		if w := workerOf(sup); w != 0 && w != not {
			return w
		}
		if time.Now().After(deadline) {
			t.Fatalf("supervisor %d has no worker other than %d", sup, not)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestTwoTargets stages a volume once, publishes it to two target paths
// (and a third read-only), writes through one and reads through the
// other; kills the client's worker process in the middle of a read,
// which completes with the right bytes; kills and restarts the gRPC
// driver process, after which both targets keep working and the new
// driver serves the volume; and checks that unpublish and unstage leave
// no mount and no client process behind.
func TestTwoTargets(t *testing.T) {
	metaURL := newVolume(t)
	dir := t.TempDir()
	detachAllUnder(t, dir)
	logs, out := &syncbuf.Buffer{}, &syncbuf.Buffer{}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("driver and mounter log:\n%s\nskiff output:\n%s", logs, out)
		}
	})
	msock, ms := startMounter(t, dir, logs, out)
	drv := startDriver(t, "unix://"+filepath.Join(dir, "csi.sock"), msock, logs)
	ctx := context.Background()
	secrets := map[string]string{"metaurl": metaURL}

	// A PVC's directory, made by the controller.
	cv, err := drv.controller().CreateVolume(ctx, &csi.CreateVolumeRequest{
		Name: "pvc-two-targets", VolumeCapabilities: []*csi.VolumeCapability{rwx()},
		CapacityRange: &csi.CapacityRange{RequiredBytes: 1 << 30}, Secrets: secrets,
		Parameters: map[string]string{"root": "k8s", "onDelete": "delete"},
	})
	if err != nil {
		t.Fatal(err)
	}
	vol := cv.GetVolume()
	if vol.GetCapacityBytes() != 1<<30 || vol.GetVolumeContext()["subdir"] != "k8s/pvc-two-targets" {
		t.Fatalf("CreateVolume: %v", vol)
	}
	id := vol.GetVolumeId()

	staging := filepath.Join(dir, "globalmount")
	if err := os.Mkdir(staging, 0o750); err != nil {
		t.Fatal(err)
	}
	if _, err := drv.node().NodeStageVolume(ctx, &csi.NodeStageVolumeRequest{
		VolumeId: id, StagingTargetPath: staging, VolumeCapability: rwx(), VolumeContext: vol.GetVolumeContext(), Secrets: secrets,
	}); err != nil {
		t.Fatal(err)
	}
	if top, ok, _ := mnt.Top(staging); !ok || top.FsType != "fuse.skiff" {
		t.Fatalf("staging path: %+v", top)
	}
	vs := ms.Volumes()
	if len(vs) != 1 || vs[0].PID == 0 || vs[0].VolumeID != id {
		t.Fatalf("mounter volumes: %+v", vs)
	}
	sup := vs[0].PID

	publish := func(target string, ro bool) {
		t.Helper()
		if _, err := drv.node().NodePublishVolume(ctx, &csi.NodePublishVolumeRequest{
			VolumeId: id, StagingTargetPath: staging, TargetPath: target, VolumeCapability: rwx(),
			VolumeContext: vol.GetVolumeContext(), Readonly: ro,
		}); err != nil {
			t.Fatalf("publish %s: %v", target, err)
		}
	}
	pods := filepath.Join(dir, "pods")
	t1, t2, t3 := filepath.Join(pods, "a", "mount"), filepath.Join(pods, "b", "mount"), filepath.Join(pods, "c", "mount")
	publish(t1, false)
	publish(t2, false)
	publish(t3, true)
	publish(t2, false) // idempotent

	// A small file both ways, and the read-only target refuses writes.
	if err := os.WriteFile(filepath.Join(t1, "hello"), []byte("from a"), 0o644); err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(filepath.Join(t2, "hello")); err != nil || string(b) != "from a" {
		t.Fatalf("read through the second target: %q, %v", b, err)
	}
	if b, err := os.ReadFile(filepath.Join(t3, "hello")); err != nil || string(b) != "from a" {
		t.Fatalf("read through the read-only target: %q, %v", b, err)
	}
	if err := os.WriteFile(filepath.Join(t3, "nope"), nil, 0o644); !errors.Is(err, syscall.EROFS) {
		t.Fatalf("write through the read-only target: %v, want EROFS", err)
	}

	// Unstage while published is refused: the staging mount is shared.
	if _, err := drv.node().NodeUnstageVolume(ctx, &csi.NodeUnstageVolumeRequest{VolumeId: id, StagingTargetPath: staging}); status.Code(err) != codes.FailedPrecondition {
		t.Fatalf("unstage while published: %v, want FailedPrecondition", err)
	}

	// A large file written through the first target, read through the
	// second while the worker serving the volume is killed.
	const size, killAt = 96 << 20, 24 << 20
	big := filepath.Join(t1, "big")
	f, err := os.Create(big)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.CopyBuffer(f, io.LimitReader(stream(7), size), make([]byte, 1<<20)); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	worker := waitWorker(t, sup, 0)
	r, err := os.Open(filepath.Join(t2, "big"))
	if err != nil {
		t.Fatal(err)
	}
	// Drop the file's pages so that the read goes to the worker.
	if err := unix.Fadvise(int(r.Fd()), 0, 0, unix.FADV_DONTNEED); err != nil {
		t.Fatal(err)
	}
	killed := false
	hr := &hitReader{r: r, at: killAt, hit: func() {
		killed = syscall.Kill(worker, syscall.SIGKILL) == nil
	}}
	h := sha256.New()
	n, err := io.CopyBuffer(h, bufio.NewReaderSize(hr, 1<<20), make([]byte, 1<<20))
	r.Close()
	if err != nil || n != size {
		t.Fatalf("read through a worker kill: %d bytes, %v", n, err)
	}
	if !killed {
		t.Fatalf("the worker %d was not killed during the read", worker)
	}
	var got [32]byte
	copy(got[:], h.Sum(nil))
	if got != sumOf(7, size) {
		t.Fatal("the bytes read through the worker kill differ from those written")
	}
	if w := waitWorker(t, sup, worker); w == worker {
		t.Fatal("no new worker")
	}
	if vs := ms.Volumes(); len(vs) != 1 || vs[0].PID != sup || vs[0].Starts != 1 {
		t.Fatalf("the supervisor itself was restarted: %+v", vs)
	}

	// csi-node crashes and comes back: the mounts are not its.
	drv.kill()
	for _, p := range []string{t1, t2} {
		if err := os.WriteFile(filepath.Join(p, "while-down-"+filepath.Base(filepath.Dir(p))), []byte(p), 0o644); err != nil {
			t.Fatalf("write through %s while the driver is down: %v", p, err)
		}
	}
	drv.start()
	if b, err := os.ReadFile(filepath.Join(t1, "while-down-b")); err != nil || string(b) != t2 {
		t.Fatalf("after the driver restart, read through the first target: %q, %v", b, err)
	}
	if b, err := os.ReadFile(filepath.Join(t2, "while-down-a")); err != nil || string(b) != t1 {
		t.Fatalf("after the driver restart, read through the second target: %q, %v", b, err)
	}
	st, err := drv.node().NodeGetVolumeStats(ctx, &csi.NodeGetVolumeStatsRequest{VolumeId: id, VolumePath: t1})
	if err != nil || len(st.GetUsage()) != 2 || st.GetUsage()[1].GetUsed() < 3 {
		t.Fatalf("stats after the driver restart: %v, %v", st, err)
	}
	// The new driver publishes and unpublishes too.
	t4 := filepath.Join(pods, "d", "mount")
	publish(t4, false)
	if b, err := os.ReadFile(filepath.Join(t4, "hello")); err != nil || string(b) != "from a" {
		t.Fatalf("read through a target published by the new driver: %q, %v", b, err)
	}

	for _, p := range []string{t1, t2, t3, t4} {
		if _, err := drv.node().NodeUnpublishVolume(ctx, &csi.NodeUnpublishVolumeRequest{VolumeId: id, TargetPath: p}); err != nil {
			t.Fatalf("unpublish %s: %v", p, err)
		}
		if _, err := os.Stat(p); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("target %s left behind: %v", p, err)
		}
	}
	if _, err := drv.node().NodeUnpublishVolume(ctx, &csi.NodeUnpublishVolumeRequest{VolumeId: id, TargetPath: t1}); err != nil {
		t.Fatalf("unpublish again: %v", err)
	}
	if _, err := drv.node().NodeUnstageVolume(ctx, &csi.NodeUnstageVolumeRequest{VolumeId: id, StagingTargetPath: staging}); err != nil {
		t.Fatal(err)
	}
	noMountsUnder(t, dir)
	if vs := ms.Volumes(); len(vs) != 0 {
		t.Errorf("mounter still has volumes: %+v", vs)
	}
	if err := syscall.Kill(sup, 0); err == nil {
		t.Errorf("the supervisor %d still runs after unstage", sup)
	}
	if _, err := drv.controller().DeleteVolume(ctx, &csi.DeleteVolumeRequest{VolumeId: id, Secrets: secrets}); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(logs.String(), redisPassword) {
		t.Errorf("the driver or the mounter logged the META_URL's password")
	}
}
