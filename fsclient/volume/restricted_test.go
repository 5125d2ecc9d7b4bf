package volume_test

import (
	"context"
	"path/filepath"
	"strings"
	"testing"

	"github.com/skiff-fs/skiff/fsclient/volume"
	"github.com/skiff-fs/skiff/internal/testloop"
	"github.com/skiff-fs/skiff/internal/testredis"
)

// TestRestricted opens volumes as a privileged caller does: a bolt://
// META_URL (a file, or a real block device) and a Redis volume whose
// blocks live in a directory are refused; the device is not written.
func TestRestricted(t *testing.T) {
	ctx := context.Background()
	dev := testloop.New(t)
	file := "bolt://" + filepath.Join(t.TempDir(), "vol.db")
	if _, err := volume.Create(ctx, volume.FormatConfig{MetaURL: file, Name: "test"}); err != nil {
		t.Fatal(err)
	}
	srv := testredis.Start(t)
	rurl := "redis://" + srv.Addr() + "/1"
	if _, err := volume.Create(ctx, volume.FormatConfig{MetaURL: rurl, Name: "test", Bucket: "file://" + t.TempDir()}); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ url, want string }{
		{file, "accept only redis://"},
		{"bolt://" + dev.Path, "accept only redis://"},
		{"BOLT://" + dev.Path, "accept only redis://"},
		{rurl, "only in gs:// buckets"},
	} {
		v, err := volume.Open(ctx, volume.Config{MetaURL: tc.url, Restricted: true})
		if err == nil {
			v.Close(ctx)
			t.Errorf("restricted Open(%s) succeeded", tc.url)
		} else if !strings.Contains(err.Error(), tc.want) {
			t.Errorf("restricted Open(%s): %v, want %q", tc.url, err, tc.want)
		}
	}
	// Unrestricted, the device is still refused (bolt refuses devices).
	if v, err := volume.Open(ctx, volume.Config{MetaURL: "bolt://" + dev.Path}); err == nil {
		v.Close(ctx)
		t.Error("Open(bolt://device) succeeded")
	}
	for _, url := range []string{file, rurl} {
		v, err := volume.Open(ctx, volume.Config{MetaURL: url})
		if err != nil {
			t.Errorf("unrestricted Open(%s): %v", url, err)
			continue
		}
		v.Close(ctx)
	}
	dev.Unchanged(t)
}
