// Package fusetest starts skiff volumes and mounts them for tests: a real
// FUSE mount under t.TempDir(), unmounted in t.Cleanup even when the test
// fails. It also runs file operations as other users (As), in a child
// process of the test binary, so tests can check permissions.
//
// Tests that use As must call fusetest.Main from TestMain.
package fusetest

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/skiff-fs/skiff/fsclient/cache"
	"github.com/skiff-fs/skiff/fsclient/chunk"
	"github.com/skiff-fs/skiff/fsclient/fuse"
	"github.com/skiff-fs/skiff/fsclient/meta"
	"github.com/skiff-fs/skiff/fsclient/vfs"
	"github.com/skiff-fs/skiff/fsclient/volume"
	"github.com/skiff-fs/skiff/internal/testredis"
)

// Config describes the volume and the mount. Zero values give a bbolt
// volume with its blocks in a directory, both in t.TempDir().
type Config struct {
	// MetaURL of the volume; "" makes a bolt:// volume in t.TempDir().
	MetaURL string
	// Bucket for Format; "" is a directory in t.TempDir().
	Bucket string
	// Name of the volume; default "test".
	Name string
	// Existing: the volume is already formatted (a remount).
	Existing bool
	// BlockSize, Compression, Passphrase (encrypts when set) for Format.
	BlockSize   uint32
	Compression string
	Passphrase  []byte
	// Meta and Chunk tune the opened volume.
	Meta  meta.Options
	Chunk chunk.Config
	// Cache gives the volume a block cache (volume.Config.Cache).
	Cache *cache.Config
	// VFS and Mount configure the file system; Mount.AllowOther is
	// forced on so that As can reach the mount.
	VFS   vfs.Config
	Mount fuse.Options
	// Dir is the mountpoint; default a new directory in t.TempDir().
	Dir string
}

// Mount is a mounted volume.
type Mount struct {
	Dir     string // the mountpoint
	MetaURL string
	Config  Config // as used, with defaults filled in
	Volume  *volume.Volume
	VFS     *vfs.VFS
	Server  *fuse.Server

	t       testing.TB
	stopped bool
}

// NewBolt formats a bbolt volume with a directory store and mounts it.
func NewBolt(t testing.TB) *Mount { return Start(t, Config{}) }

// NewRedis starts a redis-server for the test, formats a volume on it and
// mounts it.
func NewRedis(t testing.TB) *Mount {
	srv := testredis.Start(t)
	return Start(t, Config{MetaURL: srv.URL()})
}

