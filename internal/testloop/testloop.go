// Package testloop gives a test a real loop block device over a temporary
// file, to prove that something refuses to write to a block device. It
// skips the test when losetup or loop devices are not available (not
// root, no /dev/loop-control).
package testloop

import (
	"bytes"
	"crypto/rand"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// Head is how much of the device Unchanged compares.
const Head = 16 << 10

// Device is a loop device set up for one test.
type Device struct {
	// Path is the device node, e.g. /dev/loop3.
	Path string
	head []byte
}

// New attaches a 1 MiB file of random bytes to a free loop device and
// detaches it when the test ends.
func New(t testing.TB) *Device {
	t.Helper()
	losetup, err := exec.LookPath("losetup")
	if err != nil {
		t.Skip("no losetup: cannot create a loop device")
	}
	if _, err := os.Stat("/dev/loop-control"); err != nil {
		t.Skip("no /dev/loop-control: cannot create a loop device")
	}
	data := make([]byte, 1<<20)
	if _, err := rand.Read(data); err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(t.TempDir(), "disk.img")
	if err := os.WriteFile(file, data, 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(losetup, "--find", "--show", file).CombinedOutput()
	if err != nil {
		t.Skipf("losetup --find --show: %v: %s", err, bytes.TrimSpace(out))
	}
	d := &Device{Path: strings.TrimSpace(string(out)), head: data[:Head]}
	t.Cleanup(func() {
		if out, err := exec.Command(losetup, "--detach", d.Path).CombinedOutput(); err != nil {
			t.Errorf("losetup --detach %s: %v: %s", d.Path, err, out)
		}
	})
	if fi, err := os.Stat(d.Path); err != nil || fi.Mode()&os.ModeDevice == 0 {
		t.Fatalf("%s is not a device: %v", d.Path, err)
	}
	d.Unchanged(t)
	return d
}

// Unchanged fails the test if the first Head bytes of the device differ
// from what New wrote.
func (d *Device) Unchanged(t testing.TB) {
	t.Helper()
	f, err := os.Open(d.Path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	got := make([]byte, Head)
	if _, err := f.ReadAt(got, 0); err != nil {
		t.Fatalf("read %s: %v", d.Path, err)
	}
	if !bytes.Equal(got, d.head) {
		n := 0
		for i := range got {
			if got[i] != d.head[i] {
				n++
			}
		}
		t.Errorf("%s: %d of the first %d bytes were overwritten", d.Path, n, Head)
	}
}
