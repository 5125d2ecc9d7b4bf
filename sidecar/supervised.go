package sidecar

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"time"

	dto "github.com/prometheus/client_model/go"

	"github.com/skiff-fs/skiff/fsclient/fuse"
	"github.com/skiff-fs/skiff/sidecar/telemetry"
)

// Supervised mounts each volume by running `skiff mount --supervise` (the
// supervisor of fsclient/fuse/supervisor, which holds /dev/fuse and
// restarts the worker serving the volume when it dies). The supervisor
// is a child of the sidecar with SIGKILL as its parent-death signal, so a
// crashed sidecar takes it along, as a container restart would.
//
// The META_URL reaches the supervisor and its workers as a file name
// (--meta-url-file, the Secret's metaurl file): no command line in the
// pod shows it. The supervisor writes its status (worker pid, version,
// generation) to RunDir/<volume>.status and each worker serves its
// counters on the unix socket RunDir/<volume>.metrics, which the
// sidecar's /metrics gathers with a volume label.
type Supervised struct {
	// Binary is the skiff binary.
	Binary string
	// WorkerBinary is what the supervisor runs as its worker, read again
	// at each upgrade (--worker-binary). Default: Binary.
	WorkerBinary string
	// RunDir holds the status files and metrics sockets. "" turns both
	// off (no worker metrics, no status, Upgrade cannot report).
	RunDir string
	// Output receives the supervisor's and worker's output. Default
	// os.Stderr.
	Output io.Writer
	Logger *slog.Logger
	// StartTimeout bounds the wait for the mount. Default 1 min.
	StartTimeout time.Duration
	// TrustInputs leaves out skiff mount's --restricted
	// (Config.TrustInputs). Default false: the mount is restricted.
	TrustInputs bool
}

func (m Supervised) statusFile(s *Spec) string {
	if m.RunDir == "" {
		return ""
	}
	return filepath.Join(m.RunDir, s.Name+".status")
}

func (m Supervised) metricsSocket(s *Spec) string {
	if m.RunDir == "" {
		return ""
	}
	return filepath.Join(m.RunDir, s.Name+".metrics")
}

// maxSocketPath is the longest unix socket path (sun_path holds 108
// bytes with the terminating NUL).
const maxSocketPath = 107

// Args are the arguments of `skiff mount --supervise` for spec. The
// META_URL is passed as the name of the file holding it, never itself.
func (m Supervised) Args(s *Spec) ([]string, error) {
	if s.MetaURLFile == "" {
		return nil, fmt.Errorf("volume %s: supervised mounts read the META_URL from its Secret file, so that no command line shows it; the volume has no metaurl file", s.Name)
	}
	a := []string{"mount", "--supervise",
		"--meta-url-file=" + s.MetaURLFile,
		"--read-only=" + strconv.FormatBool(s.ReadOnly),
		"--subdir=" + s.Subdir,
		"--attr-timeout=" + s.AttrTimeout.String(),
		"--entry-timeout=" + s.EntryTimeout.String(),
		"--dir-entry-timeout=" + s.DirEntryTimeout.String(),
		"--allow-other=" + strconv.FormatBool(s.AllowOther),
		"--buffer-size=" + strconv.FormatInt(s.BufferSize, 10),
		"--upload-concurrency=" + strconv.Itoa(s.UploadConcurrency),
		"--debug=" + strconv.FormatBool(s.Debug),
		"--cache-writes=" + strconv.FormatBool(s.CacheWrites),
	}
	if !m.TrustInputs {
		a = append(a, "--restricted")
	}
	if s.CacheDir != "" {
		a = append(a, "--cache-dir="+s.CacheDir, "--cache-size="+strconv.FormatInt(s.CacheSize, 10),
			"--cache-mem="+strconv.FormatInt(s.CacheMem, 10))
	} else {
		a = append(a, "--cache-size=0")
	}
	if s.FlushAfter > 0 {
		a = append(a, "--flush-after="+s.FlushAfter.String())
	}
	if s.PassphraseFile != "" {
		a = append(a, "--passphrase-file="+s.PassphraseFile)
	}
	if s.CredentialsFile != "" {
		a = append(a, "--google-credentials="+s.CredentialsFile)
	}
	if m.WorkerBinary != "" {
		a = append(a, "--worker-binary="+m.WorkerBinary)
	}
	if m.RunDir != "" {
		sock := m.metricsSocket(s)
		if len(sock) > maxSocketPath {
			return nil, fmt.Errorf("volume %s: the metrics socket %s is longer than a unix socket path may be (%d bytes): choose a shorter staging directory (--stage-dir)", s.Name, sock, maxSocketPath)
		}
		a = append(a, "--status-file="+m.statusFile(s), "--metrics-socket="+sock)
	}
	return append(a, s.MountPath), nil
}

