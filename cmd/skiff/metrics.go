package main

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/skiff-fs/skiff/fsclient/fuse"
	"github.com/skiff-fs/skiff/fsclient/fuse/supervisor"
	"github.com/skiff-fs/skiff/fsclient/volume"
	"github.com/skiff-fs/skiff/sidecar/telemetry"
)

// metaURL is the META_URL: the one argument, or the content of
// --meta-url-file (then there must be no argument).
func (f *mountFlags) metaURL(args []string) (string, error) {
	if f.metaURLFile == "" {
		if len(args) != 1 {
			return "", errors.New("give the volume's META_URL, or --meta-url-file FILE holding it")
		}
		return args[0], nil
	}
	if len(args) != 0 {
		return "", errors.New("give either META_URL or --meta-url-file, not both")
	}
	b, err := os.ReadFile(f.metaURLFile)
	if err != nil {
		return "", fmt.Errorf("read --meta-url-file: %w", err)
	}
	// A trailing newline (echo > file, kubectl create secret --from-file)
	// is not part of the URL.
	u := strings.TrimSpace(string(b))
	if u == "" {
		return "", fmt.Errorf("--meta-url-file %s is empty", f.metaURLFile)
	}
	return u, nil
}

// metricsServer serves --metrics-socket; a nil one is off.
type metricsServer struct{ srv *telemetry.Server }

// serveMetrics serves the volume's counters and the FUSE operations of
// the mount on --metrics-socket (if set) and sets opts.Observer for the
// latter. The collectors carry no volume label: a process serves one
// volume, and the sidecar adds the label when it gathers a worker.
func (f *mountFlags) serveMetrics(v *volume.Volume, opts *fuse.Options) (*metricsServer, error) {
	if f.metricsSocket == "" {
		return nil, nil
	}
	limit, err := parseSize(f.bufferSize)
	if err != nil {
		return nil, fmt.Errorf("--buffer-size: %w", err)
	}
	ops := telemetry.NewFuseOps(false)
	reg := prometheus.NewRegistry()
	reg.MustRegister(
		telemetry.NewCollector(false, func() []telemetry.Volume {
			return []telemetry.Volume{{Stats: telemetry.StatsOf(v, limit)}}
		}),
		ops,
		// The worker's own memory and CPU, apart from the sidecar's.
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{Namespace: "skiff_worker"}),
	)
	ln, err := telemetry.Listen(f.metricsSocket)
	if err != nil {
		return nil, err
	}
	opts.Observer = ops.Observer("")
	return &metricsServer{srv: telemetry.Serve(ln, reg)}, nil
}

// Close stops serving and removes the socket.
func (m *metricsServer) Close() error {
	if m == nil {
		return nil
	}
	return m.srv.Close()
}

// statusFile keeps --status-file of skiff mount --supervise up to date;
// a nil one is off.
type statusFile struct {
	path   string
	s      *supervisor.Supervisor
	log    *slog.Logger
	ticker *time.Ticker
	last   telemetry.Status
}

// statusPoll is how often the status file is checked against the
// supervisor (a worker restart changes it without telling anyone).
const statusPoll = 200 * time.Millisecond

func newStatusFile(path string, s *supervisor.Supervisor, log *slog.Logger) *statusFile {
	if path == "" {
		return nil
	}
	st := &statusFile{path: path, s: s, log: log, ticker: time.NewTicker(statusPoll)}
	st.update()
	return st
}

// tick fires when the status should be checked (never when off).
func (st *statusFile) tick() <-chan time.Time {
	if st == nil {
		return nil
	}
	return st.ticker.C
}

// update writes the status file when the supervisor's state changed.
func (st *statusFile) update() {
	if st == nil {
		return
	}
	now := telemetry.Status{PID: os.Getpid(), WorkerPID: st.s.WorkerPID(), WorkerVersion: st.s.WorkerVersion(),
		Generation: st.s.Generation(), Mountpoint: st.s.Mountpoint()}
	if now == st.last {
		return
	}
	if err := telemetry.WriteStatus(st.path, now); err != nil {
		st.log.Error("status file", "err", err)
		return
	}
	st.last = now
}

// close stops the updates and removes the file.
func (st *statusFile) close() {
	if st == nil {
		return
	}
	st.ticker.Stop()
	if err := os.Remove(st.path); err != nil && !errors.Is(err, os.ErrNotExist) {
		st.log.Error("status file", "err", err)
	}
}
