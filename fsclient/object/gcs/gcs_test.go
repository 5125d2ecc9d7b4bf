package gcs_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fsouza/fake-gcs-server/fakestorage"
	"github.com/google/go-cmp/cmp"

	"github.com/skiff-fs/skiff/fsclient/object"
	"github.com/skiff-fs/skiff/fsclient/object/gcs"
	"github.com/skiff-fs/skiff/fsclient/object/gcs/gcstest"
	"github.com/skiff-fs/skiff/fsclient/object/objecttest"
)

func newStore(t testing.TB, cfg gcs.Config) *gcs.Store {
	t.Helper()
	if cfg.InitialBackoff == 0 {
		cfg.InitialBackoff = time.Millisecond
		cfg.MaxBackoff = 10 * time.Millisecond
	}
	s, err := gcs.New(context.Background(), cfg)
	if err != nil {
		t.Fatalf("gcs.New(%+v): %v", cfg, err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// TestConformance gives each subtest a bucket of its own.
func TestConformance(t *testing.T) {
	host := gcstest.Start(t)
	n := 0
	objecttest.Run(t, func(t testing.TB) object.Store {
		n++
		bucket := fmt.Sprintf("conformance-%d", n)
		gcstest.CreateBucket(t, host, bucket)
		return newStore(t, gcs.Config{Bucket: bucket})
	})
}

// TestConformancePrefix gives each subtest a prefix of one shared bucket
// that also holds objects just outside the prefix.
func TestConformancePrefix(t *testing.T) {
	gcstest.Start(t, "shared")
	decoys := newStore(t, gcs.Config{Bucket: "shared"})
	n := 0
	objecttest.Run(t, func(t testing.TB) object.Store {
		n++
		prefix := fmt.Sprintf("v%d/", n)
		for _, k := range []string{fmt.Sprintf("v%d", n), fmt.Sprintf("v%d.x", n), fmt.Sprintf("v%d0/a", n), fmt.Sprintf("v%d-/a", n)} {
			objecttest.Put(t, decoys, k, []byte("decoy"))
		}
		s := newStore(t, gcs.Config{Bucket: "shared", Prefix: prefix})
		if got, want := s.String(), "gs://shared/"+prefix; got != want {
			t.Errorf("String() = %q, want %q", got, want)
		}
		return s
	})
}

func TestMissingBucket(t *testing.T) {
	gcstest.Start(t, "exists")
	_, err := gcs.New(context.Background(), gcs.Config{Bucket: "no-such-bucket"})
	if want := `gcs bucket "no-such-bucket" does not exist (create it, or fix --bucket)`; err == nil || err.Error() != want {
		t.Fatalf("New with a missing bucket: error = %v, want %q", err, want)
	}
	if !errors.Is(err, gcs.ErrNoBucket) {
		t.Errorf("error %v does not wrap ErrNoBucket", err)
	}
	newStore(t, gcs.Config{Bucket: "exists"})
}

func TestInvalidConfig(t *testing.T) {
	gcstest.Start(t)
	for _, cfg := range []gcs.Config{
		{},
		{Bucket: "ab"},
		{Bucket: "Upper"},
		{Bucket: "-dash"},
		{Bucket: "dash-"},
		{Bucket: "has/slash"},
		{Bucket: strings.Repeat("a", 64)},
		{Bucket: "ok-bucket", Prefix: "bad\nprefix"},
		{Bucket: "ok-bucket", ChunkSize: -1},
		{Bucket: "ok-bucket", CredentialsFile: "/nonexistent/google-credentials.json"},
	} {
		if s, err := gcs.New(context.Background(), cfg); err == nil {
			s.Close()
			t.Errorf("New(%+v) succeeded, want an error", cfg)
		} else if strings.Contains(err.Error(), "does not exist (create it") {
			t.Errorf("New(%+v) = %v, want a complaint about the config", cfg, err)
		}
	}
}

func TestInvalidKeys(t *testing.T) {
	gcstest.Start(t, "b-keys")
	s := newStore(t, gcs.Config{Bucket: "b-keys"})
	for _, key := range []string{"", "line\nbreak", "bad\xffutf8", strings.Repeat("k", 1025)} {
		if err := s.Put(context.Background(), key, nil); !errors.Is(err, object.ErrInvalidKey) {
			t.Errorf("Put(%q) = %v, want ErrInvalidKey", key, err)
		}
	}
}

// faultProxy forwards requests to a fake GCS server and answers the first
// failures requests that match with an error status instead.
type faultProxy struct {
	proxy *httputil.ReverseProxy
	mu    struct {
		sync.Mutex
		match    func(*http.Request) bool
		failures int
		statuses []int // cycled through
		failed   int
		requests []string // "METHOD path?uploadType" of every request
	}
}

func (p *faultProxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	p.mu.Lock()
	p.mu.requests = append(p.mu.requests, r.Method+" "+r.URL.String())
	fail := p.mu.failures > 0 && (p.mu.match == nil || p.mu.match(r))
	status := 0
	if fail {
		p.mu.failures--
		status = p.mu.statuses[p.mu.failed%len(p.mu.statuses)]
		p.mu.failed++
	}
	p.mu.Unlock()
	if fail {
		io.Copy(io.Discard, r.Body)
		http.Error(w, `{"error":{"code":`+strconv.Itoa(status)+`,"message":"injected"}}`, status)
		return
	}
	p.proxy.ServeHTTP(w, r)
}

// failNext makes the next n requests that match fail with statuses in turn.
func (p *faultProxy) failNext(n int, match func(*http.Request) bool, statuses ...int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.mu.failures, p.mu.match, p.mu.statuses, p.mu.failed = n, match, statuses, 0
	p.mu.requests = nil
}

func (p *faultProxy) stats() (failed, pending int, requests []string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.mu.failed, p.mu.failures, append([]string(nil), p.mu.requests...)
}

// startProxied starts a fake GCS server behind a faultProxy. Every request
// of the client, including resumable upload chunks and XML reads, goes
// through the proxy, which STORAGE_EMULATOR_HOST names.
func startProxied(t *testing.T, buckets ...string) *faultProxy {
	t.Helper()
	proxyLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	proxyHost := proxyLn.Addr().String()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	srv, err := fakestorage.NewServerWithOptions(fakestorage.Options{
		Scheme: "http", Host: "127.0.0.1", Port: uint16(port),
		PublicHost:  proxyHost,
		ExternalURL: "http://" + proxyHost,
		Writer:      io.Discard,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Stop)
	for _, b := range buckets {
		srv.CreateBucketWithOpts(fakestorage.CreateBucketOpts{Name: b})
	}
	target, _ := url.Parse(fmt.Sprintf("http://127.0.0.1:%d", port))
	p := &faultProxy{proxy: &httputil.ReverseProxy{Rewrite: func(r *httputil.ProxyRequest) {
		r.SetURL(target)
		r.Out.Host = r.In.Host // the fake routes XML reads by host
	}}}
	ps := httptest.NewUnstartedServer(p)
	ps.Listener.Close()
	ps.Listener = proxyLn
	ps.Start()
	t.Cleanup(ps.Close)
	t.Setenv(gcstest.EnvHost, proxyHost)
	return p
}

// isChunk matches the requests that carry the data of a resumable upload.
func isChunk(r *http.Request) bool { return r.URL.Query().Get("upload_id") != "" }

func TestRetries(t *testing.T) {
	p := startProxied(t, "flaky")
	s := newStore(t, gcs.Config{Bucket: "flaky", ChunkSize: 256 << 10})
	ctx := context.Background()
	small := []byte("small object")
	large := bytes.Repeat([]byte("0123456789abcdef"), 1<<16) // 1 MiB: 4 chunks

	steps := []struct {
		name  string
		match func(*http.Request) bool
		fn    func() error
	}{
		{"put", nil, func() error { return s.Put(ctx, "k/small", small) }},
		{"get", nil, func() error {
			got := objecttest.Get(t, s, "k/small", 0, -1)
			if !bytes.Equal(got, small) {
				return fmt.Errorf("got %q", got)
			}
			return nil
		}},
		{"head", nil, func() error { _, err := s.Head(ctx, "k/small"); return err }},
		{"list", nil, func() error {
			infos, err := s.List(ctx, "k/", "", 0)
			if err == nil && len(infos) != 1 {
				err = fmt.Errorf("listed %v", infos)
			}
			return err
		}},
		{"delete", nil, func() error { return s.Delete(ctx, "k/small") }},
		// Fail chunks in the middle of a resumable upload.
		{"put chunks", isChunk, func() error {
			return s.Put(ctx, "k/large", large)
		}},
		{"get large", nil, func() error {
			got := objecttest.Get(t, s, "k/large", 0, -1)
			if !bytes.Equal(got, large) {
				return fmt.Errorf("got %d bytes that differ", len(got))
			}
			return nil
		}},
	}
	for _, st := range steps {
		p.failNext(2, st.match, http.StatusServiceUnavailable, http.StatusTooManyRequests)
		if err := st.fn(); err != nil {
			t.Errorf("%s with two 503/429 answers first: %v", st.name, err)
		}
		if failed, pending, reqs := p.stats(); failed != 2 || pending != 0 {
			t.Errorf("%s: %d requests failed, %d failures left, want 2 and 0; requests: %q", st.name, failed, pending, reqs)
		}
	}

	// The large upload went out in chunks.
	p.failNext(0, nil)
	if err := s.Put(ctx, "k/large2", large); err != nil {
		t.Fatal(err)
	}
	_, _, reqs := p.stats()
	chunks := 0
	for _, r := range reqs {
		if strings.Contains(r, "upload_id=") {
			chunks++
		}
	}
	if chunks < 4 {
		t.Errorf("1 MiB upload with 256 KiB chunks sent %d chunks, want >= 4: %q", chunks, reqs)
	}
	p.failNext(0, nil)
	if err := s.Put(ctx, "k/small2", small); err != nil {
		t.Fatal(err)
	}
	if _, _, reqs := p.stats(); len(reqs) != 1 {
		t.Errorf("small upload made %d requests, want 1: %q", len(reqs), reqs)
	}
}

func TestRetriesGiveUp(t *testing.T) {
	p := startProxied(t, "down")
	s := newStore(t, gcs.Config{Bucket: "down", MaxAttempts: 3})
	p.failNext(1000, nil, http.StatusServiceUnavailable)
	_, err := s.Head(context.Background(), "k")
	if err == nil || errors.Is(err, object.ErrNotFound) {
		t.Fatalf("Head against a failing server: %v, want a 503 error", err)
	}
	if failed, _, _ := p.stats(); failed != 3 {
		t.Errorf("made %d attempts, want 3 (MaxAttempts)", failed)
	}
	// Not retried: a 4xx other than 408/429.
	p.failNext(1000, nil, http.StatusBadRequest)
	if _, err := s.Head(context.Background(), "k"); err == nil {
		t.Fatal("Head answered 400 succeeded")
	}
	if failed, _, _ := p.stats(); failed != 1 {
		t.Errorf("made %d attempts on 400, want 1", failed)
	}
}

// TestBucketForbidden checks that credentials that may use objects but not
// read bucket metadata are accepted.
func TestBucketForbidden(t *testing.T) {
	p := startProxied(t, "objects-only")
	bucketGet := func(r *http.Request) bool {
		return r.Method == http.MethodGet && strings.HasSuffix(r.URL.Path, "/b/objects-only")
	}
	p.failNext(1, bucketGet, http.StatusForbidden)
	s := newStore(t, gcs.Config{Bucket: "objects-only"})
	if failed, _, _ := p.stats(); failed != 1 {
		t.Fatalf("bucket metadata was not asked for")
	}
	objecttest.Put(t, s, "x", []byte("y"))

	p.failNext(2, func(r *http.Request) bool { return r.Method == http.MethodGet }, http.StatusForbidden)
	_, err := gcs.New(context.Background(), gcs.Config{Bucket: "objects-only"})
	if err == nil || !strings.Contains(err.Error(), "access denied") {
		t.Errorf("New without any access: %v, want access denied", err)
	}
}

func TestStringAndListInfo(t *testing.T) {
	gcstest.Start(t, "info")
	s := newStore(t, gcs.Config{Bucket: "info"})
	if got, want := s.String(), "gs://info/"; got != want {
		t.Errorf("String() = %q, want %q", got, want)
	}
	objecttest.Put(t, s, "a/b", []byte("12345"))
	infos := objecttest.ListAll(t, s, "", "", 0)
	if len(infos) != 1 {
		t.Fatalf("List = %+v", infos)
	}
	head, err := s.Head(context.Background(), "a/b")
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(head, infos[0]); diff != "" {
		t.Errorf("Head and List disagree (-head +list):\n%s", diff)
	}
}

// TestUploadRequests checks that objects up to a default 4 MiB block go up
// in one request and larger ones in chunks.
func TestUploadRequests(t *testing.T) {
	p := startProxied(t, "uploads")
	s := newStore(t, gcs.Config{Bucket: "uploads"})
	for _, tc := range []struct{ size, minReqs, maxReqs int }{
		{0, 1, 1},
		{1, 1, 1},
		{4 << 20, 1, 1},
		{4<<20 + 1, 1, 1},
		{9 << 20, 3, 10},
	} {
		p.failNext(0, nil)
		objecttest.Put(t, s, "k", make([]byte, tc.size))
		if _, _, reqs := p.stats(); len(reqs) < tc.minReqs || len(reqs) > tc.maxReqs {
			t.Errorf("upload of %d bytes made %d requests, want %d to %d: %q", tc.size, len(reqs), tc.minReqs, tc.maxReqs, reqs)
		}
	}
}
