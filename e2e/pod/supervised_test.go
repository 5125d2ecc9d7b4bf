package pod

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
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
	"github.com/skiff-fs/skiff/sidecar/telemetry"
)

// streamSize is the size of the streamed reads and writes: large enough
// that the worker is killed while data flows.
const streamSize = 256 << 20

// TestPodSupervised runs the miniature pod with the sidecar in
// supervised mode (one `skiff mount --supervise` per volume) on a
// Redis + GCS emulator volume whose META_URL holds a password:
//   - no command line of the sidecar's processes shows the password;
//   - the sidecar's /metrics carries the worker's counters and FUSE
//     operation metrics, with the volume label;
//   - kill -9 of the worker during a streaming write and during a
//     streaming read in an app container: both complete without error
//     and the checksums match;
//   - an upgrade hand-off (a second skiff binary with another version,
//     delivered at the worker binary's path, SIGUSR2 to the sidecar)
//     while the app reads: no error, the new worker reports the new
//     version;
//   - SIGTERM with a file open and dirty: the data reaches the object
//     store, the mount leaves the app's namespace, exit 0;
//   - container restart (the sidecar killed, its supervisor with it):
//     the new sidecar mounts again and new opens succeed.
func TestPodSupervised(t *testing.T) {
	const password = "pod-s3cret-Pw"
	redis := testredis.Start(t, testredis.WithPassword(password))
	gcstest.Start(t, "sup-bucket")
	if !strings.Contains(redis.URL(), password) {
		t.Fatalf("the meta URL %q does not hold the password", redis.URL())
	}
	ctx := context.Background()
	if _, err := volume.Create(ctx, volume.FormatConfig{MetaURL: redis.URL(), Name: "data", Bucket: "gs://sup-bucket/vols"}); err != nil {
		t.Fatal(err)
	}
	v1, v2 := skiffBinaries(t)
	// The worker binary lives where a new one can be delivered (a shared
	// volume, in a real pod).
	deliver := filepath.Join(t.TempDir(), "skiff")
	copyFile(t, v1, deliver)
	p := newMiniPod(t, redis.URL(), "SKIFF_MOUNT_MODE=supervised", "SKIFF_BINARY="+v1, "SKIFF_WORKER_BINARY="+deliver)
	statusPath := filepath.Join(p.stageDir, "data.status")

	sc := p.startSidecar("sidecar-1")
	app := p.startApp()
	waitFor(t, "the app's first write", 60*time.Second, func() bool { return strings.Contains(app.out.String(), "app-ok") })
	st := readStatus(t, statusPath)
	if st.Generation != 1 || st.WorkerVersion != skiffV1Ver {
		t.Fatalf("status after the start: %+v", st)
	}

	t.Run("no password on a command line", func(t *testing.T) {
		procs := descendants(t, sc.cmd.Process.Pid)
		var sawSupervisor, sawWorker bool
		for pid, cmdline := range procs {
			if strings.Contains(cmdline, password) {
				t.Errorf("process %d shows the META_URL's password: %q", pid, cmdline)
			}
			if strings.Contains(cmdline, redis.Addr()) {
				t.Errorf("process %d shows the META_URL: %q", pid, cmdline)
			}
			sawSupervisor = sawSupervisor || (pid == st.PID && strings.Contains(cmdline, "--supervise") && strings.Contains(cmdline, "--meta-url-file"))
			sawWorker = sawWorker || (pid == st.WorkerPID && strings.Contains(cmdline, "__worker") && strings.Contains(cmdline, "--meta-url-file"))
		}
		if !sawSupervisor || !sawWorker {
			t.Errorf("supervisor %d seen: %v, worker %d seen: %v, among the sidecar's processes %v", st.PID, sawSupervisor, st.WorkerPID, sawWorker, procs)
		}
	})

	t.Run("metrics of the worker", func(t *testing.T) {
		m0 := scrape(t, p.port)
		puts0 := m0.value(t, "skiff_object_requests_total", `op="put"`, `volume="data"`)
		if err := os.WriteFile(p.inApp(app, "metrics-probe"), randomBytes(5<<20), 0o644); err != nil {
			t.Fatal(err)
		}
		m1 := scrape(t, p.port)
		puts1 := m1.value(t, "skiff_object_requests_total", `op="put"`, `volume="data"`)
		writes := m1.value(t, "skiff_fuse_op_duration_seconds_count", `op="write"`, `volume="data"`)
		t.Logf("object puts %v -> %v, FUSE writes %v", puts0, puts1, writes)
		if puts1 <= puts0 {
			t.Errorf("skiff_object_requests_total{op=put} did not move after writing 5 MiB: %v -> %v", puts0, puts1)
		}
		if writes < 5 {
			t.Errorf("skiff_fuse_op_duration_seconds_count{op=write} = %v after writing 5 MiB", writes)
		}
		if g := m1.value(t, "skiff_worker_generation", `volume="data"`); g != 1 {
			t.Errorf("skiff_worker_generation = %v", g)
		}
		m1.value(t, "skiff_write_buffer_limit_bytes", `volume="data"`)
		m1.value(t, "skiff_worker_process_resident_memory_bytes", `volume="data"`)
	})
	if t.Failed() {
		return
	}

	// kill -9 of the worker during a streaming write.
	w := p.startStream(app, "writer", "write", filepath.Join(p.appAt, "stream"), strconv.Itoa(streamSize), strconv.Itoa(streamSize-appChunk))
	w.waitProgress(t, streamSize/4, 2*time.Minute)
	st = killWorker(t, statusPath, st)
	t.Logf("worker killed during the write at %d MiB; generation %d, worker pid %d", w.progress()>>20, st.Generation, st.WorkerPID)
	w.waitHold(t, 2*time.Minute)
	w.release(t)
	wrote := w.result(t, time.Minute)
	if wrote.size != streamSize {
		t.Fatalf("wrote %d bytes", wrote.size)
	}

	// kill -9 of the worker during a streaming read of that file.
	r := p.startStream(app, "reader-1", "read", filepath.Join(p.appAt, "stream"), strconv.Itoa(streamSize-appChunk))
	r.waitProgress(t, streamSize/4, 2*time.Minute)
	st = killWorker(t, statusPath, st)
	t.Logf("worker killed during the read at %d MiB; generation %d, worker pid %d", r.progress()>>20, st.Generation, st.WorkerPID)
	r.waitHold(t, 2*time.Minute)
	r.release(t)
	if got := r.result(t, time.Minute); got != wrote {
		t.Fatalf("read back %+v after a worker kill, wrote %+v", got, wrote)
	}

	// Upgrade hand-off while the app reads: deliver the second binary at
	// the worker binary's path, SIGUSR2 to the sidecar.
	r = p.startStream(app, "reader-2", "read", filepath.Join(p.appAt, "stream"), strconv.Itoa(streamSize-appChunk))
	r.waitProgress(t, streamSize/4, 2*time.Minute)
	copyFile(t, v2, deliver+".new")
	if err := os.Rename(deliver+".new", deliver); err != nil {
		t.Fatal(err)
	}
	if err := sc.cmd.Process.Signal(syscall.SIGUSR2); err != nil {
		t.Fatal(err)
	}
	old, upgradeStart := st, time.Now()
	waitFor(t, "the upgraded worker", 2*time.Minute, func() bool {
		st = readStatus(t, statusPath)
		return st.Generation > old.Generation && st.WorkerPID != 0
	})
	t.Logf("upgraded during the read at %d MiB in %s: generation %d, worker pid %d, version %s",
		r.progress()>>20, time.Since(upgradeStart).Round(time.Millisecond), st.Generation, st.WorkerPID, st.WorkerVersion)
	if st.WorkerVersion != skiffV2Ver || st.WorkerPID == old.WorkerPID {
		t.Fatalf("after the upgrade: %+v (before: %+v)", st, old)
	}
	if err := syscall.Kill(old.WorkerPID, 0); err == nil {
		t.Errorf("the old worker %d still runs after the upgrade", old.WorkerPID)
	}
	r.waitHold(t, 2*time.Minute)
	r.release(t)
	if got := r.result(t, time.Minute); got != wrote {
		t.Fatalf("read back %+v across the upgrade, wrote %+v", got, wrote)
	}
	waitFor(t, "the sidecar's report of the upgrade", 30*time.Second, func() bool {
		return strings.Contains(sc.out.String(), "worker replaced") && strings.Contains(sc.out.String(), "version="+skiffV2Ver)
	})
	// The new worker serves the metrics socket again.
	m := scrape(t, p.port)
	if v := m.value(t, "skiff_worker_info", `version="`+skiffV2Ver+`"`, `volume="data"`); v != 1 {
		t.Errorf("skiff_worker_info{version=%s} = %v", skiffV2Ver, v)
	}
	// The reader's close reached the new worker as a FLUSH (its last
	// READs may not have: the kernel's 4 MiB read-ahead can have fetched
	// the rest of the file before the upgrade).
	if v := m.value(t, "skiff_fuse_op_duration_seconds_count", `op="flush"`, `volume="data"`); v <= 0 {
		t.Errorf("the upgraded worker's skiff_fuse_op_duration_seconds_count{op=flush} = %v after the reader closed", v)
	}

	// SIGTERM with a file open and dirty.
	d := p.startStream(app, "dirty-writer", "write", filepath.Join(p.appAt, "dirty"), strconv.Itoa(9<<20+5), strconv.Itoa(9<<20+5))
	d.waitHold(t, time.Minute)
	supervisorPID, workerPID := st.PID, st.WorkerPID
	if err := sc.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the mount leaving the app's namespace", 25*time.Second, func() bool {
		return len(fuseMountsIn(t, app.cmd.Process.Pid, p.appAt)) == 0
	})
	d.release(t) // the lazily detached mount goes away with its last file
	dirty := d.result(t, time.Minute)
	if code := sc.wait(t, 30*time.Second); code != 0 {
		t.Fatalf("sidecar exited %d after SIGTERM", code)
	}
	t.Logf("sidecar-1 after SIGTERM: %s", lastLines(sc.out.String(), 4))
	for _, pid := range []int{supervisorPID, workerPID} {
		if err := syscall.Kill(pid, 0); err == nil {
			t.Errorf("process %d of the supervised mount outlived the sidecar", pid)
		}
	}
	if _, err := os.Stat(statusPath); err == nil {
		t.Errorf("the status file outlived the sidecar")
	}

	// A new sidecar reads the dirty file back from the store.
	sc2 := p.startSidecar("sidecar-2")
	waitReady(t, p.port, sc2, 60*time.Second)
	if got := p.startStream(app, "reader-3", "read", filepath.Join(p.appAt, "dirty"), noHold).result(t, time.Minute); got != dirty {
		t.Fatalf("dirty after a restart: %+v, wrote %+v", got, dirty)
	}

	// Container restart: the sidecar is killed, its supervisor with it
	// (parent-death signal), the worker with its supervisor.
	st2 := readStatus(t, statusPath)
	if err := sc2.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	sc2.wait(t, 10*time.Second)
	waitFor(t, "the supervisor and worker of the killed sidecar to end", 30*time.Second, func() bool {
		return syscall.Kill(st2.PID, 0) != nil && syscall.Kill(st2.WorkerPID, 0) != nil
	})
	sc3 := p.startSidecar("sidecar-3")
	waitReady(t, p.port, sc3, 60*time.Second)
	if got := p.startStream(app, "reader-4", "read", filepath.Join(p.appAt, "stream"), noHold).result(t, time.Minute); got != wrote {
		t.Fatalf("stream after a container restart: %+v, wrote %+v", got, wrote)
	}
	if err := sc3.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if code := sc3.wait(t, 30*time.Second); code != 0 {
		t.Fatalf("sidecar-3 exited %d", code)
	}
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	b, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(to, b, 0o755); err != nil {
		t.Fatal(err)
	}
}

