package fuse_test

import (
	"bytes"
	"errors"
	"io/fs"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"

	"github.com/skiff-fs/skiff/fsclient/fuse/fusetest"
)

// syncLog collects log output for inspection and passes it to t.Log.
type syncLog struct {
	t  testing.TB
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *syncLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.b.Write(p)
	return len(p), nil
}

func (l *syncLog) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// TestFlippedByteIsEIO: on an unencrypted, uncompressed volume whose
// blocks live in a directory, one byte flipped in a stored block makes
// reads of it fail with EIO and log "DATA LOSS" with the block's key;
// no read returns a wrong byte. No block cache, and a fresh mount, so
// every read reaches the object store.
func TestFlippedByteIsEIO(t *testing.T) {
	logs := &syncLog{t: t}
	log := slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelWarn}))
	blocks := filepath.Join(t.TempDir(), "blocks")
	cfg := fusetest.Config{Bucket: "file://" + blocks, BlockSize: 1 << 20}
	cfg.Meta.Logger = log
	m := fusetest.Start(t, cfg)
	data := make([]byte, 3<<20/2) // a full block and half of one
	r := rand.New(rand.NewPCG(1, 2))
	for i := range data {
		data[i] = byte(r.Uint32())
	}
	if err := os.WriteFile(m.Path("f"), data, 0o644); err != nil {
		t.Fatal(err)
	}
	cfg = m.Config
	m.Unmount() // flushes; a new mount starts with an empty page cache

	// Flip one byte in the middle of the first block's object.
	var keys []string
	filepath.WalkDir(blocks, func(p string, d fs.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() && strings.Contains(p, "/chunks/") {
			keys = append(keys, p)
		}
		return nil
	})
	if len(keys) != 2 {
		t.Fatalf("stored blocks %v, want 2", keys)
	}
	var target string
	for _, p := range keys {
		if strings.HasSuffix(p, "_0_1048576") {
			target = p
		}
	}
	if target == "" {
		t.Fatalf("no first block among %v", keys)
	}
	stored, err := os.ReadFile(target)
	if err != nil {
		t.Fatal(err)
	}
	stored[len(stored)/2] ^= 0x01
	if err := os.WriteFile(target, stored, 0o644); err != nil {
		t.Fatal(err)
	}
	key := target[strings.Index(target, "chunks/"):]

	m = fusetest.Start(t, cfg)
	check := func(name string, off int64, n int) error {
		f, err := os.Open(m.Path("f"))
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		p := make([]byte, n)
		got, err := f.ReadAt(p, off)
		if !bytes.Equal(p[:got], data[off:off+int64(got)]) {
			t.Fatalf("%s: read %d bytes at %d returned wrong bytes (err %v)", name, got, off, err)
		}
		return err
	}
	// A random read across the flipped byte (a range read), then the
	// whole file (whole-block reads): both EIO, neither a wrong byte.
	if err := check("range", 1<<19-4096, 8192); !errors.Is(err, syscall.EIO) {
		t.Errorf("range read across the damaged byte: %v, want EIO", err)
	}
	if err := check("whole", 0, len(data)); !errors.Is(err, syscall.EIO) {
		t.Errorf("whole-file read: %v, want EIO", err)
	}
	// The second block is intact.
	if err := check("second block", 1<<20, 1<<19); err != nil {
		t.Errorf("read of the intact block: %v", err)
	}
	out := logs.String()
	if !strings.Contains(out, "DATA LOSS") || !strings.Contains(out, key) {
		t.Errorf("log has no DATA LOSS line naming %s:\n%s", key, out)
	}
}
