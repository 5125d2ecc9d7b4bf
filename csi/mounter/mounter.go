package mounter

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/skiff-fs/skiff/csi/internal/mnt"
	"github.com/skiff-fs/skiff/internal/redact"
)

// Config configures a Server. New validates it and fills in the defaults
// documented on each field.
type Config struct {
	// Skiff is the skiff binary the mounter runs per volume. Required.
	Skiff string
	// Supervise runs `skiff mount --supervise` (the supervisor keeps
	// /dev/fuse and restarts a dead worker on the same connection);
	// false runs plain `skiff mount`.
	Supervise bool
	// HandOffDir, with Supervise, is a directory on the node that
	// outlives the mounter's container (a hostPath): the mounter listens
	// there for its successor (HandOffSocket) and each volume's supervisor
	// on a socket of its own, so that a new mounter (Adopt) takes every
	// mount over without unmounting. Empty: no hand-off.
	HandOffDir string
	// StateDir holds each volume's secret files (passphrase, GCS
	// credentials), readable by root only. Default /run/skiff-csi.
	StateDir string
	// StartTimeout bounds a child's start, exec to mounted. Default 1 min.
	StartTimeout time.Duration
	// StopTimeout bounds the graceful stop of a child (flush, unmount)
	// before it is killed and its mount detached. Default 30 s.
	StopTimeout time.Duration
	// Output receives the children's output. Default os.Stderr.
	Output io.Writer
	// Logger gets the mounter's log. Default: discard.
	Logger *slog.Logger
	// TrustInputs leaves out skiff mount's --restricted, which otherwise
	// limits what a volume's Secret may name (volume.Config.Restricted:
	// Redis META_URLs, gs:// buckets, restricted GCS credentials): the
	// mounter runs as root on the node with a pod author's Secret as
	// input. For tests and development only. Default false.
	TrustInputs bool
}

// StageRequest asks for a volume to be mounted on Path.
type StageRequest struct {
	// VolumeID is the CSI volume id, for logs and Volume.
	VolumeID string `json:"volumeID"`
	// Path is the staging path: an existing or creatable directory where
	// the FUSE file system is mounted.
	Path string `json:"path"`
	// MetaURL names the skiff volume (Secret key metaurl). Secret.
	MetaURL string `json:"metaURL"`
	// Passphrase of an encrypted volume and GCS credentials (JSON);
	// secret, optional.
	Passphrase        string `json:"passphrase,omitempty"`
	GoogleCredentials string `json:"googleCredentials,omitempty"`
	// Subdir of the volume mounted as the root of the file system.
	Subdir string `json:"subdir,omitempty"`
	// ReadOnly mounts read-only.
	ReadOnly bool `json:"readOnly,omitempty"`
	// Options are mount options (contract.AttrOptions and the volume
	// capability's mount flags): see Args.
	Options []string `json:"options,omitempty"`
}

// LogValue leaves the secrets out.
func (r StageRequest) LogValue() slog.Value {
	return slog.GroupValue(
		slog.String("volumeID", r.VolumeID),
		slog.String("path", r.Path),
		slog.String("metaURL", redact.URL(r.MetaURL)),
		slog.String("subdir", r.Subdir),
		slog.Bool("readOnly", r.ReadOnly),
		slog.Any("options", r.Options),
	)
}

// UnstageRequest asks for the volume on Path to be unmounted.
type UnstageRequest struct {
	Path string `json:"path"`
}

// Volume is a staged volume as the mounter sees it.
type Volume struct {
	VolumeID string `json:"volumeID"`
	Path     string `json:"path"`
	Subdir   string `json:"subdir,omitempty"`
	ReadOnly bool   `json:"readOnly,omitempty"`
	// PID is the child (skiff mount); 0 while none runs (between a crash
	// and its restart).
	PID int `json:"pid"`
	// Starts counts the children started for the volume (1 until one
	// dies).
	Starts int `json:"starts"`
}

// Server runs one skiff client process per staged volume.
type Server struct {
	cfg Config
	log *slog.Logger

	mu struct {
		sync.Mutex
		vols   map[string]*vol // by staging path
		closed bool
		// handing: a new mounter is taking the volumes over; Stage and
		// Unstage are refused meanwhile.
		handing bool
	}
	retired     chan struct{} // closed when every volume was handed over
	retiredOnce sync.Once
}