func readStatus(t *testing.T, path string) telemetry.Status {
	t.Helper()
	var st telemetry.Status
	waitFor(t, "the status file "+path, 30*time.Second, func() bool {
		var err error
		st, err = telemetry.ReadStatus(path)
		return err == nil
	})
	return st
}

// killWorker kills the worker of status st with SIGKILL and waits for
// the supervisor to report its successor.
func killWorker(t *testing.T, path string, st telemetry.Status) telemetry.Status {
	t.Helper()
	if st.WorkerPID == 0 {
		t.Fatalf("no worker to kill: %+v", st)
	}
	if ppid := parentOf(t, st.WorkerPID); ppid != st.PID {
		t.Fatalf("worker %d is the child of %d, not of the supervisor %d", st.WorkerPID, ppid, st.PID)
	}
	if err := syscall.Kill(st.WorkerPID, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	var now telemetry.Status
	waitFor(t, "a new worker", time.Minute, func() bool {
		now = readStatus(t, path)
		return now.Generation > st.Generation && now.WorkerPID != 0 && now.WorkerPID != st.WorkerPID
	})
	return now
}

func parentOf(t *testing.T, pid int) int {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		t.Fatal(err)
	}
	// pid (comm) state ppid ...
	f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+1:]))
	ppid, _ := strconv.Atoi(f[1])
	return ppid
}

