package main

import (
	"bytes"
	"context"
	"io"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/skiff-fs/skiff/fsclient/cache"
	"github.com/skiff-fs/skiff/fsclient/meta"
	"github.com/skiff-fs/skiff/fsclient/volume"
)

func init() {
	// Mounts in these tests use the default cache directory: keep it out
	// of /var/cache.
	if os.Getenv("SKIFF_CACHE_DIR") == "" {
		os.Setenv("SKIFF_CACHE_DIR", filepath.Join(os.TempDir(), "skiff-cli-test-cache"))
	}
}

// warmupVolume formats an embedded volume with 64 KiB blocks and writes
// /data/a (3 blocks and a bit), /data/sub/b (1 block), /data/empty (no
// blocks, not counted as a file to warm) and /other (2 blocks) through the chunk layer. It returns the META_URL, the
// block directory and the files' contents.
func warmupVolume(t *testing.T) (string, string, map[string][]byte) {
	t.Helper()
	ctx := context.Background()
	dir := t.TempDir()
	url := "bolt://" + filepath.Join(dir, "vol.db")
	if _, err := volume.Create(ctx, volume.FormatConfig{MetaURL: url, Name: "warm", BlockSize: 64 << 10}); err != nil {
		t.Fatal(err)
	}
	v, err := volume.Open(ctx, volume.Config{MetaURL: url})
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close(ctx)
	if err := v.Meta.NewSession(ctx, meta.SessionInfo{Version: "test"}); err != nil {
		t.Fatal(err)
	}
	r := rand.New(rand.NewPCG(3, 3))
	rnd := func(n int) []byte {
		b := make([]byte, n)
		for i := range b {
			b[i] = byte(r.Uint32())
		}
		return b
	}
	files := map[string][]byte{
		"data/a":     rnd(3<<16 + 100),
		"data/sub/b": rnd(1 << 16),
		"data/empty": nil,
		"other":      rnd(2 << 16),
	}
	c := meta.RootCaller()
	dirs := map[string]meta.Ino{".": meta.RootIno}
	for _, d := range []string{"data", "data/sub"} {
		ino, _, err := v.Meta.Mkdir(ctx, c, dirs[filepath.Dir(d)], filepath.Base(d), 0o755)
		if err != nil {
			t.Fatal(err)
		}
		dirs[d] = ino
	}
	for name, data := range files {
		ino, _, err := v.Meta.Create(ctx, c, dirs[filepath.Dir(name)], filepath.Base(name), 0o644, 0)
		if err != nil {
			t.Fatal(err)
		}
		w := v.Chunks.NewWriter(uint64(ino), v.ChunkMeta())
		if _, err := w.WriteAt(ctx, data, 0); err != nil {
			t.Fatal(err)
		}
		if err := w.Close(ctx); err != nil {
			t.Fatal(err)
		}
		v.Meta.Release(ctx, ino)
	}
	return url, filepath.Join(dir, "vol-blocks"), files
}

