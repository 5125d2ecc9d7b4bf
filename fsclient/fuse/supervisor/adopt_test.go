package supervisor_test

import (
	"context"
	"encoding/json"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/skiff-fs/skiff/fsclient/fuse/supervisor"

	"github.com/skiff-fs/skiff/internal/syncbuf"
)

// startHandOff is start with a hand-off socket.
func startHandOff(t *testing.T, metaURL string) (*supervisor.Supervisor, string, *syncbuf.Buffer) {
	t.Helper()
	logs := &syncbuf.Buffer{}
	sock := filepath.Join(t.TempDir(), "handoff.sock")
	s := startWith(t, supervisor.Config{Worker: workerCmd(t, "v1", metaURL, logs), HandOffSocket: sock}, logs)
	return s, sock, logs
}

// TestAdoptInProcess runs both supervisors in the test process (under
// the race detector): B adopts A's mount while an application process
// streams a file from it.
func TestAdoptInProcess(t *testing.T) {
	metaURL := newVolume(t)
	a, sock, logs := startHandOff(t, metaURL)
	mp := a.Mountpoint()
	dev := devOf(t, mp)
	path := filepath.Join(mp, "big")
	app(t, "write", path, 6, fileSize/2, fileSize, nil)
	dropCaches(t)
	var (
		b    *supervisor.Supervisor
		berr error
	)
	done := make(chan struct{})
	sum, n := app(t, "read", path, 0, 0, killAfter/2, func() {
		go func() {
			defer close(done)
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			b, berr = supervisor.Adopt(ctx, supervisor.Config{
				Mountpoint:    mp,
				Worker:        workerCmd(t, "v2", metaURL, logs),
				Logger:        slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelInfo})),
				StartTimeout:  30 * time.Second,
				HandOffSocket: sock,
			}, sock)
		}()
	})
	select {
	case <-done:
	case <-time.After(2 * time.Minute):
		t.Fatal("Adopt did not return")
	}
	if berr != nil {
		t.Fatalf("adopt: %v", berr)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		if err := b.Shutdown(ctx); err != nil {
			t.Errorf("shutdown of the adopter: %v", err)
		}
	})
	if n != fileSize/2 {
		t.Fatalf("read through the hand-off: %d bytes, want %d", n, fileSize/2)
	}
	if want := sumOf(6, fileSize/2); sum != want {
		t.Fatalf("checksum: got %x, want %x", sum, want)
	}
	select {
	case <-a.Done():
	case <-time.After(30 * time.Second):
		t.Fatal("the old supervisor did not stop after the hand-off")
	}
	if !a.HandedOff() || a.Err() != nil {
		t.Fatalf("old supervisor: handed off %v, err %v", a.HandedOff(), a.Err())
	}
	if v := b.WorkerVersion(); v != "v2" {
		t.Fatalf("adopter's worker version %q, want v2", v)
	}
	if b.Generation() != 2 {
		t.Errorf("adopter's worker generation %d, want 2", b.Generation())
	}
	if devOf(t, mp) != dev || !mounted(t, mp) {
		t.Fatal("not the same mount after the hand-off")
	}
	if _, err := os.Stat(sock); err != nil {
		t.Fatalf("the adopter does not listen on the hand-off socket: %v", err)
	}
	// And it can hand over again (back to v1).
	c, err := supervisor.Adopt(context.Background(), supervisor.Config{
		Mountpoint: mp, Worker: workerCmd(t, "v1", metaURL, logs), StartTimeout: 30 * time.Second,
	}, sock)
	if err != nil {
		t.Fatalf("second hand-off: %v", err)
	}
	b = c // its Shutdown in the cleanup
	if got, err := os.ReadFile(filepath.Join(mp, "big")); err != nil || int64(len(got)) != fileSize/2 {
		t.Fatalf("read after two hand-offs: %d bytes, %v", len(got), err)
	}
}

// TestHandOffRefusesUnknownVersion: an adopter that reads only another
// version of the state record gets a refusal, no descriptor, and the
// mount stays served.
func TestHandOffRefusesUnknownVersion(t *testing.T) {
	a, sock, _ := startHandOff(t, newVolume(t))
	c, err := net.Dial("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(30 * time.Second))
	json.NewEncoder(c).Encode(map[string]any{"op": "adopt", "versions": []int{supervisor.HandOffVersion + 1}})
	buf := make([]byte, 1)
	oob := make([]byte, 64)
	n, oobn, _, _, err := c.(*net.UnixConn).ReadMsgUnix(buf, oob)
	if err != nil || n != 1 || oobn != 0 {
		t.Fatalf("refusal: %d bytes, %d of ancillary data (a descriptor?), %v", n, oobn, err)
	}
	var m struct{ Op, Err string }
	if err := json.NewDecoder(c).Decode(&m); err != nil || m.Op != "refused" || !strings.Contains(m.Err, "version") {
		t.Fatalf("refusal message %+v, %v", m, err)
	}
	if err := os.WriteFile(filepath.Join(a.Mountpoint(), "f"), []byte("x"), 0o644); err != nil {
		t.Fatalf("the mount after a refused hand-off: %v", err)
	}
	if a.Generation() != 1 {
		t.Errorf("a refused hand-off restarted the worker (generation %d)", a.Generation())
	}
	select {
	case <-a.Done():
		t.Fatal("the supervisor stopped")
	default:
	}
}

// TestFailedAdoptResumes: the adopter's worker cannot start after the old
// supervisor quiesced and sent its state: the old one takes the
// connection back with a new worker of its own and serves on.
func TestFailedAdoptResumes(t *testing.T) {
	metaURL := newVolume(t)
	a, sock, logs := startHandOff(t, metaURL)
	mp := a.Mountpoint()
	dev := devOf(t, mp)
	if err := os.WriteFile(filepath.Join(mp, "f"), []byte("before"), 0o644); err != nil {
		t.Fatal(err)
	}
	// A binary that exists (a missing one fails before the hand-off
	// starts) but exits at once.
	broken := filepath.Join(t.TempDir(), "broken-skiff")
	if err := os.WriteFile(broken, []byte("#!/bin/sh\nexit 3\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	_, err := supervisor.Adopt(ctx, supervisor.Config{
		Mountpoint:   mp,
		Worker:       supervisor.Command{Path: broken},
		Logger:       slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelInfo})),
		StartTimeout: 30 * time.Second,
	}, sock)
	if err == nil || !strings.Contains(err.Error(), "keeps the mount") {
		t.Fatalf("adopt with a worker that cannot start: %v", err)
	}
	if got, err := os.ReadFile(filepath.Join(mp, "f")); err != nil || string(got) != "before" {
		t.Fatalf("read after the failed hand-off: %q, %v", got, err)
	}
	if err := os.WriteFile(filepath.Join(mp, "g"), []byte("after"), 0o644); err != nil {
		t.Fatalf("write after the failed hand-off: %v", err)
	}
	if a.Generation() != 2 || a.WorkerVersion() != "v1" || devOf(t, mp) != dev {
		t.Fatalf("after the failed hand-off: generation %d, version %q", a.Generation(), a.WorkerVersion())
	}
	select {
	case <-a.Done():
		t.Fatalf("the old supervisor stopped: %v", a.Err())
	default:
	}
}
