package bolt

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/skiff-fs/skiff/fsclient/meta/kv"
	"github.com/skiff-fs/skiff/fsclient/meta/kvtest"
	"github.com/skiff-fs/skiff/internal/testloop"
)

func TestConformance(t *testing.T) {
	kvtest.Run(t, func(t testing.TB) kv.Engine {
		e, err := Open(filepath.Join(t.TempDir(), "meta", "vol.db"), Options{NoSync: true})
		if err != nil {
			t.Fatalf("Open: %v", err)
		}
		return e
	})
}

func TestSecondOpenIsLocked(t *testing.T) {
	path := filepath.Join(t.TempDir(), "vol.db")
	e, err := Open("bolt://"+path, Options{})
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	defer e.Close()
	if got, want := e.Name(), "bolt://"+path; got != want {
		t.Errorf("Name() = %q, want %q", got, want)
	}
	start := time.Now()
	_, err = Open(path, Options{LockTimeout: 200 * time.Millisecond})
	if err == nil {
		t.Fatalf("second Open of %s succeeded, want kv.ErrLocked", path)
	}
	if !errors.Is(err, kv.ErrLocked) {
		t.Errorf("second Open: %v does not wrap kv.ErrLocked", err)
	}
	want := "volume metadata " + path + " is in use by another skiff process (is it mounted? unmount it or use that mount)"
	if err.Error() != want {
		t.Errorf("second Open error:\n got %q\nwant %q", err, want)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("second Open took %v; it must not hang", d)
	}
	// After Close the file opens again and keeps its data.
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}
	e2, err := Open(path, Options{})
	if err != nil {
		t.Fatalf("Open after Close: %v", err)
	}
	e2.Close()
}

func TestDataSurvivesReopen(t *testing.T) {
	path := filepath.Join(t.TempDir(), "vol.db")
	e, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := e.Update(t.Context(), func(tx kv.Tx) error {
		tx.Set("k", []byte("v"))
		tx.HSet("h", "f", []byte("1"))
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	e.Close()
	ro, err := Open(path, Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer ro.Close()
	err = ro.View(t.Context(), func(tx kv.Tx) error {
		v, err := tx.Get("k")
		if string(v) != "v" {
			t.Errorf("Get(k) = %q after reopen", v)
		}
		m, _ := tx.HGetAll("h")
		if string(m["f"]) != "1" {
			t.Errorf("HGetAll(h) = %q after reopen", m)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := ro.Update(t.Context(), func(tx kv.Tx) error { return nil }); err == nil {
		t.Errorf("Update on a read-only engine succeeded")
	}
}

func TestBadWritesFailTheTransaction(t *testing.T) {
	e, err := Open(filepath.Join(t.TempDir(), "vol.db"), Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	err = e.Update(t.Context(), func(tx kv.Tx) error {
		tx.Set("ok", []byte("1"))
		tx.Set(strings.Repeat("k", 40000), []byte("too long a key"))
		return nil
	})
	if err == nil {
		t.Fatalf("Update with an over-long key succeeded")
	}
	e.View(t.Context(), func(tx kv.Tx) error {
		if v, _ := tx.Get("ok"); v != nil {
			t.Errorf("Get(ok) = %q after a failed transaction, want nil", v)
		}
		return nil
	})
}

// TestRefusesNonRegular opens bolt:// on a real block device, a directory
// and a FIFO: each is refused with one line, and the device is not
// written.
func TestRefusesNonRegular(t *testing.T) {
	dev := testloop.New(t)
	dir := t.TempDir()
	fifo := filepath.Join(dir, "fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(dir, "link.db")
	if err := os.Symlink(dev.Path, link); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ path, kind string }{
		{dev.Path, "a device"},
		{link, "a device"},
		{dir, "a directory"},
		{fifo, "a FIFO"},
	} {
		for _, ro := range []bool{false, true} {
			e, err := Open("bolt://"+tc.path, Options{ReadOnly: ro})
			if err == nil {
				e.Close()
				t.Errorf("Open(%s, ReadOnly=%v) succeeded", tc.path, ro)
				continue
			}
			if !strings.Contains(err.Error(), tc.kind) || strings.Contains(err.Error(), "\n") {
				t.Errorf("Open(%s): %q, want one line saying it is %s", tc.path, err, tc.kind)
			}
		}
	}
	dev.Unchanged(t)
}

// TestOpenRegularChecksTheDescriptor covers the race the os.Stat cannot:
// a path that is a device by the time it is opened.
func TestOpenRegularChecksTheDescriptor(t *testing.T) {
	dev := testloop.New(t)
	if f, err := openRegular(dev.Path, os.O_RDWR|os.O_CREATE, 0o600); err == nil {
		f.Close()
		t.Fatal("openRegular opened a device")
	}
	dev.Unchanged(t)
}
