package sidecar

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sys/unix"

	"github.com/skiff-fs/skiff/internal/redact"
	"github.com/skiff-fs/skiff/sidecar/telemetry"
)

// Sidecar mounts a pod's volumes, keeps them mounted, serves the probes
// and, when its context ends, flushes and unmounts. See the package
// documentation.
type Sidecar struct {
	cfg     Config
	log     *slog.Logger
	budget  Budget
	mounter Mounter
	vols    []*volState
	reg     *prometheus.Registry
	metrics *metrics
	fuseOps *telemetry.FuseOps // of the volumes served in this process

	heartbeat atomic.Int64 // unix nanoseconds of the mount loop's last round
	stopping  atomic.Bool

	graceOnce sync.Once
	graceCtx  context.Context
	graceStop context.CancelFunc

	// statfs is statfsFUSE; tests replace it to simulate a hung mount.
	statfs func(mp string) error
}

// volState is one volume's lifecycle state. The mount loop (keep) owns
// m's lifetime; probes only read it.
type volState struct {
	spec *Spec

	mu struct {
		sync.Mutex
		m        Mounted    // nil while not mounted
		mounting time.Time  // start of the running Mount call, zero if none
		call     *probeCall // the statfs in flight, if any
		lastErr  error      // of the last mount attempt
	}
	mounts, failures, stale atomic.Int64
}

type probeCall struct {
	done chan struct{}
	err  error
}

// New validates cfg, reads every volume's Secret files and returns a
// Sidecar ready to Run. Nothing is mounted yet.
func New(cfg Config) (*Sidecar, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	specs, err := cfg.specs()
	if err != nil {
		return nil, err
	}
	s := &Sidecar{cfg: cfg, log: cfg.Logger, budget: cfg.budget(), statfs: statfsFUSE, fuseOps: telemetry.NewFuseOps(true)}
	switch {
	case cfg.Mounter != nil:
		s.mounter = cfg.Mounter
	case cfg.Mode == ModeSupervised:
		s.mounter = Supervised{Binary: cfg.SkiffBinary, WorkerBinary: cfg.WorkerBinary, RunDir: cfg.StageDir, Logger: cfg.Logger, TrustInputs: cfg.TrustInputs}
	default:
		s.mounter = Direct{Version: cfg.Version, Logger: cfg.Logger, Ops: s.fuseOps, TrustInputs: cfg.TrustInputs}
	}
	for _, sp := range specs {
		if len(sp.Ignored) > 0 {
			s.log.Warn("ignoring unknown mount options", "volume", sp.Name, "options", sp.Ignored)
		}
		s.vols = append(s.vols, &volState{spec: sp})
	}
	s.heartbeat.Store(time.Now().UnixNano())
	s.reg, s.metrics = newRegistry(s)
	return s, nil
}

// Budget is the memory budget in use.
func (s *Sidecar) Budget() Budget { return s.budget }

// Run listens on cfg.ProbeAddr, mounts every volume (detaching stale
// mounts first, retrying failed mounts with backoff, mounting again a
// volume whose mount went away) and serves the probes until ctx ends.
// Then it shuts every volume down within cfg.GracePeriod. It returns nil
// when every volume was flushed and unmounted cleanly.
func (s *Sidecar) Run(ctx context.Context) error {
	ln, err := net.Listen("tcp", s.cfg.ProbeAddr)
	if err != nil {
		return fmt.Errorf("probe port: %w", err)
	}
	return s.Serve(ctx, ln)
}

// Serve is Run on a listener the caller opened.
func (s *Sidecar) Serve(ctx context.Context, ln net.Listener) error {
	srv := &http.Server{Handler: s.Handler(), ReadHeaderTimeout: 5 * time.Second}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.log.Error("probe server", "err", err)
		}
	}()
	s.log.Info("sidecar starting", "volumes", len(s.vols), "probe", ln.Addr().String(),
		"bufferBytes", s.budget.Buffer, "cacheMemBytes", s.budget.CacheMem, "memoryLimit", s.budget.MemoryLimit)

	errs := make([]error, len(s.vols))
	var loops sync.WaitGroup
	for i, vs := range s.vols {
		loops.Add(1)
		go func() {
			defer loops.Done()
			errs[i] = s.keep(ctx, vs)
		}()
	}
	// The heartbeat shows /healthz that the process schedules and the
	// loops are not wedged.
	tick := time.NewTicker(time.Second)
