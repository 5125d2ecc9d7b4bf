package soak

import (
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/skiff-fs/skiff/internal/testredis"
)

var (
	flagDuration = flag.Duration("soak.duration", 0, "how long clients run operations (default $SOAK_DURATION, else 30s)")
	flagClients  = flag.Int("soak.clients", 3, "client mount processes")
	flagStore    = flag.String("soak.store", "gcs", "object store: gcs (the emulator behind a fault proxy) or dir")
	flagSeed     = flag.Uint64("soak.seed", 0, "random seed (0: from the clock; printed for replay)")
	flagSkiff    = flag.String("soak.skiff", "", "skiff binary to run (default: built from ./cmd/skiff)")
	flagFaults   = flag.Duration("soak.fault-every", 0, "mean pause between faults (default duration/10, within 2s..8s)")
	flagErrRate  = flag.Float64("soak.obj-errors", 0.03, "share of object store requests answered 503")
	flagLatency  = flag.Duration("soak.obj-latency", 100*time.Millisecond, "longest latency added to a fifth of object store requests")
	flagGCMinAge = flag.Duration("soak.gc-min-age", 10*time.Second, "--min-age of the gc --delete runs during the run")
	flagHang     = flag.Duration("soak.hang", 90*time.Second, "an operation running longer counts as a hang: its client is killed and remounted")
	flagPause    = flag.Duration("soak.pause", 5*time.Millisecond, "longest random pause between a worker's operations")
)