// descendants maps every descendant of pid (and pid) to its command
// line, arguments joined by spaces.
func descendants(t *testing.T, pid int) map[int]string {
	t.Helper()
	out := map[int]string{}
	queue := []int{pid}
	for len(queue) > 0 {
		p := queue[0]
		queue = queue[1:]
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", p))
		if err != nil {
			continue
		}
		out[p] = strings.ReplaceAll(strings.TrimRight(string(b), "\x00"), "\x00", " ")
		tasks, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/children", p))
		for _, task := range tasks {
			c, _ := os.ReadFile(task)
			for _, f := range strings.Fields(string(c)) {
				if n, err := strconv.Atoi(f); err == nil {
					queue = append(queue, n)
				}
			}
		}
	}
	return out
}

// exposition is a scraped /metrics page.
type exposition []string

func scrape(t *testing.T, port int) exposition {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://127.0.0.1:"+strconv.Itoa(port)+contract.PathMetrics, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("/metrics: %s %v\n%s", resp.Status, err, b)
	}
	var e exposition
	sc := bufio.NewScanner(strings.NewReader(string(b)))
	for sc.Scan() {
		if l := sc.Text(); l != "" && !strings.HasPrefix(l, "#") {
			e = append(e, l)
		}
	}
	return e
}

// value is the sample of name whose labels include every one of labels
// (`key="value"`); the test fails when there is none.
func (e exposition) value(t *testing.T, name string, labels ...string) float64 {
	t.Helper()
next:
	for _, l := range e {
		rest, ok := strings.CutPrefix(l, name)
		if !ok || (rest[0] != '{' && rest[0] != ' ') {
			continue
		}
		i := strings.LastIndexByte(rest, ' ')
		set := rest[:i]
		for _, want := range labels {
			if !strings.Contains(set, want) {
				continue next
			}
		}
		v, err := strconv.ParseFloat(rest[i+1:], 64)
		if err != nil {
			t.Fatalf("%q: %v", l, err)
		}
		return v
	}
	t.Fatalf("no sample %s%v on /metrics", name, labels)
	return 0
}

// noHold is a hold position no stream reaches.
const noHold = "1152921504606846976"