loop:
	for {
		select {
		case <-ctx.Done():
			break loop
		case <-tick.C:
			s.heartbeat.Store(time.Now().UnixNano())
		}
	}
	tick.Stop()
	s.stopping.Store(true)
	s.log.Info("stopping: flushing and unmounting", "grace", s.cfg.GracePeriod)
	s.grace() // the deadline runs from now
	done := make(chan struct{})
	go func() { loops.Wait(); close(done) }()
	// Keep the heartbeat while shutting down.
	hb := time.NewTicker(time.Second)
	for waiting := true; waiting; {
		select {
		case <-done:
			waiting = false
		case <-hb.C:
			s.heartbeat.Store(time.Now().UnixNano())
		}
	}
	hb.Stop()
	s.graceStop()
	sctx, cancel := context.WithTimeout(context.Background(), time.Second)
	_ = srv.Shutdown(sctx)
	cancel()
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return err
	}
	s.log.Info("every volume flushed and unmounted")
	return nil
}

// grace is the shutdown context, created at the first call.
func (s *Sidecar) grace() context.Context {
	s.graceOnce.Do(func() {
		s.graceCtx, s.graceStop = context.WithTimeout(context.Background(), s.cfg.GracePeriod)
	})
	return s.graceCtx
}

// Backoff of mount retries.
const (
	backoffMin = 500 * time.Millisecond
	backoffMax = 30 * time.Second
)

// keep mounts vs and keeps it mounted until ctx ends, then shuts it down.
func (s *Sidecar) keep(ctx context.Context, vs *volState) error {
	log := s.log.With("volume", vs.spec.Name)
	backoff := backoffMin
	for {
		if ctx.Err() != nil {
			return nil
		}
		m, err := s.mountOnce(ctx, vs, log)
		if err != nil {
			vs.failures.Add(1)
			if ctx.Err() != nil {
				return nil
			}
			log.Error("mount failed; retrying", "err", err, "in", backoff)
			select {
			case <-ctx.Done():
				return nil
			case <-time.After(backoff):
			}
			backoff = min(backoff*2, backoffMax)
			continue
		}
		backoff = backoffMin
		vs.mounts.Add(1)
		log.Info("volume mounted", "mountPath", vs.spec.MountPath)
		select {
		case <-ctx.Done():
			err := m.Shutdown(s.grace())
			vs.setMounted(nil)
			if err != nil {
				log.Error("shutdown incomplete", "err", err)
				return fmt.Errorf("volume %s: %w", vs.spec.Name, err)
			}
			log.Info("volume flushed and unmounted")
			return nil
		case <-m.Done():
			vs.setMounted(nil)
			log.Warn("the mount went away (unmounted from outside, or its server died); mounting again")
			sctx, cancel := context.WithTimeout(context.Background(), s.cfg.GracePeriod)
			if err := m.Shutdown(sctx); err != nil {
				log.Error("cleaning up the lost mount", "err", err)
			}
			cancel()
		}
	}
}

func (s *Sidecar) mountOnce(ctx context.Context, vs *volState, log *slog.Logger) (Mounted, error) {
	vs.mu.Lock()
	vs.mu.mounting = time.Now()
	vs.mu.Unlock()
	defer func() {
		vs.mu.Lock()
		vs.mu.mounting = time.Time{}
		vs.mu.Unlock()
	}()
	n, stack, err := recoverStale(vs.spec.MountPath, log)
	vs.stale.Add(int64(n))
	if stack {
		vs.stale.Add(1)
	}
	if err == nil {
		var m Mounted
		_ = stack // always stacked; see mountStacked
		m, err = s.mountStacked(ctx, vs, log)
		if err == nil {
			vs.setMounted(m)
			return m, nil
		}
	}
	err = redactErr(err, vs.spec)
	vs.mu.Lock()
	vs.mu.lastErr = err
	vs.mu.Unlock()
	return nil, err
}

