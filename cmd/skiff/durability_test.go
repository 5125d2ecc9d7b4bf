package main

import (
	"bytes"
	"context"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/skiff-fs/skiff/fsclient/volume"
	"github.com/skiff-fs/skiff/internal/syncbuf"
)

// TestKillSteadyWriter writes to a file without pause (64 KiB every 200
// ms, never closed or fsynced), kills the skiff mount process with
// SIGKILL, mounts again and checks that at least the data written more
// than --flush-after before the kill reads back byte-exact.
func TestKillSteadyWriter(t *testing.T) {
	const flushAfter = time.Second
	dir := t.TempDir()
	metaURL := "bolt://" + filepath.Join(dir, "meta.db")
	if _, err := volume.Create(context.Background(), volume.FormatConfig{MetaURL: metaURL, Name: "steady"}); err != nil {
		t.Fatal(err)
	}
	mp := filepath.Join(dir, "mnt")
	os.Mkdir(mp, 0o755)

	out := &syncbuf.Buffer{}
	mount := exec.Command(skiffBin, "mount", "--flush-after", flushAfter.String(), metaURL, mp)
	mount.Stdout, mount.Stderr = out, out
	if err := mount.Start(); err != nil {
		t.Fatal(err)
	}
	var waitErr error
	exited := make(chan struct{}) // closed when the mount process has ended
	go func() { waitErr = mount.Wait(); close(exited) }()
	t.Cleanup(func() {
		mount.Process.Kill()
		<-exited
		syscall.Unmount(mp, syscall.MNT_DETACH)
	})
	for deadline := time.Now().Add(30 * time.Second); !strings.Contains(out.String(), "mounted on"); {
		select {
		case <-exited:
			t.Fatalf("skiff mount ended: %v\n%s", waitErr, out)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("skiff mount did not get ready:\n%s", out)
		}
		time.Sleep(20 * time.Millisecond)
	}

	f, err := os.Create(filepath.Join(mp, "log"))
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(1, 2))
	var data []byte
	type mark struct {
		at  time.Time
		end int
	}
	var marks []mark
	piece := make([]byte, 64<<10)
	for start := time.Now(); time.Since(start) < 6*time.Second; time.Sleep(200 * time.Millisecond) {
		for i := range piece {
			piece[i] = byte(rng.Uint32())
		}
		if _, err := f.Write(piece); err != nil {
			t.Fatal(err)
		}
		data = append(data, piece...)
		marks = append(marks, mark{time.Now(), len(data)})
	}
	killed := time.Now()
	if err := mount.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-exited
	f.Close() // the connection is gone: errors are expected
	syscall.Unmount(mp, syscall.MNT_DETACH)
	safe := 0
	for _, m := range marks {
		if killed.Sub(m.at) >= flushAfter {
			safe = m.end
		}
	}

	out2, done := startMount(t, metaURL, mp)
	got, err := os.ReadFile(filepath.Join(mp, "log"))
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("wrote %d bytes; %d were older than %v at the kill; %d read back", len(data), safe, flushAfter, len(got))
	if len(got) < safe {
		t.Errorf("read back %d bytes, want at least the %d written %v before the kill", len(got), safe, flushAfter)
	}
	if n := min(len(got), len(data)); !bytes.Equal(got[:n], data[:n]) || len(got) > len(data) {
		t.Errorf("the %d bytes read back are not what was written", len(got))
	}
	umountAndWait(t, mp, done, out2)
}
