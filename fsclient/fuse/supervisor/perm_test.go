package supervisor_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/skiff-fs/skiff/internal/syncbuf"
)

// asUser runs sh -c script as uid/gid (no supplementary groups) and
// returns its combined output and whether it exited 0.
func asUser(t *testing.T, uid uint32, script string, args ...string) (string, bool) {
	t.Helper()
	cmd := exec.Command("/bin/sh", append([]string{"-c", script, "sh"}, args...)...)
	cmd.Dir = "/"
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uid, Gid: uid, Groups: []uint32{}}}
	out, err := cmd.CombinedOutput()
	if _, ok := err.(*exec.ExitError); err != nil && !ok {
		t.Fatalf("sh as %d: %v", uid, err)
	}
	return strings.TrimSpace(string(out)), err == nil
}

// TestSupervisedPermissions: a supervised mount has default_permissions,
// so the kernel denies what skiff is never asked about: opening a FIFO,
// and walking entries it still caches after the directory was closed.
func TestSupervisedPermissions(t *testing.T) {
	metaURL := newVolume(t)
	logs := &syncbuf.Buffer{}
	s := startCmd(t, workerCmd(t, "v1", metaURL, logs), logs)
	mp := s.Mountpoint()
	for d := filepath.Dir(mp); strings.HasPrefix(d, filepath.Clean(os.TempDir())+"/"); d = filepath.Dir(d) {
		os.Chmod(d, 0o755)
	}
	const user = 2002
	fifo := filepath.Join(mp, "fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	// <> opens read-write, which does not wait for a peer.
	if out, ok := asUser(t, user, `: <>"$1"`, fifo); ok || !strings.Contains(out, "ermission denied") {
		t.Errorf("uid %d opened root's 0600 FIFO through the supervisor: ok=%v %q", user, ok, out)
	}

	d := filepath.Join(mp, "d")
	if err := os.Mkdir(d, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(d, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(d, "f"), []byte("secret"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(filepath.Join(d, "f"), 0o644); err != nil {
		t.Fatal(err)
	}
	// One shell reads, the owner closes the directory, the same shell
	// reads again: the kernel still holds d and d/f.
	script := `cat "$1/f" && echo && touch "$2.go" && while [ ! -e "$2.done" ]; do :; done; cat "$1/f"`
	flag := filepath.Join(t.TempDir(), "flag")
	os.Chmod(filepath.Dir(flag), 0o777)
	done := make(chan struct{})
	var out string
	var ok bool
	go func() {
		defer close(done)
		out, ok = asUser(t, user, script, d, flag)
	}()
	for i := 0; ; i++ {
		if _, err := os.Stat(flag + ".go"); err == nil {
			break
		}
		if i > 3000 {
			t.Fatal("the reader did not start")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err := os.Chmod(d, 0o700); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(flag+".done", nil, 0o644)
	<-done
	if ok || !strings.HasPrefix(out, "secret") || !strings.Contains(out, "ermission denied") {
		t.Errorf("read, chmod 0700 by the owner, read again as uid %d: ok=%v %q", user, ok, out)
	}
}
