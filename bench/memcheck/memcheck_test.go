package memcheck

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/skiff-fs/skiff/fsclient/chunk"
	"github.com/skiff-fs/skiff/fsclient/meta"
	"github.com/skiff-fs/skiff/fsclient/volume"
	"github.com/skiff-fs/skiff/internal/syncbuf"
	"github.com/skiff-fs/skiff/internal/testredis"
	"github.com/skiff-fs/skiff/sidecar/telemetry"
)

// The workload of issue 12's done-when line.
const (
	numFiles   = 64
	fileSize   = 32 << 20
	blockSize  = 4 << 20
	numEntries = 200_000
	listings   = 8
	readers    = 16 // files read at once; all numFiles stay open throughout

	budget     = 256 << 20 // --buffer-size of the mount (the default is 300M)
	budgetFlag = "256M"
	margin     = 150 << 20 // what the process may use beyond its block budget
)

// TestMemoryUnderBudget mounts a volume with the cache off and
// --buffer-size 256M, opens 64 files of 32 MiB, reads them all (16 at a
// time) while keeping every one open, and meanwhile lists a directory of
// 200,000 entries 8 times at once. The mount process's peak resident
// memory (VmRSS sampled every 100 ms, and VmHWM at the end) must stay
// within the budget plus 150 MiB; every file must read back byte-exact and
// every listing must return each of the 200,000 names once.
func TestMemoryUnderBudget(t *testing.T) {
	if os.Getenv("SKIFF_MEMCHECK") == "" {
		// It fails today (peak RSS about 2x the budget, issue 12 item 6):
		// run it with make memcheck until that is fixed, then in go test.
		t.Skip("set SKIFF_MEMCHECK=1 (make memcheck): a 2-3 minute end-to-end memory test that does not pass yet")
	}
	if testing.Short() {
		t.Skip("a 2-3 minute end-to-end memory test; skipped with -short")
	}
	start := time.Now()
	bin := buildSkiff(t)
	dir := t.TempDir()
	srv := testredis.Start(t)
	ctx := context.Background()

	// The volume, written in process.
	bucket := filepath.Join(dir, "blocks")
	if err := os.Mkdir(bucket, 0o700); err != nil {
		t.Fatal(err)
	}
	if _, err := volume.Create(ctx, volume.FormatConfig{MetaURL: srv.URL(), Name: "memcheck", Bucket: bucket, BlockSize: blockSize}); err != nil {
		t.Fatal(err)
	}
	base := make([]byte, blockSize)
	rng := rand.New(rand.NewPCG(12, 6))
	for i := 0; i < len(base); i += 8 {
		binary.LittleEndian.PutUint64(base[i:], rng.Uint64())
	}
	filesDir, bigDir := fill(t, srv.URL(), base)
	t.Logf("setup (build, %d files of %d MiB, %d entries): %s", numFiles, fileSize>>20, numEntries, time.Since(start).Round(time.Millisecond))

	urlFile := filepath.Join(dir, "meta-url")
	if err := os.WriteFile(urlFile, []byte(srv.URL()), 0o600); err != nil {
		t.Fatal(err)
	}
	if os.Getenv("MEMCHECK_SPLIT") != "" {
		// Where the memory goes: each load alone, in a fresh mount.
		measure(t, bin, urlFile, filesDir, "", base)
		measure(t, bin, urlFile, "", bigDir, base)
	}
	peak := measure(t, bin, urlFile, filesDir, bigDir, base)
	if peak > budget+margin {
		t.Errorf("the mount's peak RSS %d MiB exceeds --buffer-size %d MiB + %d MiB", peak>>20, budget>>20, margin>>20)
	}
	t.Logf("total: %s", time.Since(start).Round(time.Millisecond))
}