type vol struct {
	req   StageRequest
	key   [32]byte // of req: equal requests are the same stage
	files []string // secret files to remove

	// under Server.mu
	busy   bool
	pid    int
	starts int

	handing bool          // under Server.mu: its child may exit to hand over
	handed  chan struct{} // closed when its child handed the mount over

	cancel context.CancelFunc // ends the keep loop
	done   chan struct{}      // closed when the keep loop has stopped the child
}

// New validates cfg.
func New(cfg Config) (*Server, error) {
	if cfg.Skiff == "" {
		return nil, errors.New("mounter: no skiff binary")
	}
	if cfg.StateDir == "" {
		cfg.StateDir = "/run/skiff-csi"
	}
	if cfg.StartTimeout <= 0 {
		cfg.StartTimeout = time.Minute
	}
	if cfg.StopTimeout <= 0 {
		cfg.StopTimeout = 30 * time.Second
	}
	if cfg.Output == nil {
		cfg.Output = os.Stderr
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if err := os.MkdirAll(cfg.StateDir, 0o700); err != nil {
		return nil, fmt.Errorf("mounter: state dir: %w", err)
	}
	if cfg.HandOffDir != "" {
		if !cfg.Supervise {
			return nil, errors.New("mounter: a hand-off directory needs Supervise (plain skiff mount cannot hand its mount over)")
		}
		if err := os.MkdirAll(cfg.HandOffDir, 0o700); err != nil {
			return nil, fmt.Errorf("mounter: hand-off dir: %w", err)
		}
	}
	s := &Server{cfg: cfg, log: cfg.Logger, retired: make(chan struct{})}
	s.mu.vols = make(map[string]*vol)
	return s, nil
}

func requestKey(r *StageRequest) [32]byte {
	b, _ := json.Marshal(r)
	return sha256.Sum256(b)
}

// Stage mounts the volume on req.Path and returns when it is mounted.
func (s *Server) Stage(ctx context.Context, req StageRequest) (Volume, error) {
	if req.VolumeID == "" {
		return Volume{}, status.Error(codes.InvalidArgument, "no volume id")
	}
	if req.Path == "" || !filepath.IsAbs(req.Path) {
		return Volume{}, status.Errorf(codes.InvalidArgument, "staging path %q is not absolute", req.Path)
	}
	if req.MetaURL == "" {
		return Volume{}, status.Error(codes.InvalidArgument, "no META_URL")
	}
	req.Path = filepath.Clean(req.Path)
	key := requestKey(&req)
	log := s.log.With("volume", req)

	s.mu.Lock()
	if s.mu.closed {
		s.mu.Unlock()
		return Volume{}, status.Error(codes.Unavailable, "the mounter is shutting down")
	}
	if s.mu.handing {
		s.mu.Unlock()
		return Volume{}, status.Error(codes.Unavailable, "the mounter is handing its volumes to a new mounter: retry")
	}
	if v, ok := s.mu.vols[req.Path]; ok {
		defer s.mu.Unlock()
		switch {
		case v.busy:
			return Volume{}, status.Errorf(codes.Aborted, "an operation on %s is in progress", req.Path)
		case v.key != key:
			return Volume{}, status.Errorf(codes.AlreadyExists, "volume %s is staged on %s with other settings", v.req.VolumeID, req.Path)
		}
		return v.info(), nil
	}
	v := &vol{req: req, key: key, busy: true, handed: make(chan struct{}), done: make(chan struct{})}
	s.mu.vols[req.Path] = v
	s.mu.Unlock()

	c, err := s.first(ctx, v, log, "")
	if err != nil {
		s.removeFiles(v)
		s.mu.Lock()
		delete(s.mu.vols, req.Path)
		s.mu.Unlock()
		return Volume{}, err
	}
	kctx, cancel := context.WithCancel(context.Background())
	v.cancel = cancel
	go s.keep(kctx, v, c, log)
	s.mu.Lock()
	v.busy = false
	info := v.info()
	s.mu.Unlock()
	log.Info("volume staged", "pid", info.PID)
	return info, nil
}

// first writes the secret files and starts the volume's first child;
// with adopt (a hand-off socket) the child takes over the live mount of
// the previous mounter's child instead of mounting.
func (s *Server) first(ctx context.Context, v *vol, log *slog.Logger, adopt string) (*child, error) {
	dir := filepath.Join(s.cfg.StateDir, fmt.Sprintf("%x", sha256.Sum256([]byte(v.req.Path)))[:16])
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, status.Errorf(codes.Internal, "state dir: %v", err)
	}
	write := func(name, val string) (string, error) {
		p := filepath.Join(dir, name)
		v.files = append(v.files, p)
		return p, os.WriteFile(p, []byte(val), 0o600)
	}
	// The META_URL too goes in a file: a command line is readable by
	// every process of the node in /proc.
	if _, err := write("metaurl", v.req.MetaURL); err != nil {
		return nil, status.Errorf(codes.Internal, "write the META_URL file: %v", err)
	}
	if v.req.Passphrase != "" {
		if _, err := write("passphrase", v.req.Passphrase); err != nil {
			return nil, status.Errorf(codes.Internal, "write the passphrase file: %v", err)
		}
	}
	if v.req.GoogleCredentials != "" {
		if _, err := write("google-credentials.json", v.req.GoogleCredentials); err != nil {
			return nil, status.Errorf(codes.Internal, "write the credentials file: %v", err)
		}
	}
	v.files = append(v.files, dir)
	extra := s.childArgs(v)
	if adopt != "" {
		extra = append(extra, "--adopt="+adopt)
	}
	args, ignored := Args(s.cfg.Supervise, &v.req, extra)
	if len(ignored) > 0 {
		log.Warn("ignoring unknown mount options", "options", ignored)
	}
	if adopt != "" {
		return s.start(ctx, v, args, log, true)
	}
	if err := os.MkdirAll(v.req.Path, 0o750); err != nil {
		return nil, status.Errorf(codes.Internal, "create the staging path: %v", err)
	}
	if n, err := mnt.DetachFUSE(v.req.Path); err != nil {
		return nil, status.Errorf(codes.Internal, "clear the staging path: %v", err)
	} else if n > 0 {
		log.Warn("detached stale FUSE mounts from the staging path", "count", n)
	}
	c, err := s.start(ctx, v, args, log, false)
	if err != nil {
		return nil, err
	}
	return c, nil
}

