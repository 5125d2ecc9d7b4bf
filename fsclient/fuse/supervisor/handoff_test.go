package supervisor_test

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/skiff-fs/skiff/internal/syncbuf"
)

// supervised is a `skiff mount --supervise` process.
type supervised struct {
	cmd  *exec.Cmd
	out  *syncbuf.Buffer
	done chan struct{}
	err  error // valid once done is closed
}

// runSupervised starts `skiff-<version> mount --supervise args... META MP`
// and waits until it serves the mount. t.Cleanup kills it if it still
// runs.
func runSupervised(t *testing.T, version, metaURL, mp string, args ...string) *supervised {
	t.Helper()
	p := &supervised{out: &syncbuf.Buffer{}, done: make(chan struct{})}
	a := append([]string{"mount", "--supervise", "--allow-other"}, args...)
	p.cmd = exec.Command(skiffBinary(t, version), append(a, metaURL, mp)...)
	p.cmd.Stdout, p.cmd.Stderr = p.out, p.out
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		p.err = p.cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		p.cmd.Process.Kill()
		<-p.done
		if t.Failed() {
			t.Logf("skiff %s %v output:\n%s", version, args, p.out)
		}
	})
	deadline := time.After(60 * time.Second)
	for !strings.Contains(p.out.String(), "supervised mount on") {
		select {
		case <-p.done:
			t.Fatalf("skiff %s mount --supervise %v exited: %v\n%s", version, args, p.err, p.out)
		case <-deadline:
			t.Fatalf("skiff %s mount --supervise %v did not start:\n%s", version, args, p.out)
		case <-time.After(20 * time.Millisecond):
		}
	}
	return p
}

// wait waits (bounded) for the process to exit and returns its error.
func (p *supervised) wait(t *testing.T, d time.Duration) error {
	t.Helper()
	select {
	case <-p.done:
		return p.err
	case <-time.After(d):
		t.Fatalf("skiff mount --supervise (pid %d) did not exit within %v:\n%s", p.cmd.Process.Pid, d, p.out)
		return nil
	}
}

// stop SIGTERMs the process (flush, unmount) and checks that it exits 0.
func (p *supervised) stop(t *testing.T) {
	t.Helper()
	p.cmd.Process.Signal(syscall.SIGTERM)
	if err := p.wait(t, 60*time.Second); err != nil {
		t.Errorf("skiff mount --supervise after SIGTERM: %v\n%s", err, p.out)
	}
}

// devOf is the st_dev of path: one FUSE connection, one device.
func devOf(t *testing.T, path string) uint64 {
	t.Helper()
	var st syscall.Stat_t
	if err := syscall.Stat(path, &st); err != nil {
		t.Fatalf("stat %s: %v", path, err)
	}
	return st.Dev
}

// abortConnection aborts the FUSE connection of dev (fusectl), so that a
// test that failed half-way leaves nothing hanging, then detaches mp.
func abortConnection(dev uint64, mp string) {
	minor := (dev & 0xff) | ((dev >> 12) & 0xfff00)
	os.WriteFile(fmt.Sprintf("/sys/fs/fuse/connections/%d/abort", minor), []byte("1"), 0)
	syscall.Unmount(mp, syscall.MNT_DETACH)
}

// handOffMount mounts a volume with supervisor A (skiff v1, listening on
// a hand-off socket) and returns it, the socket and the mount's device.
func handOffMount(t *testing.T) (a *supervised, metaURL, mp, sock string, dev uint64) {
	t.Helper()
	metaURL = newVolume(t)
	dir := t.TempDir()
	mp = filepath.Join(dir, "mnt")
	if err := os.Mkdir(mp, 0o755); err != nil {
		t.Fatal(err)
	}
	sock = filepath.Join(dir, "handoff.sock")
	a = runSupervised(t, "v1", metaURL, mp, "--handoff-socket="+sock)
	if !strings.Contains(a.out.String(), "version v1") {
		t.Fatalf("supervisor A's worker is not v1:\n%s", a.out)
	}
	dev = devOf(t, mp)
	t.Cleanup(func() {
		if mounted(t, mp) {
			abortConnection(dev, mp)
		}
	})
	return a, metaURL, mp, sock, dev
}

// adopt starts supervisor B (skiff v2) with --adopt while the application
// runs; it returns at once, B is checked by checkHandedOver.
func adoptAsync(t *testing.T, metaURL, mp, sock string) chan *supervised {
	c := make(chan *supervised, 1)
	go func() {
		p := &supervised{out: &syncbuf.Buffer{}, done: make(chan struct{})}
		p.cmd = exec.Command(skiffBinary(t, "v2"), "mount", "--supervise", "--allow-other", "--adopt="+sock, metaURL, mp)
		p.cmd.Stdout, p.cmd.Stderr = p.out, p.out
		if err := p.cmd.Start(); err != nil {
			p.err = err
			close(p.done)
			c <- p
			return
		}
		go func() {
			p.err = p.cmd.Wait()
			close(p.done)
		}()
		c <- p
	}()
	return c
}