// mountStacked mounts the volume on a staging directory of the sidecar's
// own and binds it onto the mount path: on top of the emptyDir's mount
// (fuse.CheckMountpoint refuses to mount on a mount point, and in a pod
// the mount path always is one), or of the dead shared mount a previous
// sidecar left (see recoverStale). The bind propagates to the apps.
func (s *Sidecar) mountStacked(ctx context.Context, vs *volState, log *slog.Logger) (Mounted, error) {
	stage := filepath.Join(s.cfg.StageDir, vs.spec.Name)
	if _, _, err := recoverStale(stage, log); err != nil {
		return nil, fmt.Errorf("staging directory: %w", err)
	}
	sp := *vs.spec
	sp.MountPath = stage
	m, err := s.mounter.Mount(ctx, &sp)
	if err != nil {
		return nil, err
	}
	if err := unix.Mount(stage, vs.spec.MountPath, "", unix.MS_BIND, ""); err != nil {
		sctx, cancel := context.WithTimeout(context.Background(), s.cfg.GracePeriod)
		defer cancel()
		_ = m.Shutdown(sctx)
		return nil, fmt.Errorf("bind %s onto %s: %w", stage, vs.spec.MountPath, err)
	}
	st := &stacked{Mounted: m, target: vs.spec.MountPath, log: log, done: make(chan struct{}), stop: make(chan struct{})}
	go st.watch()
	return st, nil
}

// stacked is a mount bound onto the mount path from a staging directory.
type stacked struct {
	Mounted
	target string
	log    *slog.Logger
	done   chan struct{} // closed by watch
	stop   chan struct{} // closed by Shutdown
	once   sync.Once
}

// Unwrap is the staged mount.
func (m *stacked) Unwrap() Mounted { return m.Mounted }

// Done is closed when the staged mount ends or the bind on the mount
// path is gone (unmounted from outside).
func (m *stacked) Done() <-chan struct{} { return m.done }

// watch closes done when the staged mount ends or the mount table no
// longer lists a skiff mount on the target.
func (m *stacked) watch() {
	defer close(m.done)
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-m.stop:
			return
		case <-m.Mounted.Done():
			return
		case <-t.C:
			es, err := mountsAt(m.target)
			if err == nil && (len(es) == 0 || !es[len(es)-1].isSkiff()) {
				return
			}
		}
	}
}

// Shutdown detaches the bind (lazily: the detach propagates to the
// apps, who then see what was below it again: the emptyDir, or the dead
// mount of a previous sidecar until the pod ends), then shuts the staged
// mount down.
func (m *stacked) Shutdown(ctx context.Context) error {
	m.once.Do(func() { close(m.stop) })
	<-m.done
	var errs []error
	// The bind is only a view of the staged mount: detach it at once,
	// and by propagation the apps' copies of it. Files open there keep
	// working until closed. (A plain unmount is not enough: it can
	// succeed here while an app's busy copy stays mounted.)
	if err := unix.Unmount(m.target, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) {
		errs = append(errs, fmt.Errorf("detach %s: %w", m.target, err))
	}
	if es, err := mountsAt(m.target); err == nil && len(es) > 0 && es[len(es)-1].isSkiff() {
		m.log.Warn("a skiff mount is still on the mount path after detaching the bind", "mountPath", m.target)
	}
	return errors.Join(append(errs, m.Mounted.Shutdown(ctx))...)
}

func (vs *volState) setMounted(m Mounted) {
	vs.mu.Lock()
	vs.mu.m = m
	if m != nil {
		vs.mu.lastErr = nil
	}
	vs.mu.Unlock()
}

func (vs *volState) mounted() Mounted {
	vs.mu.Lock()
	defer vs.mu.Unlock()
	return vs.mu.m
}

// check is the readiness of one volume: mounted, and statfs on the mount
// point answers within d. At most one statfs per volume is in flight: a
// probe that finds one running waits for it (within d) instead of
// starting another, so a hung mount costs one blocked goroutine, not one
// per probe.
func (s *Sidecar) check(vs *volState, d time.Duration) error {
	vs.mu.Lock()
	if vs.mu.m == nil {
		err := vs.mu.lastErr
		vs.mu.Unlock()
		if err != nil {
			return fmt.Errorf("volume %s is not mounted: %v", vs.spec.Name, err)
		}
		return fmt.Errorf("volume %s is not mounted yet", vs.spec.Name)
	}
	c := vs.mu.call
	if c == nil {
		c = &probeCall{done: make(chan struct{})}
		vs.mu.call = c
		go func() {
			start := time.Now()
			err := s.statfs(vs.spec.MountPath)
			s.metrics.statfs.WithLabelValues(vs.spec.Name).Observe(time.Since(start).Seconds())
			c.err = err
			vs.mu.Lock()
			vs.mu.call = nil
			vs.mu.Unlock()
			close(c.done)
		}()
	}
	vs.mu.Unlock()
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-c.done:
		if c.err != nil {
			return fmt.Errorf("volume %s: %w", vs.spec.Name, c.err)
		}
		return nil
	case <-t.C:
		return fmt.Errorf("volume %s: statfs on %s did not answer within %s", vs.spec.Name, vs.spec.MountPath, d)
	}
}

