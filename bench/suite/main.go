// Command suite is `make bench`: the fixed benchmark of issue 6. On an
// embedded (bbolt) volume and on a Redis volume (with its own
// redis-server on a free port), each mounted with `skiff mount` in the
// default durable mode and blocks in a directory of the local disk, it
// runs every workload next to the same workload on a directory of that
// local disk (the file system that also holds skiff's cache), and prints
// one table of medians of 3 and of ratios skiff/local with the issue's
// targets beside them:
//
//   - sequential write of a 2 GiB file (to the end of fsync and close);
//     the client's peak RSS during it (VmHWM) against the buffer budget
//     plus 150 MiB;
//   - sequential read of it cold (skiff's cache emptied by a remount
//     without it, the kernel's page cache dropped), warm (skiff's cache
//     full, page cache dropped) and after `skiff warmup` (cache emptied,
//     warmup, page cache dropped, first read);
//   - re-reading it while it is still in the kernel's page cache;
//   - random 4 KiB and 128 KiB reads with O_DIRECT on both sides, warm,
//     page cache dropped (latency p50 and p99);
//   - 10,000 small files created, stat'ed, read and deleted;
//   - `skiff warmup` of 2 GiB in 1,000 files from an empty cache, next to
//     a parallel cold read of the same files on the local disk.
//
// The measurement rules of the issue hold on both sides: the kernel's
// page cache is dropped before every cold, warm and after-warmup read and
// every random-read run, random reads use O_DIRECT, the memory block
// cache keeps skiff mount's default size (256 MiB) unless the file is not
// larger than that (quick runs), in which case it gets a quarter of the
// file, and every figure is the median of -runs runs (3).
//
// It needs root (mounting, dropping the page cache) and the skiff binary
// (-skiff). Sizes come from flags or the environment; -quick (or
// SKIFF_BENCH_QUICK=1) runs a small version in a few minutes (256 MiB
// file, 1,000 small files, warmup of 256 MiB in 100 files, 500 random
// reads), with any size given explicitly still taking precedence:
//
//	SKIFF_BENCH_QUICK=1 make bench
//	SKIFF_BENCH_SIZE=512M SKIFF_BENCH_SMALL_FILES=1000 SKIFF_BENCH_WARM_SIZE=256M make bench
//
// See -help for the others. Progress goes to stderr, the table to stdout.
package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/skiff-fs/skiff/bench/fsbench"
	"github.com/skiff-fs/skiff/fsclient/fuse"
)

type config struct {
	skiff      string
	parent     string
	volumes    []string
	runs       int
	bigSize    int64
	ioSize     int
	randOps    int
	smallFiles int
	smallSize  int
	warmFiles  int
	warmSize   int64
	threads    int
	buffer     int64
	cacheMem   int64 // skiff mount --cache-mem; 0: its default
	keep       bool
}

// defaultCacheMem is skiff mount's --cache-mem default.
const defaultCacheMem = 256 << 20

