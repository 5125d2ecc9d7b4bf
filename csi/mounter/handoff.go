package mounter

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// The hand-off API, served on HandOffSocket by the old mounter to the new
// one (HTTP with JSON bodies, as the csi-node API):
//
//	POST /v1/handoff/begin            -> 200 []HandOffVolume
//	POST /v1/handoff/wait  {path}     -> 200 {} once that volume's child
//	                                     handed its mount over
//	POST /v1/handoff/end              -> 200 {}; the old mounter retires
//
// begin refuses Stage and Unstage from then on (Unavailable: csi-node
// retries, and by then talks to the new mounter). Volumes that are not
// handed over stay with the old mounter, which serves them until its
// pod is deleted; a second begin (a new mounter that restarted half-way)
// lists the ones left.

// HandOffVolume is a staged volume as the new mounter needs it: the
// request that staged it (secrets included: the hand-off socket is
// root's, on the node) and its supervisor's hand-off socket.
type HandOffVolume struct {
	Request StageRequest `json:"request"`
	Socket  string       `json:"socket"`
}

type waitRequest struct {
	Path string `json:"path"`
}

// HandOffSocket is where the mounter listens for its successor ("" without
// Config.HandOffDir).
func (s *Server) HandOffSocket() string {
	if s.cfg.HandOffDir == "" {
		return ""
	}
	return filepath.Join(s.cfg.HandOffDir, "mounter.sock")
}

// volumeSocket is the hand-off socket of the supervisor of the volume
// staged on path.
func (s *Server) volumeSocket(path string) string {
	sum := sha256.Sum256([]byte(path))
	return filepath.Join(s.cfg.HandOffDir, fmt.Sprintf("vol-%x.sock", sum[:8]))
}

// handOffArgs are the skiff flags that let v's supervisor be adopted.
func (s *Server) handOffArgs(v *vol) []string {
	if s.cfg.HandOffDir == "" || !s.cfg.Supervise {
		return nil
	}
	return []string{"--handoff-socket=" + s.volumeSocket(v.req.Path)}
}

// Retired is closed once every volume was handed to a new mounter and it
// said it is done (Serve then returns).
func (s *Server) Retired() <-chan struct{} { return s.retired }

// handOffHandler serves the hand-off API.
func (s *Server) handOffHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/handoff/begin", func(w http.ResponseWriter, r *http.Request) {
		vs, err := s.beginHandOff()
		reply(w, vs, err)
	})
	mux.HandleFunc("POST /v1/handoff/wait", func(w http.ResponseWriter, r *http.Request) {
		var req waitRequest
		if !decode(w, r, &req) {
			return
		}
		reply(w, struct{}{}, s.waitHandedOver(r.Context(), req.Path))
	})
	mux.HandleFunc("POST /v1/handoff/end", func(w http.ResponseWriter, r *http.Request) {
		s.mu.Lock()
		left := len(s.mu.vols)
		s.mu.Unlock()
		if left > 0 {
			reply(w, nil, status.Errorf(codes.FailedPrecondition, "%d volumes were not handed over", left))
			return
		}
		s.log.Info("every volume was handed to the new mounter; retiring")
		s.retiredOnce.Do(func() { close(s.retired) })
		reply(w, struct{}{}, nil)
	})
	return mux
}

func (s *Server) beginHandOff() ([]HandOffVolume, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.mu.closed {
		return nil, status.Error(codes.Unavailable, "the mounter is shutting down")
	}
	for _, v := range s.mu.vols {
		if v.busy {
			return nil, status.Errorf(codes.Aborted, "an operation on %s is in progress: retry", v.req.Path)
		}
	}
	s.mu.handing = true
	out := []HandOffVolume{}
	for _, v := range s.mu.vols {
		v.handing = true
		out = append(out, HandOffVolume{Request: v.req, Socket: s.volumeSocket(v.req.Path)})
	}
	s.log.Info("handing the volumes to a new mounter", "volumes", len(out))
	return out, nil
}

func (s *Server) waitHandedOver(ctx context.Context, path string) error {
	s.mu.Lock()
	v, ok := s.mu.vols[filepath.Clean(path)]
	s.mu.Unlock()
	if !ok {
		return nil // handed over already
	}
	select {
	case <-v.handed:
		return nil
	case <-v.done:
		return status.Errorf(codes.Aborted, "the volume on %s was unstaged", path)
	case <-ctx.Done():
		return status.FromContextError(ctx.Err()).Err()
	}
}