// Ready reports nil when every volume is mounted and answers statfs
// within cfg.ReadyTimeout; the volumes are checked in parallel.
func (s *Sidecar) Ready() error {
	if s.stopping.Load() {
		return errors.New("the sidecar is stopping")
	}
	errs := make([]error, len(s.vols))
	var wg sync.WaitGroup
	for i, vs := range s.vols {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = s.check(vs, s.cfg.ReadyTimeout)
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

// Healthy reports nil while the mount loop runs: its heartbeat is recent
// and no mount attempt has been stuck for long.
func (s *Sidecar) Healthy() error {
	if age := time.Since(time.Unix(0, s.heartbeat.Load())); age > s.cfg.HealthTimeout {
		return fmt.Errorf("the mount loop has not run for %s", age.Round(time.Second))
	}
	for _, vs := range s.vols {
		vs.mu.Lock()
		since := vs.mu.mounting
		vs.mu.Unlock()
		if !since.IsZero() && time.Since(since) > 4*s.cfg.HealthTimeout {
			return fmt.Errorf("mounting volume %s has been stuck for %s", vs.spec.Name, time.Since(since).Round(time.Second))
		}
	}
	return nil
}

// upgrader is a Mounted whose server can be replaced in place.
type upgrader interface {
	Upgrade(ctx context.Context) (telemetry.Status, error)
}

// Upgrade replaces the worker of every supervised volume by one started
// from Config.WorkerBinary, without unmounting (cmd/skiff-sidecar calls
// it on SIGUSR2), and waits until each reports its new version or ctx
// ends. Volumes not mounted right now start from the new binary at
// their next mount anyway. In direct mode it fails: there is no worker
// to replace.
func (s *Sidecar) Upgrade(ctx context.Context) error {
	if s.cfg.Mode != ModeSupervised && s.cfg.Mounter == nil {
		return errors.New("upgrade: the volumes are served in the sidecar process itself; in-place upgrades need --mount-mode=supervised")
	}
	errs := make([]error, len(s.vols))
	var wg sync.WaitGroup
	for i, vs := range s.vols {
		log := s.log.With("volume", vs.spec.Name)
		m := vs.mounted()
		if m == nil {
			log.Info("upgrade: the volume is not mounted; its next mount starts from the worker binary")
			continue
		}
		u, ok := as[upgrader](m)
		if !ok {
			errs[i] = fmt.Errorf("upgrade: volume %s cannot be upgraded in place", vs.spec.Name)
			continue
		}
		var before string
		if r, ok := as[remote](m); ok {
			if st, err := r.Status(); err == nil {
				before = st.WorkerVersion
			}
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			st, err := u.Upgrade(ctx)
			if err != nil {
				errs[i] = fmt.Errorf("upgrade volume %s: %w", vs.spec.Name, err)
				return
			}
			if st.WorkerVersion == before {
				// The supervisor falls back to a worker of the previous
				// command when the new one does not start.
				log.Warn("worker replaced, but it runs the same version as before: if a new binary was delivered, it did not start (see the supervisor's log)", "version", st.WorkerVersion, "pid", st.WorkerPID, "generation", st.Generation)
				return
			}
			log.Info("worker replaced", "version", st.WorkerVersion, "from", before, "pid", st.WorkerPID, "generation", st.Generation)
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

// redactedError is an error whose text has the volume's secrets removed;
// errors.Is and As still see the original.
type redactedError struct {
	msg string
	err error
}

func (e *redactedError) Error() string { return e.msg }
func (e *redactedError) Unwrap() error { return e.err }

// redactErr removes spec's META_URL, its password and the passphrase
// from err's text: the error goes to the log, whose tail becomes the
// container's termination message.
func redactErr(err error, spec *Spec) error {
	if err == nil {
		return nil
	}
	msg := redact.Secrets(err.Error(), spec.MetaURL, string(spec.Passphrase))
	if msg == err.Error() {
		return err
	}
	return &redactedError{msg: msg, err: err}
}