func main() {
	var cfg config
	var vols, big, small, warm, buffer string
	flag.StringVar(&cfg.skiff, "skiff", "bin/skiff", "the skiff binary")
	flag.StringVar(&cfg.parent, "dir", env("SKIFF_BENCH_DIR", "/var/tmp"), "where to make the work directory: volumes, cache, local files (one file system) [SKIFF_BENCH_DIR]")
	flag.StringVar(&vols, "volumes", env("SKIFF_BENCH_VOLUMES", "bolt,redis"), "volumes to test [SKIFF_BENCH_VOLUMES]")
	flag.IntVar(&cfg.runs, "runs", envInt("SKIFF_BENCH_RUNS", 3), "runs of each workload; the table shows medians [SKIFF_BENCH_RUNS]")
	flag.StringVar(&big, "size", env("SKIFF_BENCH_SIZE", "2G"), "big file size [SKIFF_BENCH_SIZE]")
	flag.IntVar(&cfg.randOps, "rand-ops", envInt("SKIFF_BENCH_RAND_OPS", 2000), "random reads per run [SKIFF_BENCH_RAND_OPS]")
	flag.IntVar(&cfg.smallFiles, "small-files", envInt("SKIFF_BENCH_SMALL_FILES", 10000), "small files [SKIFF_BENCH_SMALL_FILES]")
	flag.StringVar(&small, "small-size", env("SKIFF_BENCH_SMALL_SIZE", "4K"), "small file size [SKIFF_BENCH_SMALL_SIZE]")
	flag.IntVar(&cfg.warmFiles, "warm-files", envInt("SKIFF_BENCH_WARM_FILES", 1000), "files of the warmup test [SKIFF_BENCH_WARM_FILES]")
	flag.StringVar(&warm, "warm-size", env("SKIFF_BENCH_WARM_SIZE", "2G"), "total size of the warmup test's files [SKIFF_BENCH_WARM_SIZE]")
	flag.IntVar(&cfg.threads, "warm-threads", envInt("SKIFF_BENCH_WARM_THREADS", 50), "skiff warmup --threads, and the local side's parallel reads [SKIFF_BENCH_WARM_THREADS]")
	flag.StringVar(&buffer, "buffer-size", env("SKIFF_BENCH_BUFFER", "300M"), "skiff mount --buffer-size (its default) [SKIFF_BENCH_BUFFER]")
	flag.BoolVar(&cfg.keep, "keep", os.Getenv("SKIFF_BENCH_KEEP") != "", "keep the work directory [SKIFF_BENCH_KEEP]")
	quick := flag.Bool("quick", os.Getenv("SKIFF_BENCH_QUICK") != "", "a small version: 256M file, 1000 small files, warmup of 256M in 100 files, 500 random reads; explicit sizes win [SKIFF_BENCH_QUICK]")
	flag.Parse()
	if *quick {
		set := map[string]bool{}
		flag.Visit(func(f *flag.Flag) { set[f.Name] = true })
		for _, q := range []struct {
			flag, env string
			v         any
			val       string
		}{
			{"size", "SKIFF_BENCH_SIZE", &big, "256M"},
			{"small-files", "SKIFF_BENCH_SMALL_FILES", &cfg.smallFiles, "1000"},
			{"warm-files", "SKIFF_BENCH_WARM_FILES", &cfg.warmFiles, "100"},
			{"warm-size", "SKIFF_BENCH_WARM_SIZE", &warm, "256M"},
			{"rand-ops", "SKIFF_BENCH_RAND_OPS", &cfg.randOps, "500"},
		} {
			if set[q.flag] || os.Getenv(q.env) != "" {
				continue
			}
			switch p := q.v.(type) {
			case *string:
				*p = q.val
			case *int:
				*p, _ = strconv.Atoi(q.val)
			}
		}
	}
	cfg.ioSize = 1 << 20
	cfg.volumes = strings.Split(vols, ",")
	var err error
	for _, s := range []struct {
		v    *int64
		s    string
		name string
	}{{&cfg.bigSize, big, "size"}, {&cfg.warmSize, warm, "warm-size"}, {&cfg.buffer, buffer, "buffer-size"}} {
		if *s.v, err = parseSize(s.s); err != nil {
			fail(fmt.Errorf("-%s: %w", s.name, err))
		}
	}
	ss, err := parseSize(small)
	if err != nil {
		fail(fmt.Errorf("-small-size: %w", err))
	}
	cfg.smallSize = int(ss)
	if cfg.bigSize <= defaultCacheMem {
		// The memory cache must be smaller than the file, or warm reads
		// would be served from memory.
		cfg.cacheMem = max(cfg.bigSize/4>>20, 1) << 20
	}
	if err := cfg.validate(); err != nil {
		fail(err)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, &cfg); err != nil {
		fail(err)
	}
}

func fail(err error) {
	fmt.Fprintf(os.Stderr, "make bench: %v\n", err)
	os.Exit(1)
}

func (c *config) validate() error {
	switch {
	case os.Geteuid() != 0:
		return errors.New("run as root: the suite mounts volumes and drops the kernel's page cache")
	case c.runs < 1:
		return errors.New("-runs must be at least 1")
	case c.bigSize < int64(c.ioSize) || c.bigSize < 128<<10:
		return errors.New("-size must be at least 1M")
	case c.randOps < 1 || c.smallFiles < 1 || c.warmFiles < 1 || c.threads < 1:
		return errors.New("-rand-ops, -small-files, -warm-files and -warm-threads must be at least 1")
	case c.smallSize < 1 || c.warmSize < int64(c.warmFiles):
		return errors.New("-small-size must be at least 1 byte and -warm-size at least a byte per file")
	}
	for _, v := range c.volumes {
		if v != "bolt" && v != "redis" {
			return fmt.Errorf("-volumes: %q is neither bolt nor redis", v)
		}
	}
	abs, err := filepath.Abs(c.skiff)
	if err != nil {
		return err
	}
	c.skiff = abs
	if _, err := os.Stat(c.skiff); err != nil {
		return fmt.Errorf("skiff binary: %w (build it: make build)", err)
	}
	return nil
}