// Args are the arguments of the skiff child for r: `mount [--supervise]
// flags... PATH`; the META_URL is never among them: extra names the file
// that holds it (--meta-url-file). Options map to flags: ro, attr-timeout,
// entry-timeout, dir-entry-timeout, buffer-size, upload-concurrency,
// flush-after and debug (either spelling, - or _); the others are returned as ignored.
func Args(supervise bool, r *StageRequest, extra []string) (args, ignored []string) {
	args = []string{"mount"}
	if supervise {
		args = append(args, "--supervise")
	}
	ro := r.ReadOnly
	var opts []string
	for _, o := range r.Options {
		k, val, hasVal := strings.Cut(o, "=")
		k = strings.ReplaceAll(strings.TrimSpace(k), "_", "-")
		switch k {
		case "ro":
			ro = true
		case "rw", "allow-other":
		case "attr-timeout", "entry-timeout", "dir-entry-timeout", "buffer-size", "upload-concurrency", "flush-after":
			if !hasVal || val == "" {
				ignored = append(ignored, o)
				continue
			}
			opts = append(opts, "--"+k+"="+val)
		case "debug":
			if !hasVal {
				val = "true"
			}
			opts = append(opts, "--debug="+val)
		default:
			ignored = append(ignored, o)
		}
	}
	args = append(args, "--allow-other=true", "--read-only="+strconv.FormatBool(ro), "--subdir="+r.Subdir)
	args = append(args, opts...)
	args = append(args, extra...)
	return append(args, r.Path), ignored
}

// child is one running skiff process.
type child struct {
	cmd  *exec.Cmd
	tail *tailBuf
	done chan struct{}
	err  error // valid once done is closed
}

