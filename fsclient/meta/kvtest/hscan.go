package kvtest

import (
	"fmt"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/skiff-fs/skiff/fsclient/meta/kv"
)

// hscanAll reads the whole hash at key in pages of count, checking that
// repeats carry the same value, and returns the fields and the pages read.
func hscanAll(t testing.TB, e kv.Engine, key string, count int) (map[string]string, int) {
	t.Helper()
	got := map[string]string{}
	cursor, pages := "", 0
	for {
		fields, next, err := e.HScan(ctx, key, cursor, count)
		if err != nil {
			t.Fatalf("HScan(%q, %q, %d): %v", key, cursor, count, err)
		}
		pages++
		for _, f := range fields {
			if old, ok := got[f.Name]; ok && old != string(f.Value) {
				t.Fatalf("field %q reported twice with values %q and %q", f.Name, old, f.Value)
			}
			got[f.Name] = string(f.Value)
		}
		if next == "" {
			return got, pages
		}
		if pages > 100000 {
			t.Fatal("HScan does not end")
		}
		cursor = next
	}
}

func testHScan(t *testing.T, e kv.Engine) {
	if got, pages := hscanAll(t, e, "missing", 10); len(got) != 0 || pages != 1 {
		t.Errorf("missing hash: %d fields in %d pages, want one empty page", len(got), pages)
	}
	want := map[string]string{}
	update(t, e, func(tx kv.Tx) error {
		for i := range 1000 {
			name := fmt.Sprintf("name-%04d", i)
			want[name] = fmt.Sprintf("value %d", i)
			tx.HSet("big", name, []byte(want[name]))
		}
		tx.HSet("big2", "other", []byte("not in big"))
		tx.Set("bigstring", []byte("x"))
		return nil
	})
	got, pages := hscanAll(t, e, "big", 10)
	if d := cmp.Diff(want, got); d != "" {
		t.Fatalf("HScan of 1000 fields (-want +got):\n%s", d)
	}
	if pages < 10 {
		t.Errorf("1000 fields came in %d pages of about 10", pages)
	}
	// Fields removed during the scan are not required; fields present
	// throughout must all come.
	cursor := ""
	seen := map[string]bool{}
	for first := true; first || cursor != ""; first = false {
		fields, next, err := e.HScan(ctx, "big", cursor, 50)
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range fields {
			seen[f.Name] = true
		}
		update(t, e, func(tx kv.Tx) error {
			tx.HSet("big", fmt.Sprintf("added-%s", next), []byte("new"))
			return nil
		})
		cursor = next
	}
	for name := range want {
		if !seen[name] {
			t.Fatalf("field %q, present throughout, was not reported by a scan with concurrent additions", name)
		}
	}
}