// suite is one run of the benchmark.
type suite struct {
	cfg     *config
	ctx     context.Context
	work    string
	rows    []*row
	cleanup []func()
	// readAhead is the kernel's read-ahead window of the first mount, as
	// read from its backing device.
	readAhead string
	warnings  []string // printed under the table
}

func run(ctx context.Context, cfg *config) error {
	work, err := os.MkdirTemp(cfg.parent, "skiff-bench-")
	if err != nil {
		return err
	}
	s := &suite{cfg: cfg, ctx: ctx, work: work}
	defer func() {
		for i := len(s.cleanup) - 1; i >= 0; i-- {
			s.cleanup[i]()
		}
		if cfg.keep {
			logf("kept %s", work)
		} else {
			os.RemoveAll(work)
		}
	}()
	s.defineRows()
	start := time.Now()
	logf("work directory %s; %d runs; big file %s; %d small files of %s; warmup %s in %d files",
		work, cfg.runs, human(cfg.bigSize), cfg.smallFiles, human(int64(cfg.smallSize)), human(cfg.warmSize), cfg.warmFiles)
	for _, kind := range cfg.volumes {
		if err := s.volume(kind); err != nil {
			return fmt.Errorf("%s volume: %w", kind, err)
		}
	}
	s.print(os.Stdout, time.Since(start))
	return nil
}

// row is one line of the table per volume: the samples of both sides.
type row struct {
	key         string
	name        string
	unit        string
	lowerBetter bool    // a latency or a time, not a throughput
	target      float64 // on the ratio skiff/local; 0: none
	abs         bool    // the target is on skiff's value (peak RSS), no local side
	local       map[string][]float64
	skiff       map[string][]float64
}

func (s *suite) defineRows() {
	c := s.cfg
	big := human(c.bigSize)
	add := func(key, name, unit string, lower bool, target float64) {
		s.rows = append(s.rows, &row{key: key, name: name, unit: unit, lowerBetter: lower, target: target,
			local: map[string][]float64{}, skiff: map[string][]float64{}})
	}
	add("write", "seq write "+big, "MiB/s", false, 0.3)
	add("rss", "peak RSS during the write", "MiB", true, float64(c.buffer>>20)+150)
	s.rows[len(s.rows)-1].abs = true
	add("cold", "seq read "+big+" cold", "MiB/s", false, 0)
	add("warm", "seq read "+big+" warm", "MiB/s", false, 0.9)
	add("afterwarmup", "seq read "+big+" after warmup", "MiB/s", false, 0.9)
	add("reread", "re-read in page cache", "MiB/s", false, 0.8)
	add("rand4k50", "rand 4K O_DIRECT p50", "µs", true, 1.5)
	add("rand4k99", "rand 4K O_DIRECT p99", "µs", true, 0)
	add("rand128k50", "rand 128K O_DIRECT p50", "µs", true, 0)
	add("rand128k99", "rand 128K O_DIRECT p99", "µs", true, 0)
	n := strconv.Itoa(c.smallFiles)
	add("create", n+" small: create", "files/s", false, 0)
	add("stat", n+" small: stat", "files/s", false, 0)
	add("read", n+" small: read", "files/s", false, 0)
	add("delete", n+" small: delete", "files/s", false, 0)
	add("warmup", fmt.Sprintf("warmup %s in %d files", human(c.warmSize), c.warmFiles), "s", true, 0)
}

func (s *suite) sample(key, vol string, local bool, v float64) {
	for _, r := range s.rows {
		if r.key == key {
			if local {
				r.local[vol] = append(r.local[vol], v)
			} else {
				r.skiff[vol] = append(r.skiff[vol], v)
			}
			return
		}
	}
	panic("no row " + key)
}

// vol is one mounted skiff volume and its local-disk counterpart.
type vol struct {
	s       *suite
	kind    string
	dir     string // holds meta, blocks, cache, mountpoint, local
	metaURL string
	mnt     string
	cache   string
	local   string
	logFile *os.File
	mount   *exec.Cmd  // the running skiff mount
	exited  chan error // its exit status
}

