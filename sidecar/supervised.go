package sidecar

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/skiff-fs/skiff/fsclient/fuse"
)

// Supervised mounts each volume by running `skiff mount --supervise` (the
// supervisor of fsclient/fuse/supervisor, which holds /dev/fuse and
// restarts the worker serving the volume when it dies). The supervisor
// is a child of the sidecar with SIGKILL as its parent-death signal, so a
// crashed sidecar takes it along, as a container restart would.
//
// Limits, until the supervisor offers more: the worker's counters are not
// visible here (Stats is empty), and the META_URL is passed on the
// command line, where processes of the same PID namespace can read it.
type Supervised struct {
	// Binary is the skiff binary.
	Binary string
	// Output receives the supervisor's and worker's output. Default
	// os.Stderr.
	Output io.Writer
	Logger *slog.Logger
	// StartTimeout bounds the wait for the mount. Default 1 min.
	StartTimeout time.Duration
}

// Args are the arguments of `skiff mount --supervise` for spec.
func (m Supervised) Args(s *Spec) []string {
	a := []string{"mount", "--supervise",
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
	if s.CacheDir != "" {
		a = append(a, "--cache-dir="+s.CacheDir, "--cache-size="+strconv.FormatInt(s.CacheSize, 10),
			"--cache-mem="+strconv.FormatInt(s.CacheMem, 10))
	} else {
		a = append(a, "--cache-size=0")
	}
	if s.PassphraseFile != "" {
		a = append(a, "--passphrase-file="+s.PassphraseFile)
	}
	if s.CredentialsFile != "" {
		a = append(a, "--google-credentials="+s.CredentialsFile)
	}
	return append(a, s.MetaURL, s.MountPath)
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
	cmd := exec.Command(m.Binary, m.Args(s)...)
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s mount --supervise: %w", m.Binary, err)
	}
	sm := &supervised{spec: s, cmd: cmd, log: log, done: make(chan struct{})}
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
	spec    *Spec
	cmd     *exec.Cmd
	log     *slog.Logger
	done    chan struct{}
	waitErr error // valid once done is closed

	once sync.Once
	err  error
}

func (m *supervised) Done() <-chan struct{} { return m.done }

func (m *supervised) Stats() Stats { return Stats{BufferLimit: m.spec.BufferSize} }

func (m *supervised) kill() {
	_ = m.cmd.Process.Kill()
	<-m.done
	if ok, _ := skiffMounted(m.spec.MountPath); ok {
		_ = fuse.Unmount(m.spec.MountPath, true)
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
		case <-ctx.Done():
			m.log.Error("the supervised mount did not stop before the deadline: killing it; data it had not flushed is lost")
			m.kill()
			m.err = errors.New("supervised mount killed at the deadline")
		}
	})
	return m.err
}