// TestWarmup warms /data, checks it, reads it with the object store gone
// (no Get is possible, and none is made), and evicts it.
func TestWarmup(t *testing.T) {
	url, blocks, files := warmupVolume(t)
	cacheDir := t.TempDir()
	warm := func(args ...string) string {
		t.Helper()
		return mustRun(t, nil, append([]string{"warmup", "--cache-dir", cacheDir, "--cache-free-ratio", "0", "--threads", "4", url}, args...)...)
	}
	if out := warm("/data", "--check"); !strings.Contains(out, "2 files, 5 blocks") || !strings.Contains(out, "0 blocks (0 B) cached, 0.0%") {
		t.Errorf("check before warmup: %s", out)
	}
	if out := warm("/data"); !strings.Contains(out, "5 blocks fetched, 0 already cached, 0 failed") {
		t.Errorf("warmup: %s", out)
	}
	// Resumable: a second run fetches nothing.
	if out := warm("data/"); !strings.Contains(out, "0 blocks fetched, 5 already cached") {
		t.Errorf("second warmup: %s", out)
	}
	if out := warm("/data", "--check"); !strings.Contains(out, "5 blocks (256.1 KiB) cached, 100.0%") {
		t.Errorf("check after warmup: %s", out)
	}
	if out := warm("/other", "--check"); !strings.Contains(out, "0.0%") {
		t.Errorf("check of a file not warmed: %s", out)
	}

	// Read /data with the blocks moved away: only the cache can serve it.
	if err := os.Rename(blocks, blocks+".away"); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	v, err := volume.Open(ctx, volume.Config{MetaURL: url, Cache: &cache.Config{Dir: cacheDir, MemSize: -1, FreeRatio: -1}})
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"data/a", "data/sub/b"} {
		ino, attr, err := v.Resolve(ctx, name)
		if err != nil {
			t.Fatal(err)
		}
		p := make([]byte, attr.Size)
		n, err := v.Chunks.NewReader(uint64(ino), v.ChunkMeta()).ReadAt(ctx, p, 0, attr.Size)
		if err != nil && err != io.EOF {
			t.Fatalf("read %s after warmup: %v", name, err)
		}
		if !bytes.Equal(p[:n], files[name]) {
			t.Fatalf("read %s after warmup: wrong data", name)
		}
	}
	if st := v.Chunks.Stats(); st.BlocksGot != 0 {
		t.Errorf("reads after warmup made %d Gets", st.BlocksGot)
	}
	if st := v.Cache.Stats(); st.Hits != 5 {
		t.Errorf("cache stats: %+v", st)
	}
	v.Close(ctx)
	os.RemoveAll(blocks) // opening the volume made it again, empty
	if err := os.Rename(blocks+".away", blocks); err != nil {
		t.Fatal(err)
	}

	if out := warm("/data/sub", "--evict"); !strings.Contains(out, "1 files, 1 blocks (64.0 KiB): evicted") {
		t.Errorf("evict: %s", out)
	}
	if out := warm("/data", "--check"); !strings.Contains(out, "4 blocks (192.1 KiB) cached, 75.0%") {
		t.Errorf("check after evict: %s", out)
	}
	mustFail(t, nil, []string{"no such file"}, "warmup", "--cache-dir", cacheDir, url, "/nope")
	mustFail(t, nil, []string{"--cache-size must not be 0"}, "warmup", "--cache-size", "0", url, "/data")
}

// TestWarmupInsideMount warms a directory of a mounted volume through the
// mount (no META_URL): the mount's cache ends up with the directory's
// blocks and no others.
func TestWarmupInsideMount(t *testing.T) {
	url, _, _ := warmupVolume(t)
	cacheDir := t.TempDir()
	mp := filepath.Join(t.TempDir(), "mnt")
	os.Mkdir(mp, 0o755)
	out, done := startMount(t, "--cache-dir", cacheDir, "--cache-free-ratio", "0", url, mp)
	warm := func(args ...string) (string, error) {
		w := newWarmup(&globals{})
		var b bytes.Buffer
		w.SetArgs(args)
		w.SetOut(&b)
		w.SetErr(&b)
		err := w.Execute()
		return b.String(), err
	}
	res, err := warm("--threads", "3", filepath.Join(mp, "data"))
	if err != nil || !strings.Contains(res, "2 files (256.1 KiB) read through the mount") {
		t.Errorf("warmup inside the mount: %v\n%s", err, res)
	}
	var cached int
	filepath.WalkDir(cacheDir, func(p string, d fs.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() {
			cached++
		}
		return nil
	})
	if cached != 5 {
		t.Errorf("the mount's cache holds %d blocks, want the 5 of /data", cached)
	}
	if _, err := warm("--check", filepath.Join(mp, "data")); err == nil || !strings.Contains(err.Error(), "META_URL") {
		t.Errorf("--check inside the mount: %v", err)
	}
	if _, err := warm(t.TempDir()); err == nil || !strings.Contains(err.Error(), "not in a skiff mount") {
		t.Errorf("warmup outside a mount: %v", err)
	}
	umountAndWait(t, mp, done, out)
}