func (s *suite) volume(kind string) error {
	v := &vol{s: s, kind: kind, dir: filepath.Join(s.work, kind)}
	v.mnt = filepath.Join(v.dir, "mnt")
	v.cache = filepath.Join(v.dir, "cache")
	v.local = filepath.Join(v.dir, "local")
	for _, d := range []string{v.mnt, v.local} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return err
		}
	}
	var err error
	if v.logFile, err = os.Create(filepath.Join(v.dir, "skiff.log")); err != nil {
		return err
	}
	s.cleanup = append(s.cleanup, func() { v.logFile.Close() })
	switch kind {
	case "bolt":
		v.metaURL = "bolt://" + filepath.Join(v.dir, "meta.db")
	case "redis":
		addr, err := s.startRedis(filepath.Join(v.dir, "redis"))
		if err != nil {
			return err
		}
		v.metaURL = "redis://" + addr + "/1"
	}
	if err := v.skiff("format", "--bucket", "file://"+filepath.Join(v.dir, "blocks"), v.metaURL, "bench-"+kind); err != nil {
		return err
	}
	if err := v.start(); err != nil {
		return err
	}
	s.cleanup = append(s.cleanup, func() {
		if err := v.stop(); err != nil {
			logf("%s: %v", kind, err)
		}
	})
	steps := []struct {
		name string
		fn   func() error
	}{
		{"sequential write", v.seqWrite},
		{"cold read", v.coldRead},
		{"warm read", v.warmRead},
		{"page-cache re-read", v.reread},
		{"random reads", v.randRead},
		{"read after warmup", v.afterWarmup},
		{"warmup of many files", v.warmupFiles},
		{"small files", v.smallFiles},
	}
	for _, st := range steps {
		if err := s.ctx.Err(); err != nil {
			return err
		}
		t := time.Now()
		if err := st.fn(); err != nil {
			return fmt.Errorf("%s: %w (log: %s)", st.name, err, v.logFile.Name())
		}
		logf("%s: %s done in %s", kind, st.name, time.Since(t).Round(time.Second))
	}
	s.noteFloor(v)
	if !s.cfg.keep {
		// Free the volume's disk space for the next one: a disk below
		// the cache's free-space floor would stop its caching.
		if err := v.stop(); err != nil {
			return err
		}
		for _, d := range []string{v.local, v.cache, filepath.Join(v.dir, "blocks")} {
			if err := os.RemoveAll(d); err != nil {
				return err
			}
		}
	}
	return nil
}

// noteFloor records a warning when skiff's log says the disk fell below
// the cache's free-space floor: its cache then stopped caching, and the
// volume's ratios do not show skiff's cached reads.
func (s *suite) noteFloor(v *vol) {
	b, err := os.ReadFile(v.logFile.Name())
	if err != nil {
		logf("%s: read the log: %v", v.kind, err)
		return
	}
	if n := bytes.Count(b, []byte("free-space floor")); n > 0 {
		s.warnings = append(s.warnings, fmt.Sprintf("warning: skiff's cache on the %s volume stopped caching %d times: the disk fell below "+
			"the cache's free-space floor (--cache-free-ratio); free space on %s and run again", v.kind, n, s.work))
	}
}

// skiff runs a skiff command to its end, its output going to the log.
func (v *vol) skiff(args ...string) error {
	cmd := exec.CommandContext(v.s.ctx, v.s.cfg.skiff, args...)
	cmd.Stdout, cmd.Stderr = v.logFile, v.logFile
	fmt.Fprintf(v.logFile, "+ skiff %s\n", strings.Join(args, " "))
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("skiff %s: %w", args[0], err)
	}
	return nil
}

