package volume_test

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"testing"

	"github.com/skiff-fs/skiff/fsclient/meta"
	"github.com/skiff-fs/skiff/fsclient/meta/kv"
	"github.com/skiff-fs/skiff/fsclient/volume"
	"github.com/skiff-fs/skiff/internal/testredis"
)

// rolledBack formats a Redis volume, writes through one client (which
// reserves slice ids and advances the bucket's high-water mark), then
// rolls the Redis slice counter back to nothing, as a failover that lost
// writes or the restore of an old snapshot would. It returns the URL and
// the last slice id the client used.
func rolledBack(t *testing.T) (string, uint64) {
	t.Helper()
	ctx := context.Background()
	srv := testredis.Start(t)
	url := srv.URL()
	if _, err := volume.Create(ctx, volume.FormatConfig{MetaURL: url, Name: "rb", Bucket: "file://" + filepath.Join(t.TempDir(), "b"), BlockSize: 64 << 10}); err != nil {
		t.Fatal(err)
	}
	v, err := volume.Open(ctx, volume.Config{MetaURL: url, Meta: meta.Options{IDBatch: 10}})
	if err != nil {
		t.Fatal(err)
	}
	if err := v.Meta.NewSession(ctx, meta.SessionInfo{Version: "test"}); err != nil {
		t.Fatal(err)
	}
	writeFile(t, v, "f", []byte("before the rollback"))
	id, err := v.Meta.NewSliceID(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// Roll the counter back through the engine itself.
	if err := v.Meta.Engine().Update(ctx, func(tx kv.Tx) error {
		tx.Set("nextSlice", []byte("0"))
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if err := v.Close(ctx); err != nil {
		t.Fatal(err)
	}
	return url, id
}

func TestRolledBackSliceCounterIsRefused(t *testing.T) {
	ctx := context.Background()
	url, _ := rolledBack(t)
	_, err := volume.Open(ctx, volume.Config{MetaURL: url})
	if !errors.Is(err, meta.ErrSliceIDsBehind) {
		t.Fatalf("Open of a rolled-back volume: %v, want ErrSliceIDsBehind", err)
	}
	if !strings.Contains(err.Error(), "skiff fsck --repair-ids META_URL") {
		t.Errorf("the refusal does not name the fix: %v", err)
	}
}

func TestFsckRepairIDs(t *testing.T) {
	ctx := context.Background()
	url, used := rolledBack(t)
	v, err := volume.Open(ctx, volume.Config{MetaURL: url, RepairSliceIDs: true})
	if err != nil {
		t.Fatalf("Open with RepairSliceIDs: %v", err)
	}
	v.Close(ctx)
	// Repaired: the volume opens, and new ids are past every id used.
	v, err = volume.Open(ctx, volume.Config{MetaURL: url})
	if err != nil {
		t.Fatalf("Open after the repair: %v", err)
	}
	defer v.Close(ctx)
	if err := v.Meta.NewSession(ctx, meta.SessionInfo{Version: "test"}); err != nil {
		t.Fatal(err)
	}
	id, err := v.Meta.NewSliceID(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if id <= used {
		t.Fatalf("after the repair NewSliceID = %d, not past the used id %d", id, used)
	}
	r, err := v.Fsck(ctx)
	if err != nil || !r.OK() {
		t.Fatalf("fsck after the repair: %+v, %v", r, err)
	}
}