// Mount implements Mounter.
func (m Supervised) Mount(ctx context.Context, s *Spec) (Mounted, error) {
	log := m.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	log = log.With("volume", s.Name)
	out := m.Output
	if out == nil {
		out = os.Stderr
	}
	timeout := m.StartTimeout
	if timeout <= 0 {
		timeout = time.Minute
	}
	args, err := m.Args(s)
	if err != nil {
		return nil, err
	}
	status := m.statusFile(s)
	if status != "" {
		// A status left by a previous supervisor would describe it.
		if err := os.Remove(status); err != nil && !errors.Is(err, os.ErrNotExist) {
			return nil, err
		}
	}
	cmd := exec.Command(m.Binary, args...)
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s mount --supervise: %w", m.Binary, err)
	}
	sm := &supervised{spec: s, cmd: cmd, log: log, status: status, socket: m.metricsSocket(s), done: make(chan struct{})}
	go func() {
		sm.waitErr = cmd.Wait()
		close(sm.done)
	}()
	// Mounted when the mount table lists a skiff FUSE mount there and it
	// answers statfs.
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-sm.done:
			return nil, fmt.Errorf("skiff mount --supervise exited before mounting: %v", sm.waitErr)
		case <-ctx.Done():
			sm.kill()
			return nil, ctx.Err()
		case <-deadline.C:
			sm.kill()
			return nil, fmt.Errorf("skiff mount --supervise did not mount %s within %s", s.MountPath, timeout)
		case <-tick.C:
			if ok, _ := skiffMounted(s.MountPath); ok {
				if err := statfsTimeout(s.MountPath, time.Second); err == nil {
					return sm, nil
				}
			}
		}
	}
}

type supervised struct {
	spec           *Spec
	cmd            *exec.Cmd
	log            *slog.Logger
	status, socket string // "" when off
	done           chan struct{}
	waitErr        error // valid once done is closed

	once sync.Once
	err  error
}

func (m *supervised) Done() <-chan struct{} { return m.done }

// Stats is empty: the counters are the worker's, gathered by Gather.
func (m *supervised) Stats() Stats { return Stats{} }

// Gather scrapes the worker's metrics socket.
func (m *supervised) Gather(ctx context.Context) (map[string]*dto.MetricFamily, error) {
	if m.socket == "" {
		return nil, errors.New("no metrics socket (the sidecar has no run directory)")
	}
	return telemetry.Scrape(ctx, m.socket)
}

// Status reads the supervisor's status file.
func (m *supervised) Status() (telemetry.Status, error) {
	if m.status == "" {
		return telemetry.Status{}, errors.New("no status file (the sidecar has no run directory)")
	}
	return telemetry.ReadStatus(m.status)
}

// Upgrade sends SIGUSR2 to the supervisor, which replaces its worker by
// one started from its --worker-binary, and waits until the status
// file shows a new worker, or ctx ends. It returns the new status.
func (m *supervised) Upgrade(ctx context.Context) (telemetry.Status, error) {
	before, err := m.Status()
	if err != nil {
		return before, fmt.Errorf("cannot follow the upgrade: %w", err)
	}
	if err := m.cmd.Process.Signal(syscall.SIGUSR2); err != nil {
		return before, fmt.Errorf("signal the supervisor: %w", err)
	}
	t := time.NewTicker(50 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return before, fmt.Errorf("the supervisor did not report a new worker: %w", ctx.Err())
		case <-m.done:
			return before, errors.New("the supervisor exited during the upgrade")
		case <-t.C:
			st, err := m.Status()
			if err == nil && st.Generation > before.Generation && st.WorkerPID != 0 {
				return st, nil
			}
		}
	}
}

func (m *supervised) kill() {
	_ = m.cmd.Process.Kill()
	<-m.done
	if ok, _ := skiffMounted(m.spec.MountPath); ok {
		_ = fuse.Unmount(m.spec.MountPath, true)
	}
	m.cleanup()
}

// cleanup removes what a killed supervisor and worker left.
func (m *supervised) cleanup() {
	for _, p := range []string{m.status, m.socket} {
		if p != "" {
			os.Remove(p)
		}
	}
}

// Shutdown sends SIGTERM (the supervisor asks its worker to flush, then
// unmounts, lazily when busy) and waits until ctx ends; then it kills the
// supervisor and detaches the mount.
func (m *supervised) Shutdown(ctx context.Context) error {
	m.once.Do(func() {
		_ = m.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-m.done:
			if m.waitErr != nil {
				m.err = fmt.Errorf("skiff mount --supervise: %w", m.waitErr)
			}
			m.cleanup()
		case <-ctx.Done():
			m.log.Error("the supervised mount did not stop before the deadline: killing it; data it had not flushed is lost")
			m.kill()
			m.err = errors.New("supervised mount killed at the deadline")
		}
	})
	return m.err
}
