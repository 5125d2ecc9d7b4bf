package sidecar

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/skiff-fs/skiff/internal/syncbuf"
	"github.com/skiff-fs/skiff/internal/testloop"
	"github.com/skiff-fs/skiff/internal/testsecret"
	"github.com/skiff-fs/skiff/sidecar/contract"
)

// serveFailing runs a sidecar (the real Direct mounter) on one volume
// whose Secret holds metaURL until its mount has failed twice, and
// returns the /readyz answer, Ready's error and the log.
func serveFailing(t *testing.T, metaURL string, trust bool) (code int, body string, ready error, logs string) {
	t.Helper()
	root := t.TempDir()
	writeSecret(t, filepath.Join(root, "s"), map[string]string{contract.SecretKeyMetaURL: metaURL + "\n", contract.SecretKeyPassphrase: "pass"})
	var buf syncbuf.Buffer
	s, err := New(Config{
		Volumes:     []contract.Volume{{Name: "data", MountPath: filepath.Join(root, "mnt"), SecretDir: filepath.Join(root, "s")}},
		StageDir:    filepath.Join(root, "stage"),
		CacheSize:   -1,
		Logger:      slog.New(slog.NewTextHandler(io.MultiWriter(&buf, logWriter{t}), nil)),
		TrustInputs: trust,
	})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx, ln) }()
	defer func() {
		cancel()
		<-done
	}()
	deadline := time.Now().Add(20 * time.Second)
	for s.vols[0].failures.Load() < 2 {
		if time.Now().After(deadline) {
			t.Fatal("the mount did not fail twice in 20 s")
		}
		time.Sleep(5 * time.Millisecond)
	}
	resp, err := http.Get("http://" + ln.Addr().String() + contract.PathReady)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	return resp.StatusCode, string(b), s.Ready(), buf.String()
}

// TestRefusesBlockDevice: a Secret naming bolt:///dev/loopN is refused,
// restricted (the scheme) and trusted (bolt refuses devices); the device
// is not written.
func TestRefusesBlockDevice(t *testing.T) {
	dev := testloop.New(t)
	for _, trust := range []bool{false, true} {
		code, body, ready, _ := serveFailing(t, "bolt://"+dev.Path, trust)
		want := "accept only redis://"
		if trust {
			want = "it is a device"
		}
		if code != http.StatusServiceUnavailable || strings.TrimSpace(body) != "not ready" {
			t.Errorf("trust=%v: readyz %d %q, want 503 \"not ready\"", trust, code, body)
		}
		if ready == nil || !strings.Contains(ready.Error(), want) {
			t.Errorf("trust=%v: Ready() = %v, want %q", trust, ready, want)
		}
		dev.Unchanged(t)
	}
}

// TestHostilePasswords: META_URLs whose passwords hold "/ # ? @ % :"
// (unescaped, then escaped) reach neither the readyz body nor the log.
func TestHostilePasswords(t *testing.T) {
	r := testsecret.Rand(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := strconv.Itoa(ln.Addr().(*net.TCPAddr).Port)
	ln.Close() // nothing listens there: every mount fails
	for range 3 {
		pw := testsecret.Password(r, 20+r.IntN(12))
		for _, u := range []string{
			"redis://:" + pw + "@127.0.0.1:" + port + "/0",
			"redis://skiff:" + pw + "@127.0.0.1:" + port + "/0?prefix=v",
		} {
			code, body, ready, logs := serveFailing(t, u, false)
			if code != http.StatusServiceUnavailable || strings.TrimSpace(body) != "not ready" {
				t.Errorf("readyz %d %q, want 503 \"not ready\"", code, body)
			}
			testsecret.Check(t, "readyz body", body, pw)
			testsecret.Check(t, "Ready()", ready.Error(), pw)
			testsecret.Check(t, "log", logs, pw)
			if !strings.Contains(logs, "not ready") {
				t.Errorf("the reason of not ready was not logged: %s", logs)
			}
		}
	}
}