// start mounts the volume with skiff mount (defaults but the cache
// directory and the buffer size, which the RSS target names) and waits
// until the mount is there.
func (v *vol) start() error {
	args := []string{"mount", "--cache-dir", v.cache, "--buffer-size", strconv.FormatInt(v.s.cfg.buffer, 10)}
	if v.s.cfg.cacheMem > 0 {
		args = append(args, "--cache-mem", strconv.FormatInt(v.s.cfg.cacheMem, 10))
	}
	cmd := exec.Command(v.s.cfg.skiff, append(args, v.metaURL, v.mnt)...)
	cmd.Stdout, cmd.Stderr = v.logFile, v.logFile
	fmt.Fprintf(v.logFile, "+ skiff mount %s %s\n", v.metaURL, v.mnt)
	if err := cmd.Start(); err != nil {
		return err
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	deadline := time.After(60 * time.Second)
	for !mounted(v.mnt) {
		select {
		case err := <-exited:
			return fmt.Errorf("skiff mount exited: %v", err)
		case <-deadline:
			cmd.Process.Kill()
			return errors.New("skiff mount: not mounted after 60s")
		case <-time.After(20 * time.Millisecond):
		}
	}
	v.mount, v.exited = cmd, exited
	if v.s.readAhead == "" {
		if ra, err := fuse.ReadAhead(v.mnt); err == nil {
			v.s.readAhead = human(int64(ra))
		} else {
			v.s.readAhead = "unknown: " + err.Error()
		}
	}
	return nil
}

// stop unmounts (skiff umount; the mount process flushes and exits).
func (v *vol) stop() error {
	if v.mount == nil {
		return nil
	}
	cmd := v.mount
	v.mount = nil
	if err := v.skiffNoCtx("umount", v.mnt); err != nil {
		logf("%s: %v; detaching", v.kind, err)
		_ = v.skiffNoCtx("umount", "--force", v.mnt)
	}
	select {
	case err := <-v.exited:
		if err != nil {
			return fmt.Errorf("skiff mount: %w", err)
		}
		return nil
	case <-time.After(2 * time.Minute):
		cmd.Process.Kill()
		return errors.New("skiff mount did not exit within 2 minutes of the unmount; killed")
	}
}

func (v *vol) skiffNoCtx(args ...string) error {
	cmd := exec.Command(v.s.cfg.skiff, args...)
	cmd.Stdout, cmd.Stderr = v.logFile, v.logFile
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("skiff %s: %w", args[0], err)
	}
	return nil
}

// remountEmpty unmounts, empties skiff's block cache and mounts again.
func (v *vol) remountEmpty() error {
	if err := v.stop(); err != nil {
		return err
	}
	if err := os.RemoveAll(v.cache); err != nil {
		return err
	}
	return v.start()
}

// peakRSS is the mount process's VmHWM in bytes.
func (v *vol) peakRSS() (int64, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", v.mount.Process.Pid))
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), "VmHWM:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			return kb << 10, err
		}
	}
	return 0, errors.New("no VmHWM in /proc/PID/status")
}

func (v *vol) big(local bool, i int) string {
	d := v.mnt
	if local {
		d = v.local
	}
	return filepath.Join(d, fmt.Sprintf("big.%d", i))
}

// pair runs fn on the local side, then on skiff, and records both.
func (v *vol) pair(key string, fn func(local bool) (float64, error)) error {
	for _, local := range []bool{true, false} {
		x, err := fn(local)
		if err != nil {
			return err
		}
		v.s.sample(key, v.kind, local, x)
	}
	return nil
}

func (v *vol) seqWrite() error {
	c := v.s.cfg
	for i := range c.runs {
		if err := fsbench.DropCaches(); err != nil {
			return err
		}
		err := v.pair("write", func(local bool) (float64, error) {
			r, err := fsbench.WriteFile(v.big(local, i), c.bigSize, c.ioSize)
			return r.MiBps(), err
		})
		if err != nil {
			return err
		}
	}
	rss, err := v.peakRSS()
	if err != nil {
		return err
	}
	v.s.sample("rss", v.kind, false, float64(rss)/(1<<20))
	for i := 1; i < c.runs; i++ {
		for _, local := range []bool{true, false} {
			if err := os.Remove(v.big(local, i)); err != nil {
				return err
			}
		}
	}
	return nil
}

// readBig reads big.0 from start to end: MiB/s.
func (v *vol) readBig(local bool) (float64, error) {
	r, err := fsbench.ReadFile(v.big(local, 0), v.s.cfg.ioSize)
	if err == nil && r.Bytes != v.s.cfg.bigSize {
		err = fmt.Errorf("read %d bytes of %s, want %d", r.Bytes, v.big(local, 0), v.s.cfg.bigSize)
	}
	return r.MiBps(), err
}