// start runs the child and waits until the volume is mounted on the
// staging path. An adopting child finds it mounted already; if it fails,
// the mount stays with its previous owner and is not touched.
func (s *Server) start(ctx context.Context, v *vol, args []string, log *slog.Logger, adopting bool) (*child, error) {
	tail := &tailBuf{max: 4096}
	cmd := exec.Command(s.cfg.Skiff, args...)
	out := io.MultiWriter(s.cfg.Output, tail)
	cmd.Stdout, cmd.Stderr = out, out
	// Its own process group (a terminal's SIGINT is not for it), and
	// killed with the mounter.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return nil, status.Errorf(codes.Internal, "start %s: %v", s.cfg.Skiff, err)
	}
	c := &child{cmd: cmd, tail: tail, done: make(chan struct{})}
	go func() {
		c.err = cmd.Wait()
		close(c.done)
	}()
	s.mu.Lock()
	v.pid = cmd.Process.Pid
	v.starts++
	s.mu.Unlock()
	log.Info("started the skiff client", "pid", cmd.Process.Pid, "supervised", s.cfg.Supervise)

	deadline := time.NewTimer(s.cfg.StartTimeout)
	defer deadline.Stop()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	fail := func(code codes.Code, format string, a ...any) (*child, error) {
		if adopting {
			_ = c.cmd.Process.Kill()
			<-c.done
		} else {
			s.kill(c, v.req.Path)
		}
		msg := fmt.Sprintf(format, a...)
		if t := redactOutput(c.tail.String(), &v.req); t != "" {
			msg += "; its output ends with: " + t
		}
		return nil, status.Error(code, msg)
	}
	for {
		select {
		case <-c.done:
			return fail(codes.Internal, "skiff mount exited before mounting (%v)", c.err)
		case <-ctx.Done():
			return fail(status.FromContextError(ctx.Err()).Code(), "mount cancelled: %v", ctx.Err())
		case <-deadline.C:
			return fail(codes.DeadlineExceeded, "skiff mount did not mount %s within %s", v.req.Path, s.cfg.StartTimeout)
		case <-tick.C:
			if top, ok, _ := mnt.Top(v.req.Path); ok && mnt.IsFUSE(top) && mnt.StatFUSE(v.req.Path) == nil {
				return c, nil
			}
		}
	}
}

// redactOutput removes the request's secrets from a child's output.
func redactOutput(s string, r *StageRequest) string {
	return strings.TrimSpace(redact.Secrets(s, r.MetaURL, r.Passphrase, r.GoogleCredentials))
}

// kill ends c at once and detaches what it left mounted.
func (s *Server) kill(c *child, path string) {
	_ = c.cmd.Process.Kill()
	<-c.done
	if _, err := mnt.DetachFUSE(path); err != nil {
		s.log.Error("detach after kill", "path", path, "err", err)
	}
}

// stop ends c gracefully: SIGTERM makes skiff flush and unmount; after
// StopTimeout it is killed and its mount detached.
func (s *Server) stop(c *child, path string, log *slog.Logger) {
	_ = c.cmd.Process.Signal(syscall.SIGTERM)
	t := time.NewTimer(s.cfg.StopTimeout)
	defer t.Stop()
	select {
	case <-c.done:
		if c.err != nil {
			log.Warn("the skiff client exited with an error on stop", "err", c.err)
		}
	case <-t.C:
		log.Error("the skiff client did not stop in time: killing it; data it had not flushed is lost", "timeout", s.cfg.StopTimeout)
		_ = c.cmd.Process.Kill()
		<-c.done
	}
	if n, err := mnt.DetachFUSE(path); err != nil {
		log.Error("detach the staging path", "err", err)
	} else if n > 0 {
		log.Warn("detached a mount the skiff client left", "count", n)
	}
}

// keep watches the volume's child and starts a new one when it exits
// without being asked to; it stops the child when ctx ends.
func (s *Server) keep(ctx context.Context, v *vol, c *child, log *slog.Logger) {
	defer close(v.done)
	const minBackoff, maxBackoff = 500 * time.Millisecond, 30 * time.Second
	backoff := minBackoff
	args, _ := Args(s.cfg.Supervise, &v.req, s.childArgs(v))
	var retry <-chan time.Time
	for {
		var exited chan struct{}
		if c != nil {
			exited = c.done
		}
		select {
		case <-ctx.Done():
			if c != nil {
				s.stop(c, v.req.Path, log)
			}
			return
		case <-exited:
			s.mu.Lock()
			handing := v.handing
			s.mu.Unlock()
			if handing && c.err == nil {
				// It gave its connection to the new mounter's child
				// and exited without unmounting: the volume is not
				// ours any more.
				log.Info("the skiff client handed the mount over", "pid", c.cmd.Process.Pid)
				s.removeFiles(v)
				s.mu.Lock()
				if s.mu.vols[v.req.Path] == v {
					delete(s.mu.vols, v.req.Path)
				}
				s.mu.Unlock()
				close(v.handed)
				return
			}
			log.Error("the skiff client exited; starting it again", "pid", c.cmd.Process.Pid, "err", c.err,
				"output", redactOutput(c.tail.String(), &v.req), "backoff", backoff)
			c = nil
			s.mu.Lock()
			v.pid = 0
			s.mu.Unlock()
			retry = time.After(backoff)
		case <-retry:
			retry = nil
			if _, err := mnt.DetachFUSE(v.req.Path); err != nil {
				log.Error("clear the staging path", "err", err)
			}
			nc, err := s.start(ctx, v, args, log, false)
			if err != nil {
				backoff = min(2*backoff, maxBackoff)
				log.Error("restart the skiff client", "err", err, "backoff", backoff)
				retry = time.After(backoff)
				continue
			}
			c, backoff = nc, minBackoff
		}
	}
}

