package meta_test

import (
	"context"
	"fmt"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/skiff-fs/skiff/fsclient/format"
	"github.com/skiff-fs/skiff/fsclient/meta"
	"github.com/skiff-fs/skiff/internal/testredis"
)

// BenchmarkMeta reports metadata operations per second for create, lookup
// and getattr on a real redis-server and on the embedded bbolt engine, side
// by side in one run. Parallel sub-benchmarks use GOMAXPROCS*4 clients'
// worth of goroutines over one Meta, as a FUSE server would.
func BenchmarkMeta(b *testing.B) {
	srv := testredis.Start(b)
	engines := []struct {
		name string
		url  func(i int) string
	}{
		{"redis", func(i int) string { return fmt.Sprintf("%s?prefix=bench%d", srv.URL(), i) }},
		{"bolt", func(int) string { return "bolt://" + filepath.Join(b.TempDir(), "bench.db") }},
	}
	var n int
	for _, e := range engines {
		b.Run(e.name, func(b *testing.B) {
			n++
			m := openBench(b, e.url(n))
			ctx := context.Background()
			c := meta.RootCaller()
			dir, _, err := m.Mkdir(ctx, c, meta.RootIno, "d", 0o755)
			if err != nil {
				b.Fatal(err)
			}
			var seq atomic.Int64
			b.Run("create", func(b *testing.B) {
				b.SetParallelism(4)
				b.RunParallel(func(pb *testing.PB) {
					for pb.Next() {
						name := fmt.Sprintf("f%d", seq.Add(1))
						ino, _, err := m.Create(ctx, c, dir, name, 0o644, 0)
						if err != nil {
							b.Fatal(err)
						}
						m.Release(ctx, ino)
					}
				})
				reportOps(b)
			})
			total := seq.Load()
			if total == 0 {
				b.Fatal("no files created")
			}
			b.Run("lookup", func(b *testing.B) {
				var i atomic.Int64
				b.SetParallelism(4)
				b.RunParallel(func(pb *testing.PB) {
					for pb.Next() {
						name := fmt.Sprintf("f%d", i.Add(1)%total+1)
						if _, _, err := m.Lookup(ctx, c, dir, name); err != nil {
							b.Fatal(err)
						}
					}
				})
				reportOps(b)
			})
			b.Run("getattr", func(b *testing.B) {
				b.SetParallelism(4)
				b.RunParallel(func(pb *testing.PB) {
					for pb.Next() {
						if _, err := m.GetAttr(ctx, dir); err != nil {
							b.Fatal(err)
						}
					}
				})
				reportOps(b)
			})
		})
	}
}

func reportOps(b *testing.B) {
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "ops/s")
}

func openBench(b *testing.B, url string) *meta.Meta {
	ctx := context.Background()
	m, err := meta.Open(ctx, url, meta.Options{})
	if err != nil {
		b.Fatal(err)
	}
	f := &format.Format{Name: "bench", UUID: "bench", Version: format.Version, Bucket: "file:///nonexistent",
		BlockSize: 4 << 20, Compression: "none", Created: time.Now()}
	if err := m.Format(ctx, f, false); err != nil {
		b.Fatal(err)
	}
	if err := m.NewSession(ctx, meta.SessionInfo{Version: "bench"}); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { m.Close(ctx) })
	return m
}
