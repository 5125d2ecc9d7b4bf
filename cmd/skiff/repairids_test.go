package main

import (
	"context"
	"path/filepath"
	"strings"
	"testing"

	"github.com/skiff-fs/skiff/fsclient/meta"
	"github.com/skiff-fs/skiff/fsclient/meta/kv"
	"github.com/skiff-fs/skiff/fsclient/volume"
	"github.com/skiff-fs/skiff/internal/testredis"
)

// TestFsckRepairIDs: after the Redis slice counter is rolled back below
// the bucket's high-water mark, commands that open the volume refuse with
// the fix, and `fsck --repair-ids` applies it.
func TestFsckRepairIDs(t *testing.T) {
	ctx := context.Background()
	srv := testredis.Start(t)
	url := srv.URL()
	mustRun(t, nil, "format", "--bucket", "file://"+filepath.Join(t.TempDir(), "b"), url, "ids")
	v, err := volume.Open(ctx, volume.Config{MetaURL: url})
	if err != nil {
		t.Fatal(err)
	}
	if err := v.Meta.NewSession(ctx, meta.SessionInfo{Version: "test"}); err != nil {
		t.Fatal(err)
	}
	if _, err := v.Meta.NewSliceID(ctx); err != nil { // advances the mark
		t.Fatal(err)
	}
	if err := v.Meta.Engine().Update(ctx, func(tx kv.Tx) error {
		tx.Set("nextSlice", []byte("0"))
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if err := v.Close(ctx); err != nil {
		t.Fatal(err)
	}
	mustFail(t, nil, []string{"rolled back", "skiff fsck --repair-ids META_URL"}, "fsck", url)
	out := mustRun(t, nil, "fsck", "--repair-ids", url)
	if !strings.Contains(out, "past the bucket's high-water mark") || !strings.Contains(out, "volume is consistent") {
		t.Errorf("fsck --repair-ids: %s", out)
	}
	mustRun(t, nil, "fsck", url)
}