// Adopt takes over every volume of the mounter listening on the hand-off
// socket (the one this mounter's predecessor left in Config.HandOffDir):
// for each, a child `skiff mount --supervise --adopt` takes the live FUSE
// connection from the old child's supervisor, without unmounting; then
// the old mounter retires. With no predecessor (no socket, or nobody
// listening: it died, and its mounts with it) it does nothing. Call it
// before Serve. It fails when a volume could not be adopted; that volume
// stays with the old mounter, and calling Adopt again retries.
func (s *Server) Adopt(ctx context.Context) (int, error) {
	sock := s.HandOffSocket()
	if sock == "" {
		return 0, nil
	}
	if _, err := os.Stat(sock); errors.Is(err, os.ErrNotExist) {
		return 0, nil
	}
	c := NewClient(sock)
	var vols []HandOffVolume
	err := c.do(ctx, http.MethodPost, "/v1/handoff/begin", nil, &vols)
	for i := 0; status.Code(err) == codes.Aborted && i < 100; i++ {
		time.Sleep(100 * time.Millisecond) // a stage in flight there
		err = c.do(ctx, http.MethodPost, "/v1/handoff/begin", nil, &vols)
	}
	if status.Code(err) == codes.Unavailable && isRefused(err) {
		s.log.Info("no previous mounter answers on the hand-off socket: nothing to adopt", "socket", sock)
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("mounter: hand-off from the previous mounter: %w", err)
	}
	s.log.Info("adopting the previous mounter's volumes", "volumes", len(vols))
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		errs []error
	)
	for _, hv := range vols {
		wg.Go(func() {
			if err := s.adoptOne(ctx, c, hv); err != nil {
				mu.Lock()
				errs = append(errs, err)
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return len(vols) - len(errs), fmt.Errorf("mounter: adopt: %w", err)
	}
	if err := c.do(ctx, http.MethodPost, "/v1/handoff/end", nil, &struct{}{}); err != nil {
		return len(vols), fmt.Errorf("mounter: end the hand-off: %w", err)
	}
	return len(vols), nil
}

// isRefused reports whether err says nobody listens on the socket (it
// is stale, or gone).
func isRefused(err error) bool {
	m := status.Convert(err).Message()
	return strings.Contains(m, "connection refused") || strings.Contains(m, "no such file or directory")
}

// adoptOne starts a child that adopts hv's mount and waits until the old
// child handed it over.
func (s *Server) adoptOne(ctx context.Context, old *Client, hv HandOffVolume) error {
	req := hv.Request
	req.Path = filepath.Clean(req.Path)
	log := s.log.With("volume", req)
	s.mu.Lock()
	if _, ok := s.mu.vols[req.Path]; ok {
		s.mu.Unlock()
		return fmt.Errorf("%s: already staged here", req.Path)
	}
	v := &vol{req: req, key: requestKey(&req), busy: true, handed: make(chan struct{}), done: make(chan struct{})}
	s.mu.vols[req.Path] = v
	s.mu.Unlock()
	fail := func(err error) error {
		s.removeFiles(v)
		s.mu.Lock()
		delete(s.mu.vols, req.Path)
		s.mu.Unlock()
		log.Error("could not adopt the volume; the previous mounter keeps it", "err", err)
		return fmt.Errorf("%s: %w", req.Path, err)
	}
	c, err := s.first(ctx, v, log, hv.Socket)
	if err != nil {
		return fail(err)
	}
	// The old child exits 0 once its supervisor released the connection
	// to ours; ours fails (and exits) if the hand-off did not happen.
	wctx, cancel := context.WithTimeout(ctx, s.cfg.StartTimeout+time.Minute)
	defer cancel()
	go func() {
		select {
		case <-c.done:
			cancel()
		case <-wctx.Done():
		}
	}()
	if err := old.do(wctx, http.MethodPost, "/v1/handoff/wait", waitRequest{Path: req.Path}, &struct{}{}); err != nil {
		_ = c.cmd.Process.Kill()
		<-c.done
		if t := redactOutput(c.tail.String(), &v.req); t != "" {
			err = fmt.Errorf("%w; the adopting client's output ends with: %s", err, t)
		}
		return fail(err)
	}
	kctx, kcancel := context.WithCancel(context.Background())
	v.cancel = kcancel
	go s.keep(kctx, v, c, log)
	s.mu.Lock()
	v.busy = false
	s.mu.Unlock()
	log.Info("volume adopted from the previous mounter", "pid", c.cmd.Process.Pid)
	return nil
}
