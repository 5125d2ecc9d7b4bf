package chunk_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/skiff-fs/skiff/fsclient/chunk"
	"github.com/skiff-fs/skiff/fsclient/format"
	"github.com/skiff-fs/skiff/fsclient/meta"
	"github.com/skiff-fs/skiff/fsclient/meta/bolt"
	"github.com/skiff-fs/skiff/fsclient/object"
	"github.com/skiff-fs/skiff/fsclient/object/dir"
	"github.com/skiff-fs/skiff/fsclient/slice"
)

// metaAdapter is what vfs will do: present *meta.Meta as chunk.Meta.
type metaAdapter struct{ m *meta.Meta }

var _ chunk.Meta = metaAdapter{}

func (a metaAdapter) NewSliceID(ctx context.Context) (uint64, error) { return a.m.NewSliceID(ctx) }

func (a metaAdapter) ReadChunk(ctx context.Context, ino uint64, c uint32) ([]slice.Slice, error) {
	return a.m.ReadChunk(ctx, meta.Ino(ino), c)
}

func (a metaAdapter) WriteChunk(ctx context.Context, ino uint64, c uint32, s slice.Slice, mtime time.Time) error {
	return a.m.WriteChunk(ctx, meta.Ino(ino), c, s, mtime)
}

func (a metaAdapter) CompactChunk(ctx context.Context, ino uint64, c uint32, old, repl []slice.Slice) error {
	err := a.m.CompactChunk(ctx, meta.Ino(ino), c, old, repl)
	if errors.Is(err, meta.ErrChunkChanged) {
		return fmt.Errorf("%w: %w", chunk.ErrChunkChanged, err)
	}
	return err
}

// env is one volume: a directory object store, bbolt metadata and a chunk
// store, all under t.TempDir().
type env struct {
	t       testing.TB
	ctx     context.Context
	blocks  *dir.Store // the raw store, for reaching around decorators
	objs    object.Store
	m       *meta.Meta
	meta    chunk.Meta
	s       *chunk.Store
	nameSeq atomic.Int64
}

// newEnv builds a volume. wrap, if not nil, decorates the directory store.
func newEnv(t testing.TB, cfg chunk.Config, wrap func(object.Store) object.Store) *env {
	t.Helper()
	ctx := context.Background()
	tmp := t.TempDir()
	ds, err := dir.New(filepath.Join(tmp, "blocks"))
	if err != nil {
		t.Fatal(err)
	}
	var objs object.Store = ds
	if wrap != nil {
		objs = wrap(ds)
	}
	eng, err := bolt.Open(filepath.Join(tmp, "meta.db"), bolt.Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { eng.Close() })
	quiet := slog.New(slog.DiscardHandler)
	m := meta.New(eng, meta.Options{Logger: quiet})
	if cfg.BlockSize == 0 {
		cfg.BlockSize = slice.MinBlockSize
	}
	f := &format.Format{Name: "test", Bucket: "file://" + ds.Root(), BlockSize: cfg.BlockSize, Compression: cfg.Compression}
	if f.Compression == "" {
		f.Compression = "none"
	}
	if err := m.Format(ctx, f, false); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close(ctx) })
	if cfg.Logger == nil {
		cfg.Logger = quiet
	}
	s, err := chunk.New(objs, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return &env{t: t, ctx: ctx, blocks: ds, objs: objs, m: m, meta: metaAdapter{m}, s: s}
}

// create makes a new empty file and returns its inode.
func (e *env) create() uint64 {
	e.t.Helper()
	name := fmt.Sprintf("f%d", e.nameSeq.Add(1))
	ino, _, err := e.m.Mknod(e.ctx, meta.RootCaller(), meta.RootIno, name, meta.TypeFile, 0o644, 0)
	if err != nil {
		e.t.Fatal(err)
	}
	return uint64(ino)
}

func (e *env) size(ino uint64) uint64 {
	e.t.Helper()
	a, err := e.m.GetAttr(e.ctx, meta.Ino(ino))
	if err != nil {
		e.t.Fatal(err)
	}
	return a.Size
}

// write writes data at off through a fresh writer and closes it.
func (e *env) write(ino uint64, off int64, data []byte) {
	e.t.Helper()
	w := e.s.NewWriter(ino, e.meta)
	if n, err := w.WriteAt(e.ctx, data, off); err != nil || n != len(data) {
		e.t.Fatalf("WriteAt(%d bytes at %d) = %d, %v", len(data), off, n, err)
	}
	if err := w.Close(e.ctx); err != nil {
		e.t.Fatal(err)
	}
}

// read reads the whole file through a fresh reader.
func (e *env) read(ino uint64) ([]byte, error) {
	size := e.size(ino)
	p := make([]byte, size)
	for i := range p {
		p[i] = 0xAA // holes must be zeroed, not left alone
	}
	n, err := e.s.NewReader(ino, e.meta).ReadAt(e.ctx, p, 0, size)
	if err == io.EOF && uint64(n) == size {
		err = nil
	}
	return p[:n], err
}

func (e *env) mustRead(ino uint64) []byte {
	e.t.Helper()
	b, err := e.read(ino)
	if err != nil {
		e.t.Fatal(err)
	}
	return b
}

func (e *env) records(ino uint64, c uint32) []slice.Slice {
	e.t.Helper()
	rs, err := e.m.ReadChunk(e.ctx, meta.Ino(ino), c)
	if err != nil {
		e.t.Fatal(err)
	}
	return rs
}

// gated counts calls and can hold Gets and Puts until released.
type gated struct {
	object.Store
	gets, puts atomic.Int64
	mu         sync.Mutex
	getGate    chan struct{} // nil: Gets pass
	putDelay   time.Duration
}

func (g *gated) Get(ctx context.Context, key string, off, limit int64) (io.ReadCloser, error) {
	g.gets.Add(1)
	g.mu.Lock()
	gate := g.getGate
	g.mu.Unlock()
	if gate != nil {
		select {
		case <-gate:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	return g.Store.Get(ctx, key, off, limit)
}

func (g *gated) Put(ctx context.Context, key string, data []byte) error {
	g.puts.Add(1)
	if g.putDelay > 0 {
		select {
		case <-time.After(g.putDelay):
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return g.Store.Put(ctx, key, data)
}

// writeFile writes size bytes to a new file, data again and again in
// writes of benchIO bytes (len(data) must be benchIO), and closes it.
func writeFile(tb testing.TB, e *env, data []byte, size int64) uint64 {
	tb.Helper()
	ino := e.create()
	w := e.s.NewWriter(ino, e.meta)
	for off := int64(0); off < size; off += benchIO {
		if _, err := w.WriteAt(e.ctx, data, off); err != nil {
			tb.Fatal(err)
		}
	}
	if err := w.Close(e.ctx); err != nil {
		tb.Fatal(err)
	}
	return ino
}
