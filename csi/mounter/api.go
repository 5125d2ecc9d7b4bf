package mounter

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/skiff-fs/skiff/csi/internal/sock"
)

// apiError is the body of a failed request.
type apiError struct {
	Code    codes.Code `json:"code"`
	Message string     `json:"message"`
}

// Handler serves the API of the package documentation.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/stage", func(w http.ResponseWriter, r *http.Request) {
		var req StageRequest
		if !decode(w, r, &req) {
			return
		}
		v, err := s.Stage(r.Context(), req)
		reply(w, v, err)
	})
	mux.HandleFunc("POST /v1/unstage", func(w http.ResponseWriter, r *http.Request) {
		var req UnstageRequest
		if !decode(w, r, &req) {
			return
		}
		reply(w, struct{}{}, s.Unstage(r.Context(), req))
	})
	mux.HandleFunc("GET /v1/volumes", func(w http.ResponseWriter, r *http.Request) {
		reply(w, s.Volumes(), nil)
	})
	return mux
}

func decode(w http.ResponseWriter, r *http.Request, v any) bool {
	dec := json.NewDecoder(io.LimitReader(r.Body, 1<<20))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		reply(w, nil, status.Errorf(codes.InvalidArgument, "bad request body: %v", err))
		return false
	}
	return true
}

func reply(w http.ResponseWriter, v any, err error) {
	w.Header().Set("Content-Type", "application/json")
	if err != nil {
		st := status.Convert(err)
		w.WriteHeader(http.StatusConflict) // any non-200; the body says what
		_ = json.NewEncoder(w).Encode(apiError{Code: st.Code(), Message: st.Message()})
		return
	}
	_ = json.NewEncoder(w).Encode(v)
}

// Listen creates the unix socket at path (replacing a stale one),
// readable and writable by root only. Closing it removes the file unless
// another listener replaced it meanwhile (a successor's).
func Listen(path string) (net.Listener, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, err
	}
	return sock.Listen(path, 0o600)
}

// Serve serves the API on l until ctx ends, then stops every volume's
// child (Close) and returns. With Config.HandOffDir it also serves the
// hand-off API on HandOffSocket, and returns nil without stopping
// anything once every volume went to a new mounter (Retired).
func (s *Server) Serve(ctx context.Context, l net.Listener) error {
	hs := &http.Server{Handler: s.Handler(), ReadHeaderTimeout: 10 * time.Second}
	errc := make(chan error, 2)
	go func() { errc <- hs.Serve(l) }()
	servers := []*http.Server{hs}
	if hsock := s.HandOffSocket(); hsock != "" {
		hl, err := Listen(hsock)
		if err != nil {
			hs.Close()
			<-errc
			s.Close()
			return fmt.Errorf("mounter: hand-off socket: %w", err)
		}
		ho := &http.Server{Handler: s.handOffHandler(), ReadHeaderTimeout: 10 * time.Second}
		go func() { errc <- ho.Serve(hl) }()
		servers = append(servers, ho)
	}
	stopServers := func() {
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		for _, srv := range servers {
			_ = srv.Shutdown(sctx)
		}
		for range servers {
			<-errc
		}
	}
	select {
	case err := <-errc:
		errc <- err // counted by stopServers
		stopServers()
		s.Close()
		return err
	case <-s.retired:
		// The hand-off socket file is the new mounter's now (its
		// listener leaves it alone).
		stopServers()
		return nil
	case <-ctx.Done():
	}
	stopServers()
	s.Close()
	return nil
}

// Client talks to a mounter over its unix socket.
type Client struct {
	socket string
	hc     *http.Client
}

// NewClient returns a client of the mounter listening on socket (a path,
// or unix://path). It connects on each request, so the mounter may start
// after it or restart.
func NewClient(socket string) *Client {
	socket = strings.TrimPrefix(socket, "unix://")
	return &Client{
		socket: socket,
		hc: &http.Client{Transport: &http.Transport{
			DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
				var d net.Dialer
				return d.DialContext(ctx, "unix", socket)
			},
			DisableKeepAlives: true,
		}},
	}
}

// Stage asks the mounter to mount a volume; see Server.Stage.
func (c *Client) Stage(ctx context.Context, req StageRequest) (Volume, error) {
	var v Volume
	err := c.do(ctx, http.MethodPost, "/v1/stage", req, &v)
	return v, err
}

// Unstage asks the mounter to unmount a volume; see Server.Unstage.
func (c *Client) Unstage(ctx context.Context, path string) error {
	return c.do(ctx, http.MethodPost, "/v1/unstage", UnstageRequest{Path: path}, &struct{}{})
}

// Volumes lists the staged volumes.
func (c *Client) Volumes(ctx context.Context) ([]Volume, error) {
	var vs []Volume
	err := c.do(ctx, http.MethodGet, "/v1/volumes", nil, &vs)
	return vs, err
}

// do sends a request; errors are status errors: the mounter's own, or
// Unavailable when it cannot be reached.
func (c *Client) do(ctx context.Context, method, path string, in, out any) error {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return status.Errorf(codes.Internal, "encode: %v", err)
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, "http://mounter"+path, body)
	if err != nil {
		return status.Errorf(codes.Internal, "mounter request: %v", err)
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return status.FromContextError(ctx.Err()).Err()
		}
		return status.Errorf(codes.Unavailable, "the mounter at %s cannot be reached: %v", c.socket, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return status.Errorf(codes.Unavailable, "read the mounter's answer: %v", err)
	}
	if resp.StatusCode != http.StatusOK {
		var e apiError
		if err := json.Unmarshal(b, &e); err != nil || e.Code == codes.OK {
			return status.Errorf(codes.Internal, "the mounter answered %s: %s", resp.Status, b)
		}
		return status.Error(e.Code, e.Message)
	}
	if err := json.Unmarshal(b, out); err != nil {
		return status.Errorf(codes.Internal, "decode the mounter's answer: %v", err)
	}
	return nil
}