func (v *vol) coldRead() error {
	for range v.s.cfg.runs {
		err := v.pair("cold", func(local bool) (float64, error) {
			if !local {
				if err := v.remountEmpty(); err != nil {
					return 0, err
				}
			}
			if err := fsbench.DropCaches(); err != nil {
				return 0, err
			}
			return v.readBig(local)
		})
		if err != nil {
			return err
		}
	}
	return nil
}

func (v *vol) warmRead() error {
	for range v.s.cfg.runs {
		err := v.pair("warm", func(local bool) (float64, error) {
			if err := fsbench.DropCaches(); err != nil {
				return 0, err
			}
			return v.readBig(local)
		})
		if err != nil {
			return err
		}
	}
	return nil
}

// reread reads the file once into the page cache, then again runs times.
func (v *vol) reread() error {
	for _, local := range []bool{true, false} {
		if _, err := v.readBig(local); err != nil {
			return err
		}
	}
	for range v.s.cfg.runs {
		if err := v.pair("reread", v.readBig); err != nil {
			return err
		}
	}
	return nil
}

func (v *vol) randRead() error {
	for _, bs := range []struct {
		size     int
		p50, p99 string
	}{{4 << 10, "rand4k50", "rand4k99"}, {128 << 10, "rand128k50", "rand128k99"}} {
		for i := range v.s.cfg.runs {
			for _, local := range []bool{true, false} {
				if err := fsbench.DropCaches(); err != nil {
					return err
				}
				r, err := fsbench.RandRead(v.big(local, 0), bs.size, v.s.cfg.randOps, true, uint64(i+1))
				if err != nil {
					return err
				}
				v.s.sample(bs.p50, v.kind, local, float64(r.Percentile(50))/1e3)
				v.s.sample(bs.p99, v.kind, local, float64(r.Percentile(99))/1e3)
			}
		}
	}
	return nil
}

func (v *vol) afterWarmup() error {
	for range v.s.cfg.runs {
		err := v.pair("afterwarmup", func(local bool) (float64, error) {
			if !local {
				if err := v.remountEmpty(); err != nil {
					return 0, err
				}
				if err := v.skiff("warmup", "--threads", strconv.Itoa(v.s.cfg.threads), v.big(false, 0)); err != nil {
					return 0, err
				}
			}
			if err := fsbench.DropCaches(); err != nil {
				return 0, err
			}
			return v.readBig(local)
		})
		if err != nil {
			return err
		}
	}
	return nil
}

// warmupFiles times skiff warmup of many files from an empty cache, and a
// parallel cold read of the same files on the local disk.
func (v *vol) warmupFiles() error {
	c := v.s.cfg
	size := c.warmSize / int64(c.warmFiles)
	paths := map[bool][]string{}
	for _, local := range []bool{true, false} {
		dir := filepath.Join(v.mnt, "warm")
		if local {
			dir = filepath.Join(v.local, "warm")
		}
		if err := os.Mkdir(dir, 0o755); err != nil {
			return err
		}
		for i := range c.warmFiles {
			p := filepath.Join(dir, fmt.Sprintf("f%05d", i))
			if _, err := fsbench.WriteFile(p, size, c.ioSize); err != nil {
				return err
			}
			paths[local] = append(paths[local], p)
		}
	}
	for range c.runs {
		err := v.pair("warmup", func(local bool) (float64, error) {
			if !local {
				if err := v.remountEmpty(); err != nil {
					return 0, err
				}
			}
			if err := fsbench.DropCaches(); err != nil {
				return 0, err
			}
			t := time.Now()
			if local {
				_, err := fsbench.ReadFiles(paths[true], c.threads, c.ioSize)
				return time.Since(t).Seconds(), err
			}
			err := v.skiff("warmup", "--threads", strconv.Itoa(c.threads), filepath.Join(v.mnt, "warm"))
			return time.Since(t).Seconds(), err
		})
		if err != nil {
			return err
		}
	}
	for _, local := range []bool{true, false} {
		if err := os.RemoveAll(filepath.Dir(paths[local][0])); err != nil {
			return err
		}
	}
	return nil
}