// TestSoak is the soak of issue 12: clients on one Redis volume doing
// random operations while Redis restarts, the object store fails and
// lags, clients are killed -9 and remounted and gc --delete runs; then
// fsck must be clean and every acknowledged byte must read back. See the
// package doc.
func TestSoak(t *testing.T) {
	if testing.Short() {
		t.Skip("the soak takes 30 s or more; skipped with -short")
	}
	dur, err := durationSetting(*flagDuration, 30*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	seed := *flagSeed
	if seed == 0 {
		seed = uint64(time.Now().UnixNano())
	}
	faultEvery := *flagFaults
	if faultEvery <= 0 {
		faultEvery = min(max(dur/10, 2*time.Second), 8*time.Second)
	}
	t.Logf("soak: %v, %d clients, store %s, seed %d (replay with -soak.seed=%d)", dur, *flagClients, *flagStore, seed, seed)
	started := time.Now()
	// The whole test is bounded: setup, the run, and the checks.
	watchdog := time.AfterFunc(dur+15*time.Minute, func() {
		panic(fmt.Sprintf("soak: still running %v after it started (a hang in teardown or checks)", time.Since(started)))
	})
	defer watchdog.Stop()

	dir := t.TempDir()
	c := &cluster{t: t, dir: dir, st: newStats()}
	c.skiff = *flagSkiff
	if c.skiff == "" {
		c.skiff = buildSkiff(t, dir)
		t.Logf("built skiff in %v", time.Since(started).Round(time.Millisecond))
	}
	c.redis = testredis.Start(t, testredis.WithPersistence())
	c.metaURL = c.redis.URL()
	c.env = os.Environ()
	var bucket string
	switch *flagStore {
	case "gcs":
		var addr string
		c.proxy, addr = startGCS(t, "soak", seed, *flagErrRate, *flagLatency)
		c.env = append(c.env, "STORAGE_EMULATOR_HOST="+addr)
		bucket = "gs://soak/vol"
	case "dir":
		bucket = "file://" + filepath.Join(dir, "blocks")
	default:
		t.Fatalf("-soak.store %q: want gcs or dir", *flagStore)
	}
	if out, err := c.run(2*time.Minute, "format", "--bucket", bucket, "--block-size", "64K", c.metaURL, "soak"); err != nil {
		t.Fatalf("skiff format: %v\n%s", err, out)
	}

	clients := make([]*client, *flagClients)
	t.Cleanup(func() {
		// On any failure: no process or mount outlives the test.
		for _, cl := range clients {
			if cl != nil && cl.cmd != nil && cl.cmd.ProcessState == nil {
				cl.cmd.Process.Kill()
				<-cl.done
			}
			if cl != nil {
				cl.detach()
			}
		}
	})
	for i := range clients {
		cl := &client{id: i, c: c, mnt: filepath.Join(dir, fmt.Sprintf("mnt%d", i))}
		if err := os.Mkdir(cl.mnt, 0o755); err != nil {
			t.Fatal(err)
		}
		clients[i] = cl
		if err := cl.mount(); err != nil {
			t.Fatal(err)
		}
	}
	o := &Oracle{}
	all := &sharedFiles{}
	workers := make([]*worker, len(clients))
	for i, cl := range clients {
		root := fmt.Sprintf("c%d", i)
		if err := os.Mkdir(filepath.Join(cl.mnt, root), 0o755); err != nil {
			t.Fatalf("mkdir %s: %v", root, err)
		}
		o.NewDir(root, false)
		workers[i] = &worker{
			cl: cl, o: o, st: c.st, rng: rand.New(rand.NewPCG(seed, uint64(i)+1)),
			root: root, dirs: []string{root}, handles: map[*fileState]*handle{}, all: all,
		}
	}
	if c.proxy != nil {
		c.proxy.on.Store(true)
	}
	t.Logf("volume formatted and %d clients mounted at %v; running", len(clients), time.Since(started).Round(time.Millisecond))

	// The run: workers, faults and the hang watchdog until dur is up.
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for _, w := range workers {
		wg.Add(1)
		go func() { defer wg.Done(); w.run(stop, *flagPause) }()
	}
	faultErr := make(chan error, 1)
	var bg sync.WaitGroup
	bg.Add(2)
	go func() { defer bg.Done(); faultErr <- injectFaults(c, clients, seed, faultEvery, stop) }()
	go func() { defer bg.Done(); watchHangs(c, clients, stop) }()
	select {
	case <-time.After(dur):
	case err := <-faultErr:
		faultErr <- err
	}
	close(stop)
	bg.Wait()
	// Workers close their handles; a close that hangs is caught by the
	// watchdog below, which remounts the client to end it.
	workersDone := make(chan struct{})
	go func() { wg.Wait(); close(workersDone) }()
	endHangs := make(chan struct{})
	bg.Add(1)
	go func() { defer bg.Done(); watchHangs(c, clients, endHangs) }()
	<-workersDone
	close(endHangs)
	bg.Wait()
	if err := <-faultErr; err != nil {
		t.Fatalf("fault injection broke the setup: %v", err)
	}
	t.Logf("run over and handles closed at %v; unmounting", time.Since(started).Round(time.Millisecond))

	// The checks, with the object store's faults off.
	if c.proxy != nil {
		c.proxy.on.Store(false)
	}
	unclean := 0
	for _, cl := range clients {
		if !cl.unmount(2 * time.Minute) {
			unclean++
			c.st.hang("client %d: skiff mount did not exit cleanly after SIGTERM at the end", cl.id)
		}
	}
	t.Logf("unmounted at %v; gc and fsck", time.Since(started).Round(time.Millisecond))
	gcOut, gcErr := c.run(5*time.Minute, "gc", "--delete", "--min-age", "0s", c.metaURL)
	if gcErr != nil {
		t.Errorf("skiff gc --delete after the run: %v\n%s", gcErr, gcOut)
	}
	fsckOut, fsckErr := c.run(10*time.Minute, "fsck", c.metaURL)
	fsckResult := "clean"
	if fsckErr != nil {
		fsckResult = "FAILED: " + fsckErr.Error()
		t.Errorf("skiff fsck: %v\n%s", fsckErr, fsckOut)
	}

	verifier := &client{id: len(clients), c: c, mnt: filepath.Join(dir, "verify")}
	if err := os.Mkdir(verifier.mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	clients = append(clients, verifier) // for the cleanup
	if err := verifier.mount(); err != nil {
		t.Fatal(err)
	}
	var tops []string
	for _, w := range workers {
		tops = append(tops, w.root)
	}
	files, dirs, readErr := readTree(verifier.mnt, tops)
	verifier.unmount(time.Minute)
	if readErr != nil {
		t.Errorf("reading the volume back: %v", readErr)
	}
	res := o.Verify(files, dirs)

	// The summary.
	st := c.st
	st.mu.Lock()
	defer st.mu.Unlock()
	var b strings.Builder
	fmt.Fprintf(&b, "soak summary (seed %d, %v of operations, %v in all):\n", seed, dur, time.Since(started).Round(time.Second))
	fmt.Fprintf(&b, "  operations done: %d (%s)\n", total(st.ops), sortedCounts(st.ops))
	fmt.Fprintf(&b, "  operations failed: %d (%s)\n", total(st.failed), sortedCounts(st.failed))
	fmt.Fprintf(&b, "  errors seen: %s\n", sortedCounts(st.errnos))
	fmt.Fprintf(&b, "  faults injected: %d (%s)\n", total(st.faults), sortedCounts(st.faults))
	if c.proxy != nil {
		fmt.Fprintf(&b, "  object store: %d requests, %d failed before, %d after taking effect, %d delayed\n",
			c.proxy.requests.Load(), c.proxy.errorsBefore.Load(), c.proxy.errorsAfter.Load(), c.proxy.delayed.Load())
	}
	fmt.Fprintf(&b, "  kills survived: %d client processes killed -9 and remounted\n", st.killed)
	fmt.Fprintf(&b, "  hangs: %d\n", len(st.hangs))
	for _, h := range st.hangs {
		fmt.Fprintf(&b, "    %s\n", h)
	}
	fmt.Fprintf(&b, "  final gc: %s\n", lineWith(gcOut, "objects "))
	fmt.Fprintf(&b, "  fsck: %s (%s)\n", fsckResult, lineWith(fsckOut, "checked "))
	fmt.Fprintf(&b, "  files checked: %d (%d exact, %d with unacknowledged changes of unknown fate); bytes verified: %d\n",
		res.Files, res.ExactFiles, res.InexactFiles, res.BytesVerified)
	fmt.Fprintf(&b, "  problems: %d, anomalies during the run: %d\n", len(res.Problems), len(st.anomalies))
	var lossLogs []string
	logs, _ := filepath.Glob(filepath.Join(dir, "client*.log"))
	for _, l := range logs {
		lossLogs = append(lossLogs, grepFile(l, "DATA LOSS", 3)...)
	}
	if len(lossLogs) > 0 {
		fmt.Fprintf(&b, "  DATA LOSS log lines: %d, e.g. %s\n", len(lossLogs), lossLogs[0])
	}
	t.Log(b.String())
	for _, p := range res.Problems {
		t.Errorf("acknowledged data: %s", p)
	}
	for _, a := range st.anomalies {
		t.Errorf("wrong bytes during the run: %s", a)
	}
	if t.Failed() {
		t.Logf("replay with -soak.seed=%d (the interleaving of faults and operations will differ)", seed)
	}
}

// lineWith is the first line of s that starts with prefix.
func lineWith(s, prefix string) string {
	for _, l := range strings.Split(s, "\n") {
		if strings.HasPrefix(strings.TrimSpace(l), prefix) {
			return strings.TrimSpace(l)
		}
	}
	return strings.TrimSpace(s)
}

// injectFaults injects one fault about every `every` until stop: Redis
// restarted (SIGTERM or SIGKILL), a client killed -9 and remounted, or
// skiff gc --delete. It returns an error only when the setup cannot go
// on (Redis or a mount does not come back).
func injectFaults(c *cluster, clients []*client, seed uint64, every time.Duration, stop <-chan struct{}) error {
	rng := rand.New(rand.NewPCG(seed, 99))
	for {
		wait := every/2 + time.Duration(rng.Int64N(int64(every)))
		select {
		case <-stop:
			return nil
		case <-time.After(wait):
		}
		c.faultMu.Lock()
		began := time.Now()
		var kind string
		err := func() error {
			switch k := rng.IntN(4); k {
			case 0, 1:
				kill := k == 1
				down := 200*time.Millisecond + time.Duration(rng.Int64N(int64(2*time.Second)))
				kind = "redis SIGTERM+restart"
				if kill {
					kind = "redis SIGKILL+restart"
				}
				c.st.fault(kind)
				if err := c.restartRedis(kill, down); err != nil {
					return fmt.Errorf("%s: %w", kind, err)
				}
			case 2:
				cl := clients[rng.IntN(len(clients))]
				kind = "client kill -9+remount"
				c.st.fault(kind)
				if err := cl.killRemount(); err != nil {
					return err
				}
				c.st.mu.Lock()
				c.st.killed++
				c.st.mu.Unlock()
			case 3:
				kind = "gc --delete"
				c.st.fault(kind)
				out, err := c.run(2*time.Minute, "gc", "--delete", "--min-age", c.gcMinAge().String(), c.metaURL)
				c.st.op("gc", err)
				if err != nil {
					c.t.Logf("gc --delete during the run failed (counted, not fatal): %v: %s", err, strings.TrimSpace(out))
				}
			}
			return nil
		}()
		c.faultMu.Unlock()
		c.t.Logf("fault: %s (%v)", kind, time.Since(began).Round(time.Millisecond))
		if err != nil {
			return err
		}
	}
}

func (c *cluster) gcMinAge() time.Duration { return *flagGCMinAge }

// watchHangs kills and remounts a client whose operation has run longer
// than -soak.hang, recording the hang, until stop.
func watchHangs(c *cluster, clients []*client, stop <-chan struct{}) {
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		select {
		case <-stop:
			return
		case <-tick.C:
		}
		for _, cl := range clients {
			s := cl.opStart.Load()
			if s == 0 || time.Since(time.Unix(0, s)) < *flagHang {
				continue
			}
			what, _ := cl.opName.Load().(string)
			c.st.hang("client %d: %q did not return within %v; killed and remounted", cl.id, what, *flagHang)
			c.t.Logf("HANG: client %d: %q running for %v: killing the mount", cl.id, what, time.Since(time.Unix(0, s)).Round(time.Second))
			c.faultMu.Lock()
			cl.opStart.Store(0)
			if err := cl.killRemount(); err != nil {
				c.t.Logf("remount after a hang: %v", err)
			}
			c.faultMu.Unlock()
		}
	}
}