// measure mounts the volume with a fresh skiff mount process (cache off,
// --buffer-size budget), reads every file of filesDir fully while holding
// all of them open, and lists bigDir listings times at once (either may be
// ""), and returns the process's peak RSS during the load. It unmounts at
// the end.
func measure(t *testing.T, bin, urlFile, filesDir, bigDir string, base []byte) int64 {
	t.Helper()
	dir := t.TempDir()
	mp := filepath.Join(dir, "mnt")
	os.Mkdir(mp, 0o755)
	sock := filepath.Join(dir, "metrics.sock")
	out := &syncbuf.Buffer{}
	mount := exec.Command(bin, "mount", "--meta-url-file", urlFile, "--cache-size", "0",
		"--buffer-size", budgetFlag, "--metrics-socket", sock, mp)
	mount.Stdout, mount.Stderr = out, out
	if err := mount.Start(); err != nil {
		t.Fatal(err)
	}
	pid := mount.Process.Pid
	exited := make(chan struct{})
	var waitErr error
	go func() { waitErr = mount.Wait(); close(exited) }()
	defer func() {
		select {
		case <-exited:
		default:
			mount.Process.Kill()
			<-exited
		}
		syscall.Unmount(mp, syscall.MNT_DETACH)
	}()
	for deadline := time.Now().Add(30 * time.Second); !strings.Contains(out.String(), "mounted on"); {
		select {
		case <-exited:
			t.Fatalf("skiff mount ended: %v\n%s", waitErr, out)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("skiff mount did not get ready:\n%s", out)
		}
		time.Sleep(20 * time.Millisecond)
	}
	idle := procStatus(t, pid)["VmRSS"]

	// Sample the mount's RSS while the load runs.
	var peak atomic.Int64
	stopSampling := make(chan struct{})
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		for {
			if rss, ok := readStatus(pid)["VmRSS"]; ok && rss > peak.Load() {
				peak.Store(rss)
			}
			select {
			case <-stopSampling:
				return
			case <-tick.C:
			}
		}
	}()

	// Watchdog: a hung mount must not hang the test; killing it makes
	// every pending call on the mount fail.
	loadDone := make(chan struct{})
	go func() {
		select {
		case <-loadDone:
		case <-time.After(3 * time.Minute):
			t.Errorf("the load did not finish in 3 minutes; killing the mount")
			mount.Process.Kill()
		}
	}()

	loadStart := time.Now()
	var files []*os.File
	if filesDir != "" {
		files = make([]*os.File, numFiles)
		for i := range files {
			f, err := os.Open(filepath.Join(mp, filesDir, fileName(i)))
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			files[i] = f
		}
	}
	var wg sync.WaitGroup
	errs := make(chan error, numFiles+listings)
	work := make(chan int, numFiles)
	for i := range files {
		work <- i
	}
	close(work)
	for range readers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := make([]byte, blockSize)
			for i := range work {
				if err := readFile(files[i], i, base, buf); err != nil {
					errs <- err
				}
			}
		}()
	}
	var listDur [listings]time.Duration
	for l := range listings {
		if bigDir == "" {
			break
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			t0 := time.Now()
			if err := listDir(filepath.Join(mp, bigDir)); err != nil {
				errs <- fmt.Errorf("listing %d: %w", l, err)
			}
			listDur[l] = time.Since(t0)
		}()
	}
	wg.Wait()
	close(loadDone)
	loadTime := time.Since(loadStart)
	close(stopSampling)
	<-sampled
	st := procStatus(t, pid) // all files still open
	hwm := max(st["VmHWM"], peak.Load())
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	logMetrics(t, sock)
	for _, f := range files {
		f.Close()
	}

	t.Logf("load: %d files of %d MiB read, %d at a time, all open until the end (%q); %d listings of %d entries (%q): %s; listings took %v",
		len(files), fileSize>>20, readers, filesDir, listings, numEntries, bigDir, loadTime.Round(time.Millisecond), roundAll(listDur[:]))
	t.Logf("mount RSS: idle %d MiB, peak %d MiB (sampled %d MiB, VmHWM %d MiB), at the end %d MiB; limit: budget %d MiB + margin %d MiB = %d MiB (headroom %+d MiB)",
		idle>>20, hwm>>20, peak.Load()>>20, st["VmHWM"]>>20, st["VmRSS"]>>20,
		budget>>20, margin>>20, (budget+margin)>>20, (budget+margin-hwm)/(1<<20))

	mount.Process.Signal(syscall.SIGTERM)
	select {
	case <-exited:
		if waitErr != nil {
			t.Errorf("skiff mount: %v\n%s", waitErr, out)
		}
	case <-time.After(30 * time.Second):
		t.Errorf("skiff mount did not stop after SIGTERM:\n%s", out)
	}
	return hwm
}