// Start formats (unless cfg.Existing) and mounts a volume; a failure
// fails the test.
func Start(t testing.TB, cfg Config) *Mount {
	t.Helper()
	m, err := TryStart(t, cfg)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// TryStart is Start returning the error (to test failures to mount).
func TryStart(t testing.TB, cfg Config) (*Mount, error) {
	t.Helper()
	ctx := context.Background()
	if cfg.Name == "" {
		cfg.Name = "test"
	}
	if cfg.MetaURL == "" {
		cfg.MetaURL = "bolt://" + filepath.Join(t.TempDir(), "meta.db")
	}
	if cfg.Bucket == "" && !cfg.Existing {
		cfg.Bucket = "file://" + filepath.Join(t.TempDir(), "blocks")
	}
	if cfg.Meta.Logger == nil {
		cfg.Meta.Logger = testLogger(t)
	}
	if cfg.VFS.Logger == nil {
		cfg.VFS.Logger = cfg.Meta.Logger
	}
	if cfg.Mount.Logger == nil {
		cfg.Mount.Logger = cfg.Meta.Logger
	}
	cfg.Mount.AllowOther = true
	if !cfg.Existing {
		_, err := volume.Create(ctx, volume.FormatConfig{
			MetaURL: cfg.MetaURL, Name: cfg.Name, Bucket: cfg.Bucket, BlockSize: cfg.BlockSize,
			Compression: cfg.Compression, Encrypt: cfg.Passphrase != nil, Passphrase: cfg.Passphrase,
		})
		if err != nil {
			return nil, fmt.Errorf("format volume: %w", err)
		}
		cfg.Existing = true
	}
	mcfg := cfg.Meta
	mcfg.ReadOnly = mcfg.ReadOnly || cfg.VFS.ReadOnly
	v, err := volume.Open(ctx, volume.Config{MetaURL: cfg.MetaURL, Passphrase: cfg.Passphrase, Meta: mcfg, Chunk: cfg.Chunk, Cache: cfg.Cache, Logger: cfg.Meta.Logger})
	if err != nil {
		return nil, fmt.Errorf("open volume: %w", err)
	}
	if cfg.Dir == "" {
		cfg.Dir = filepath.Join(t.TempDir(), "mnt")
		if err := os.Mkdir(cfg.Dir, 0o755); err != nil {
			return nil, err
		}
	}
	openUp(cfg.Dir)
	host, _ := os.Hostname()
	if err := v.Meta.NewSession(ctx, meta.SessionInfo{Version: "test", Hostname: host, MountPoint: cfg.Dir, PID: os.Getpid()}); err != nil {
		v.Close(ctx)
		return nil, fmt.Errorf("start session: %w", err)
	}
	fs, err := vfs.New(v, cfg.VFS)
	if err != nil {
		v.Close(ctx)
		return nil, fmt.Errorf("vfs: %w", err)
	}
	srv, err := fuse.Mount(fs, cfg.Dir, cfg.Mount)
	if err != nil {
		v.Close(ctx)
		return nil, fmt.Errorf("mount: %w", err)
	}
	m := &Mount{Dir: cfg.Dir, MetaURL: cfg.MetaURL, Config: cfg, Volume: v, VFS: fs, Server: srv, t: t}
	t.Cleanup(m.Unmount)
	return m, nil
}

// openUp lets other users reach dir: the test's temporary directories
// are created 0700.
func openUp(dir string) {
	tmp := filepath.Clean(os.TempDir())
	for d := filepath.Dir(dir); strings.HasPrefix(d, tmp+"/"); d = filepath.Dir(d) {
		os.Chmod(d, 0o755)
	}
}

// Path joins elem to the mountpoint.
func (m *Mount) Path(elem ...string) string {
	return filepath.Join(append([]string{m.Dir}, elem...)...)
}

// Unmount flushes, unmounts (lazily if files are still in use after a
// few tries), and closes the volume and its session. It is idempotent and
// runs in t.Cleanup.
func (m *Mount) Unmount() {
	if m.stopped {
		return
	}
	m.stopped = true
	ctx := context.Background()
	if err := m.VFS.FlushAll(ctx); err != nil {
		m.t.Errorf("flush before unmount: %v", err)
	}
	var err error
	for i := 0; i < 20; i++ {
		if err = m.Server.Unmount(); err == nil {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err != nil {
		m.t.Logf("unmount %s: %v; detaching lazily", m.Dir, err)
		if err := m.Server.UnmountLazy(); err != nil {
			m.t.Errorf("lazy unmount %s: %v", m.Dir, err)
		}
		select {
		case <-m.Server.Done():
		case <-time.After(10 * time.Second):
			m.t.Errorf("FUSE server of %s did not stop after a lazy unmount", m.Dir)
		}
	}
	if err := m.VFS.Close(ctx); err != nil {
		m.t.Errorf("close vfs: %v", err)
	}
	if err := m.Volume.Close(ctx); err != nil {
		m.t.Errorf("close volume: %v", err)
	}
}

// Remount unmounts m and mounts the same volume again on the same
// directory with the same configuration.
func (m *Mount) Remount() *Mount {
	m.t.Helper()
	m.Unmount()
	cfg := m.Config
	cfg.Existing = true
	return Start(m.t, cfg)
}

// testLogger sends warnings and errors to the test log.
func testLogger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(tlogWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn}))
}

type tlogWriter struct{ t testing.TB }

func (w tlogWriter) Write(p []byte) (int, error) {
	defer func() { recover() }() // logging after the test ended
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// String describes the mount for messages.
func (m *Mount) String() string { return fmt.Sprintf("%s on %s", m.MetaURL, m.Dir) }
