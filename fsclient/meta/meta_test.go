package meta_test

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/skiff-fs/skiff/fsclient/meta"
	"github.com/skiff-fs/skiff/fsclient/meta/bolt"
	"github.com/skiff-fs/skiff/fsclient/meta/metatest"
	"github.com/skiff-fs/skiff/internal/testredis"
)

func TestBolt(t *testing.T) {
	t.Parallel()
	metatest.Run(t, func(t testing.TB) metatest.Volume {
		// bbolt allows one process per file: every client of the volume
		// is a separate Meta over one shared engine.
		e, err := bolt.Open(filepath.Join(t.TempDir(), "vol.db"), bolt.Options{NoSync: true})
		if err != nil {
			t.Fatalf("bolt.Open: %v", err)
		}
		t.Cleanup(func() { e.Close() })
		return metatest.Volume{
			Open: func(t testing.TB, opts meta.Options) *meta.Meta { return meta.New(e, opts) },
		}
	})
}

func TestRedis(t *testing.T) {
	t.Parallel()
	srv := testredis.Start(t, testredis.WithPersistence())
	var mu sync.Mutex
	db := 0
	metatest.Run(t, func(t testing.TB) metatest.Volume {
		// Each volume gets its own key prefix on one server.
		mu.Lock()
		db++
		url := fmt.Sprintf("%s?prefix=v%d", srv.URL(), db)
		mu.Unlock()
		return metatest.Volume{
			Open: func(t testing.TB, opts meta.Options) *meta.Meta {
				m, err := meta.Open(context.Background(), url, opts)
				if err != nil {
					t.Fatalf("meta.Open(%s): %v", url, err)
				}
				return m
			},
			Restart: func(t testing.TB) { srv.Restart(t) },
		}
	})
}

func TestOpenURL(t *testing.T) {
	ctx := context.Background()
	for _, url := range []string{"mysql://u:secret@h/db", "nonsense", "tikv://h:1"} {
		_, err := meta.Open(ctx, url, meta.Options{})
		if err == nil {
			t.Fatalf("Open(%q) succeeded", url)
		}
		if strings.Contains(err.Error(), "secret") {
			t.Fatalf("Open(%q) error leaks the password: %v", url, err)
		}
	}
	path := filepath.Join(t.TempDir(), "v.db")
	m, err := meta.Open(ctx, "bolt://"+path, meta.Options{})
	if err != nil {
		t.Fatalf("Open bolt: %v", err)
	}
	if got := m.Name(); got != "bolt://"+path {
		t.Errorf("Name() = %q", got)
	}
	if _, err := m.Load(ctx); err == nil || !strings.Contains(err.Error(), "skiff format") {
		t.Errorf("Load of an empty volume: %v", err)
	}
	if err := m.Close(ctx); err != nil {
		t.Fatalf("Close: %v", err)
	}
	srv := testredis.Start(t, testredis.WithPassword("hunter2"))
	m, err = meta.Open(ctx, srv.URL(), meta.Options{})
	if err != nil {
		t.Fatalf("Open redis: %v", err)
	}
	defer m.Close(ctx)
	if strings.Contains(m.Name(), "hunter2") {
		t.Errorf("Name() leaks the password: %s", m.Name())
	}
}