// childArgs are the flags of v's child besides those of its request:
// the secret files that first wrote, --restricted unless
// Config.TrustInputs, and the hand-off's.
func (s *Server) childArgs(v *vol) []string {
	var a []string
	for _, f := range v.files {
		switch filepath.Base(f) {
		case "metaurl":
			a = append(a, "--meta-url-file="+f)
		case "passphrase":
			a = append(a, "--passphrase-file="+f)
		case "google-credentials.json":
			a = append(a, "--google-credentials="+f)
		}
	}
	if !s.cfg.TrustInputs {
		a = append(a, "--restricted")
	}
	return append(a, s.handOffArgs(v)...)
}

func (s *Server) removeFiles(v *vol) {
	for _, f := range v.files {
		if err := os.Remove(f); err != nil && !errors.Is(err, os.ErrNotExist) {
			s.log.Error("remove a secret file", "file", f, "err", err)
		}
	}
}

func (v *vol) info() Volume {
	return Volume{VolumeID: v.req.VolumeID, Path: v.req.Path, Subdir: v.req.Subdir, ReadOnly: v.req.ReadOnly, PID: v.pid, Starts: v.starts}
}

// Unstage stops the volume's child on path (flush, unmount) and removes
// its secret files. A path with no volume is cleared of any FUSE mount
// left there and succeeds.
func (s *Server) Unstage(ctx context.Context, req UnstageRequest) error {
	return s.unstage(req, true)
}

// unstage is Unstage; clear says whether a path with no volume is cleared.
func (s *Server) unstage(req UnstageRequest, clear bool) error {
	if req.Path == "" || !filepath.IsAbs(req.Path) {
		return status.Errorf(codes.InvalidArgument, "staging path %q is not absolute", req.Path)
	}
	path := filepath.Clean(req.Path)
	s.mu.Lock()
	if s.mu.handing {
		s.mu.Unlock()
		return status.Error(codes.Unavailable, "the mounter is handing its volumes to a new mounter: retry")
	}
	v, ok := s.mu.vols[path]
	if ok && v.busy {
		s.mu.Unlock()
		return status.Errorf(codes.Aborted, "an operation on %s is in progress", path)
	}
	if ok {
		v.busy = true
	}
	s.mu.Unlock()
	if !ok && !clear {
		return nil
	}
	if !ok {
		if n, err := mnt.DetachFUSE(path); err != nil {
			return status.Errorf(codes.Internal, "clear %s: %v", path, err)
		} else if n > 0 {
			s.log.Warn("detached a FUSE mount no volume of this mounter owned", "path", path, "count", n)
		}
		return nil
	}
	v.cancel()
	<-v.done
	s.removeFiles(v)
	s.mu.Lock()
	delete(s.mu.vols, path)
	s.mu.Unlock()
	s.log.Info("volume unstaged", "volumeID", v.req.VolumeID, "path", path)
	return nil
}

// Volumes lists the staged volumes.
func (s *Server) Volumes() []Volume {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]Volume, 0, len(s.mu.vols))
	for _, v := range s.mu.vols {
		out = append(out, v.info())
	}
	return out
}

// Close stops every volume's child gracefully, in parallel, and refuses
// new stages.
func (s *Server) Close() {
	s.mu.Lock()
	s.mu.closed = true
	s.mu.handing = false // a hand-off that did not finish: the volumes are still ours
	var paths []string
	for p := range s.mu.vols {
		paths = append(paths, p)
	}
	s.mu.Unlock()
	var wg sync.WaitGroup
	for _, p := range paths {
		wg.Go(func() {
			for range 100 {
				// Not Unstage: a volume handed over meanwhile is gone from
				// the map and its mount is the new mounter's.
				err := s.unstage(UnstageRequest{Path: p}, false)
				if status.Code(err) != codes.Aborted {
					return
				}
				time.Sleep(100 * time.Millisecond) // a stage in flight
			}
		})
	}
	wg.Wait()
}

// tailBuf keeps the last max bytes written to it.
type tailBuf struct {
	mu  sync.Mutex
	max int
	b   []byte
}

func (t *tailBuf) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.b = append(t.b, p...)
	if len(t.b) > t.max {
		t.b = append([]byte(nil), t.b[len(t.b)-t.max:]...)
	}
	return len(p), nil
}

func (t *tailBuf) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return string(bytes.ToValidUTF8(t.b, nil))
}