// checkHandedOver: B serves the mount with a v2 worker on the same
// connection, A exited 0 without unmounting; then A is killed with -9
// for good measure and the mount still works.
func checkHandedOver(t *testing.T, a, b *supervised, mp string, dev uint64) {
	t.Helper()
	t.Cleanup(func() {
		b.cmd.Process.Kill()
		<-b.done
		if t.Failed() {
			t.Logf("supervisor B output:\n%s", b.out)
		}
	})
	deadline := time.After(60 * time.Second)
	for !strings.Contains(b.out.String(), "supervised mount on") {
		select {
		case <-b.done:
			t.Fatalf("supervisor B exited: %v\n%s", b.err, b.out)
		case <-deadline:
			t.Fatalf("supervisor B did not take over:\n%s", b.out)
		case <-time.After(20 * time.Millisecond):
		}
	}
	// The application's file was open across the hand-off: B took its
	// handle over (so the hand-off happened during the stream).
	if !strings.Contains(b.out.String(), "adopted the mount") || strings.Contains(b.out.String(), "(0 open handles)") {
		t.Errorf("supervisor B did not take over an open handle:\n%s", b.out)
	}
	if !strings.Contains(b.out.String(), "version v2") {
		t.Errorf("supervisor B's worker does not report v2:\n%s", b.out)
	}
	if err := a.wait(t, 60*time.Second); err != nil {
		t.Errorf("supervisor A after the hand-off: %v (want exit 0)", err)
	}
	if !strings.Contains(a.out.String(), "handed over") {
		t.Errorf("supervisor A does not say it handed the mount over:\n%s", a.out)
	}
	a.cmd.Process.Signal(syscall.SIGKILL) // gone already; must not matter
	if !mounted(t, mp) {
		t.Fatal("the mount is gone after the hand-off")
	}
	if got := devOf(t, mp); got != dev {
		t.Fatalf("st_dev %#x after the hand-off, was %#x: not the same connection", got, dev)
	}
	if err := os.WriteFile(filepath.Join(mp, "after"), []byte("b"), 0o644); err != nil {
		t.Fatalf("write through B: %v", err)
	}
	if got, err := os.ReadFile(filepath.Join(mp, "after")); err != nil || string(got) != "b" {
		t.Fatalf("read through B: %q, %v", got, err)
	}
}

// TestHandOffDuringRead: another supervisor, of another version, takes a
// live mount over while an application streams a large file from it.
func TestHandOffDuringRead(t *testing.T) {
	a, metaURL, mp, sock, dev := handOffMount(t)
	path := filepath.Join(mp, "big")
	app(t, "write", path, 4, fileSize, fileSize+1, nil)
	if _, err := os.Stat(path); err != nil {
		t.Fatal(err)
	}
	dropCaches(t)
	var bc chan *supervised
	sum, n := app(t, "read", path, 0, 0, killAfter, func() { bc = adoptAsync(t, metaURL, mp, sock) })
	if bc == nil {
		t.Fatal("the hand-off did not start during the read")
	}
	b := <-bc
	if n != fileSize {
		t.Fatalf("read through a hand-off: %d bytes, want %d", n, fileSize)
	}
	if want := sumOf(4, fileSize); sum != want {
		t.Fatalf("checksum: got %x, want %x", sum, want)
	}
	checkHandedOver(t, a, b, mp, dev)
	b.stop(t)
	if mounted(t, mp) {
		t.Fatal("still mounted after B's SIGTERM")
	}
}

// TestHandOffDuringWrite: the hand-off happens while an application
// writes a large file it has not fsynced; nothing written is lost.
func TestHandOffDuringWrite(t *testing.T) {
	a, metaURL, mp, sock, dev := handOffMount(t)
	path := filepath.Join(mp, "big")
	var bc chan *supervised
	app(t, "write", path, 5, fileSize, killAfter, func() { bc = adoptAsync(t, metaURL, mp, sock) })
	if bc == nil {
		t.Fatal("the hand-off did not start during the write")
	}
	b := <-bc
	checkHandedOver(t, a, b, mp, dev)
	dropCaches(t)
	checkRead(t, path, 5, "after a hand-off during the write")
	b.stop(t)
}

// TestHandOffRefusedKeepsMount: an adopter that cannot take over (another
// mount point) leaves the mount with the old supervisor, which serves on.
func TestHandOffRefusedKeepsMount(t *testing.T) {
	a, metaURL, mp, sock, dev := handOffMount(t)
	if err := os.WriteFile(filepath.Join(mp, "f"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	other := filepath.Join(t.TempDir(), "other")
	os.Mkdir(other, 0o755)
	b := <-adoptAsync(t, metaURL, other, sock)
	err := b.wait(t, 60*time.Second)
	var ee *exec.ExitError
	if !errors.As(err, &ee) || !strings.Contains(b.out.String(), "keeps the mount") {
		t.Fatalf("adopting with the wrong mount point: %v\n%s", err, b.out)
	}
	select {
	case <-a.done:
		t.Fatalf("supervisor A exited after a failed hand-off: %v\n%s", a.err, a.out)
	default:
	}
	if got, err := os.ReadFile(filepath.Join(mp, "f")); err != nil || string(got) != "x" {
		t.Fatalf("read after a failed hand-off: %q, %v", got, err)
	}
	if devOf(t, mp) != dev {
		t.Fatal("the connection changed")
	}
	a.stop(t)
}
