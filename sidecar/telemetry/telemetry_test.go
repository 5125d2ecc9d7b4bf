package telemetry

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/skiff-fs/skiff/fsclient/chunk"
)

func TestSocketRoundTrip(t *testing.T) {
	path := filepath.Join(t.TempDir(), "m.sock")
	// A socket left by a killed process is replaced.
	stale, err := Listen(path)
	if err != nil {
		t.Fatal(err)
	}
	if ul, ok := stale.(interface{ SetUnlinkOnClose(bool) }); ok {
		ul.SetUnlinkOnClose(false)
	}
	stale.Close()
	if _, err := os.Lstat(path); err != nil {
		t.Fatalf("the stale socket should still be there: %v", err)
	}

	ops := NewFuseOps(false)
	reg := prometheus.NewRegistry()
	cs := chunk.Stats{BlocksPut: 7, BytesPut: 7 << 20, Buffered: 3}
	reg.MustRegister(ops, NewCollector(false, func() []Volume {
		return []Volume{{Stats: Stats{Chunk: &cs, BufferLimit: 64 << 20, HasMetaRetries: true, MetaConflicts: 2}}}
	}))
	o := ops.Observer("")
	o.ObserveOp("write", 3*time.Millisecond, 0)
	o.ObserveOp("lookup", time.Millisecond, syscall.ENOENT)

	ln, err := Listen(path)
	if err != nil {
		t.Fatalf("listen over a stale socket: %v", err)
	}
	srv := Serve(ln, reg)
	fi, err := os.Stat(path)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("socket mode: %v %v", fi.Mode(), err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	mfs, err := Scrape(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	get := func(name string, labels map[string]string) float64 {
		t.Helper()
		mf, ok := mfs[name]
		if !ok {
			t.Fatalf("no %s", name)
		}
	next:
		for _, m := range mf.Metric {
			for _, l := range m.Label {
				if want, ok := labels[l.GetName()]; ok && want != l.GetValue() {
					continue next
				}
			}
			switch {
			case m.Counter != nil:
				return m.Counter.GetValue()
			case m.Gauge != nil:
				return m.Gauge.GetValue()
			case m.Histogram != nil:
				return float64(m.Histogram.GetSampleCount())
			}
		}
		t.Fatalf("no %s%v", name, labels)
		return 0
	}
	for _, c := range []struct {
		name   string
		labels map[string]string
		want   float64
	}{
		{"skiff_object_requests_total", map[string]string{"op": "put"}, 7},
		{"skiff_object_bytes_total", map[string]string{"op": "put"}, 7 << 20},
		{"skiff_write_buffer_bytes", nil, 3},
		{"skiff_write_buffer_limit_bytes", nil, 64 << 20},
		{"skiff_meta_tx_retries_total", map[string]string{"reason": "conflict"}, 2},
		{"skiff_fuse_op_duration_seconds", map[string]string{"op": "write"}, 1},
		{"skiff_fuse_op_errors_total", map[string]string{"op": "lookup", "errno": "ENOENT"}, 1},
	} {
		if got := get(c.name, c.labels); got != c.want {
			t.Errorf("%s%v = %v, want %v", c.name, c.labels, got, c.want)
		}
	}
	if _, ok := mfs["skiff_cache_hits_total"]; ok {
		t.Errorf("cache metrics without a cache")
	}
	if err := srv.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(path); !os.IsNotExist(err) {
		t.Errorf("the socket outlived the server: %v", err)
	}
	if _, err := Scrape(ctx, path); err == nil {
		t.Errorf("scraping a closed socket succeeded")
	}
}

func TestListenRefuses(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "file")
	os.WriteFile(file, []byte("x"), 0o644)
	if _, err := Listen(file); err == nil || !strings.Contains(err.Error(), "not a socket") {
		t.Errorf("listen over a regular file: %v", err)
	}
	if b, _ := os.ReadFile(file); string(b) != "x" {
		t.Errorf("the regular file was touched")
	}
	long := filepath.Join(dir, strings.Repeat("d", 120))
	if _, err := Listen(long); err == nil || !strings.Contains(err.Error(), "shorter") {
		t.Errorf("listen on a too long path: %v", err)
	}
}

func TestStatusFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "v.status")
	if _, err := ReadStatus(path); !os.IsNotExist(err) {
		t.Fatalf("missing status: %v", err)
	}
	want := Status{PID: 10, WorkerPID: 11, WorkerVersion: "v2", Generation: 3, Mountpoint: "/m"}
	if err := WriteStatus(path, want); err != nil {
		t.Fatal(err)
	}
	if err := WriteStatus(path, want); err != nil {
		t.Fatal(err)
	}
	got, err := ReadStatus(path)
	if err != nil || got != want {
		t.Fatalf("ReadStatus = %+v, %v; want %+v", got, err, want)
	}
	ents, _ := os.ReadDir(filepath.Dir(path))
	if len(ents) != 1 {
		t.Errorf("temporary files left: %v", ents)
	}
}