func (v *vol) smallFiles() error {
	c := v.s.cfg
	for i := range c.runs {
		for _, local := range []bool{true, false} {
			dir := filepath.Join(v.mnt, fmt.Sprintf("small.%d", i))
			if local {
				dir = filepath.Join(v.local, fmt.Sprintf("small.%d", i))
			}
			if err := os.Mkdir(dir, 0o755); err != nil {
				return err
			}
			sf := fsbench.SmallFiles{Dir: dir, Count: c.smallFiles, Size: c.smallSize, Threads: 1}
			for _, p := range []struct {
				key string
				fn  func() (fsbench.Result, error)
			}{{"create", sf.Create}, {"stat", sf.Stat}, {"read", sf.Read}, {"delete", sf.Delete}} {
				if err := fsbench.DropCaches(); err != nil {
					return err
				}
				r, err := p.fn()
				if err != nil {
					return fmt.Errorf("%s: %w", p.key, err)
				}
				v.s.sample(p.key, v.kind, local, r.OpsPerSec())
			}
			if err := os.Remove(dir); err != nil {
				return err
			}
		}
	}
	return nil
}

// startRedis starts a redis-server of its own on a free port, with its
// files in dir, and returns its address; it is stopped at the end.
func (s *suite) startRedis(dir string) (string, error) {
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		return "", errors.New("redis-server not found (make deps installs it)")
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	addr := l.Addr().String()
	port := strconv.Itoa(l.Addr().(*net.TCPAddr).Port)
	l.Close()
	// Durable the way a production Redis for skiff is: append-only file,
	// fsync every second; no RDB snapshots in the middle of a run.
	cmd := exec.Command(bin, "--port", port, "--bind", "127.0.0.1", "--dir", dir, "--save", "",
		"--appendonly", "yes", "--appendfsync", "everysec", "--logfile", filepath.Join(dir, "redis.log"))
	if err := cmd.Start(); err != nil {
		return "", err
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	s.cleanup = append(s.cleanup, func() {
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(30 * time.Second):
			cmd.Process.Kill()
			<-exited
		}
	})
	for deadline := time.Now().Add(20 * time.Second); ; {
		if ping(addr) {
			return addr, nil
		}
		select {
		case err := <-exited:
			return "", fmt.Errorf("redis-server exited: %v (log in %s)", err, dir)
		default:
		}
		if time.Now().After(deadline) {
			return "", fmt.Errorf("redis-server on %s does not answer", addr)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func ping(addr string) bool {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return false
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(time.Second))
	if _, err := io.WriteString(c, "PING\r\n"); err != nil {
		return false
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	return err == nil && strings.HasPrefix(line, "+PONG")
}

// mounted reports whether dir is a mount point (listed in mountinfo).
func mounted(dir string) bool {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return false
	}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) > 4 && f[4] == dir {
			return true
		}
	}
	return false
}

func median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// print writes the table: one line per row and volume.
func (s *suite) print(w io.Writer, took time.Duration) {
	c := s.cfg
	fmt.Fprintf(w, "\nskiff vs local disk: medians of %d; ratio = skiff/local (throughput: higher is better; latency, time: lower is better)\n", c.runs)
	mem := human(defaultCacheMem) + " (default)"
	if c.cacheMem > 0 {
		mem = human(c.cacheMem) + " (a quarter of the file: the default is not smaller than it)"
	}
	fmt.Fprintf(w, "%d CPUs, kernel %s, load %s, work dir %s; blocks in a local directory (file://)\n",
		runtime.NumCPU(), kernel(), loadavg(), s.work)
	fmt.Fprintf(w, "skiff mount defaults (durable, no write-back; kernel read-ahead %s) with --buffer-size %s; memory block cache %s\n",
		s.readAhead, human(c.buffer), mem)
	fmt.Fprintf(w, "page cache dropped before every cold, warm, after-warmup and random read on both sides; random reads O_DIRECT on both sides\n")
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "TEST\tVOLUME\tUNIT\tLOCAL\tSKIFF\tRATIO\tTARGET\tRESULT")
	pass, miss := 0, 0
	for _, r := range s.rows {
		for _, vol := range c.volumes {
			sk := median(r.skiff[vol])
			if len(r.skiff[vol]) == 0 {
				continue
			}
			local, ratio, target, result := "—", "—", "—", "info"
			if !r.abs {
				l := median(r.local[vol])
				local = num(l)
				if l > 0 {
					x := sk / l
					ratio = fmt.Sprintf("%.2fx", x)
					if r.target > 0 {
						result = passMiss(r.lowerBetter, x, r.target)
						target = fmt.Sprintf("%s %.1fx", cmp(r.lowerBetter), r.target)
					}
				}
			} else {
				target = fmt.Sprintf("%s %.0f %s", cmp(r.lowerBetter), r.target, r.unit)
				result = passMiss(r.lowerBetter, sk, r.target)
			}
			switch result {
			case "PASS":
				pass++
			case "MISS":
				miss++
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", r.name, vol, r.unit, local, num(sk), ratio, target, result)
		}
	}
	tw.Flush()
	for _, vol := range c.volumes {
		for _, r := range s.rows {
			if r.key == "rss" && len(r.skiff[vol]) > 0 {
				fmt.Fprintf(w, "peak RSS of skiff mount (%s) during the %s write: %.0f MiB (budget: buffer %s + 150 MiB = %.0f MiB)\n",
					vol, human(c.bigSize), median(r.skiff[vol]), human(c.buffer), r.target)
			}
		}
	}
	for _, vol := range c.volumes {
		warm, after := s.skiffMedian("warm", vol), s.skiffMedian("afterwarmup", vol)
		if warm > 0 && after > 0 {
			fmt.Fprintf(w, "first read after warmup (%s) runs at %.2fx of skiff's warm read (%s vs %s MiB/s)\n", vol, after/warm, num(after), num(warm))
		}
	}
	for _, warn := range s.warnings {
		fmt.Fprintln(w, warn)
	}
	fmt.Fprintf(w, "%d PASS, %d MISS; took %s\n", pass, miss, took.Round(time.Second))
}