func fileName(i int) string { return fmt.Sprintf("f%02d", i) }

// block is file i's block b: base with (i, b) in its first 16 bytes, so
// that no two blocks are alike.
func block(dst, base []byte, i, b int) {
	copy(dst, base)
	binary.LittleEndian.PutUint64(dst[0:], uint64(i))
	binary.LittleEndian.PutUint64(dst[8:], uint64(b))
}

// fill writes the files and the big directory through the library (no
// FUSE) and returns their directories' names under the root.
func fill(t *testing.T, metaURL string, base []byte) (filesDir, bigDir string) {
	ctx := context.Background()
	v, err := volume.Open(ctx, volume.Config{MetaURL: metaURL, Chunk: chunk.Config{BufferSize: 256 << 20, UploadConcurrency: 16}})
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close(ctx)
	if err := v.Meta.NewSession(ctx, meta.SessionInfo{Hostname: "memcheck", PID: os.Getpid()}); err != nil {
		t.Fatal(err)
	}
	c := meta.RootCaller()
	fdir, _, err := v.Meta.Mkdir(ctx, c, meta.RootIno, "files", 0o755)
	if err != nil {
		t.Fatal(err)
	}
	big, _, err := v.Meta.Mkdir(ctx, c, meta.RootIno, "big", 0o755)
	if err != nil {
		t.Fatal(err)
	}

	t0 := time.Now()
	var wg sync.WaitGroup
	errs := make(chan error, 8+8)
	next := make(chan int, numFiles)
	for i := range numFiles {
		next <- i
	}
	close(next)
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := make([]byte, blockSize)
			for i := range next {
				if err := writeFile(ctx, v, c, fdir, i, base, buf); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	t.Logf("wrote %d files of %d MiB in process: %s", numFiles, fileSize>>20, time.Since(t0).Round(time.Millisecond))

	t0 = time.Now()
	names := make(chan int, 1024)
	go func() {
		defer close(names)
		for i := range numEntries {
			names <- i
		}
	}()
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range names {
				if _, _, err := v.Meta.Mknod(ctx, c, big, entryName(i), meta.TypeFile, 0o644, 0); err != nil {
					errs <- fmt.Errorf("mknod %s: %w", entryName(i), err)
					for range names { // drain, so the producer ends
					}
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	t.Logf("created %d entries in process: %s", numEntries, time.Since(t0).Round(time.Millisecond))
	return "files", "big"
}

func entryName(i int) string { return fmt.Sprintf("entry-%06d", i) }

func writeFile(ctx context.Context, v *volume.Volume, c meta.Caller, dir meta.Ino, i int, base, buf []byte) error {
	ino, _, err := v.Meta.Create(ctx, c, dir, fileName(i), 0o644, uint32(os.O_RDWR))
	if err != nil {
		return fmt.Errorf("create %s: %w", fileName(i), err)
	}
	w := v.Chunks.NewWriter(uint64(ino), v.ChunkMeta())
	for b := 0; b < fileSize/blockSize; b++ {
		block(buf, base, i, b)
		if _, err := w.WriteAt(ctx, buf, int64(b)*blockSize); err != nil {
			w.Close(ctx)
			return fmt.Errorf("write %s: %w", fileName(i), err)
		}
	}
	if err := w.Close(ctx); err != nil {
		return fmt.Errorf("close %s: %w", fileName(i), err)
	}
	return v.Meta.Release(ctx, ino)
}

// readFile reads file i from its start to its end and checks every byte.
func readFile(f *os.File, i int, base, buf []byte) error {
	want := make([]byte, blockSize)
	for b := 0; b < fileSize/blockSize; b++ {
		if _, err := io.ReadFull(f, buf); err != nil {
			return fmt.Errorf("read %s block %d: %w", fileName(i), b, err)
		}
		block(want, base, i, b)
		if !bytes.Equal(buf, want) {
			return fmt.Errorf("%s block %d: wrong bytes", fileName(i), b)
		}
	}
	if n, err := f.Read(buf[:1]); n != 0 || err != io.EOF {
		return fmt.Errorf("%s: %d bytes past %d MiB (%v)", fileName(i), n, fileSize>>20, err)
	}
	return nil
}

// listDir lists dir in full and checks that it holds each entry once.
func listDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	seen := make(map[string]struct{}, numEntries)
	total := 0
	for {
		names, err := d.Readdirnames(4096)
		for _, n := range names {
			seen[n] = struct{}{}
		}
		total += len(names)
		if err == io.EOF {
			break
		}
		if err != nil {
			return err
		}
	}
	if total != numEntries || len(seen) != numEntries {
		return fmt.Errorf("%d names (%d unique), want %d", total, len(seen), numEntries)
	}
	for i := range numEntries {
		if _, ok := seen[entryName(i)]; !ok {
			return fmt.Errorf("%s is missing", entryName(i))
		}
	}
	return nil
}

// readStatus returns the sizes (in bytes) of /proc/PID/status's Vm* lines.
func readStatus(pid int) map[string]int64 {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return nil
	}
	defer f.Close()
	m := map[string]int64{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if !ok || !strings.HasPrefix(k, "Vm") {
			continue
		}
		kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
		if err == nil {
			m[k] = kb << 10
		}
	}
	return m
}

func procStatus(t *testing.T, pid int) map[string]int64 {
	t.Helper()
	m := readStatus(pid)
	if m["VmRSS"] == 0 || m["VmHWM"] == 0 {
		t.Fatalf("no VmRSS/VmHWM in /proc/%d/status: %v", pid, m)
	}
	return m
}

// logMetrics logs what the mount's metrics say about the load (FUSE
// operation counts, bytes fetched), for the record.
func logMetrics(t *testing.T, sock string) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	mfs, err := telemetry.Scrape(ctx, sock)
	if err != nil {
		t.Logf("metrics: %v", err)
		return
	}
	var ops []string
	for _, m := range mfs["skiff_fuse_op_duration_seconds"].GetMetric() {
		for _, l := range m.GetLabel() {
			if l.GetName() == "op" && (strings.HasPrefix(l.GetValue(), "readdir") || l.GetValue() == "read" || l.GetValue() == "open") {
				ops = append(ops, fmt.Sprintf("%s=%d", l.GetValue(), m.GetHistogram().GetSampleCount()))
			}
		}
	}
	var got []string
	for _, name := range []string{"skiff_object_requests_total", "skiff_object_bytes_total"} {
		for _, m := range mfs[name].GetMetric() {
			var labels []string
			for _, l := range m.GetLabel() {
				labels = append(labels, l.GetName()+"="+l.GetValue())
			}
			got = append(got, fmt.Sprintf("%s{%s}=%.0f", name, strings.Join(labels, ","), m.GetCounter().GetValue()))
		}
	}
	t.Logf("metrics: FUSE ops %v; %v", ops, got)
}

func roundAll(ds []time.Duration) []time.Duration {
	out := make([]time.Duration, len(ds))
	for i, d := range ds {
		out[i] = d.Round(100 * time.Millisecond)
	}
	return out
}

// buildSkiff builds ./cmd/skiff without the race detector (it multiplies
// memory use, which would make the RSS figure meaningless).
func buildSkiff(t *testing.T) string {
	t.Helper()
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		t.Fatalf("go env GOMOD: %v", err)
	}
	bin := filepath.Join(t.TempDir(), "skiff")
	cmd := exec.Command("go", "build", "-o", bin, "./cmd/skiff")
	cmd.Dir = filepath.Dir(strings.TrimSpace(string(out)))
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build skiff: %v\n%s", err, b)
	}
	return bin
}