// skiffMedian is the median of skiff's samples of row key on vol (0:
// none).
func (s *suite) skiffMedian(key, vol string) float64 {
	for _, r := range s.rows {
		if r.key == key {
			return median(r.skiff[vol])
		}
	}
	return 0
}

func cmp(lower bool) string {
	if lower {
		return "<="
	}
	return ">="
}

func passMiss(lower bool, x, target float64) string {
	if (lower && x <= target) || (!lower && x >= target) {
		return "PASS"
	}
	return "MISS"
}

func num(x float64) string {
	switch {
	case x >= 100:
		return fmt.Sprintf("%.0f", x)
	case x >= 10:
		return fmt.Sprintf("%.1f", x)
	}
	return fmt.Sprintf("%.2f", x)
}

// loadavg is the 1-minute load average when the table is printed: the
// figures are only comparable on an otherwise idle machine.
func loadavg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	if f := strings.Fields(string(b)); len(f) > 0 {
		return f[0]
	}
	return "?"
}

func kernel() string {
	var u syscall.Utsname
	if syscall.Uname(&u) != nil {
		return "?"
	}
	var b []byte
	for _, c := range u.Release {
		if c == 0 {
			break
		}
		b = append(b, byte(c))
	}
	return string(b)
}

func logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "%s bench: %s\n", time.Now().Format("15:04:05"), fmt.Sprintf(format, args...))
}

func env(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

func envInt(name string, def int) int {
	if v := os.Getenv(name); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil {
			fail(fmt.Errorf("$%s=%q is not a number", name, v))
		}
		return n
	}
	return def
}

// parseSize parses "4K", "256M", "2G" or a plain byte count.
func parseSize(s string) (int64, error) {
	s = strings.TrimSuffix(strings.TrimSuffix(strings.ToUpper(strings.TrimSpace(s)), "B"), "I")
	mult := int64(1)
	if n := len(s); n > 0 {
		if i := strings.IndexByte("KMGT", s[n-1]); i >= 0 {
			mult, s = int64(1)<<(10*(i+1)), s[:n-1]
		}
	}
	v, err := strconv.ParseInt(s, 10, 64)
	if err != nil || v < 0 {
		return 0, fmt.Errorf("%q is not a size (examples: 4K, 256M, 2G)", s)
	}
	return v * mult, nil
}

func human(n int64) string {
	switch {
	case n >= 1<<30 && n%(1<<30) == 0:
		return fmt.Sprintf("%d GiB", n>>30)
	case n >= 1<<20 && n%(1<<20) == 0:
		return fmt.Sprintf("%d MiB", n>>20)
	case n >= 1<<10 && n%(1<<10) == 0:
		return fmt.Sprintf("%d KiB", n>>10)
	}
	return fmt.Sprintf("%d B", n)
}
