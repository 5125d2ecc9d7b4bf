package kvtest

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/skiff-fs/skiff/fsclient/meta/kv"
)

// Run runs the conformance suite. open must return a fresh, empty engine;
// Run closes it when the sub-test ends.
func Run(t *testing.T, open func(t testing.TB) kv.Engine) {
	tests := []struct {
		name string
		fn   func(t *testing.T, e kv.Engine)
	}{
		{"Strings", testStrings},
		{"MGet", testMGet},
		{"Delete", testDelete},
		{"Append", testAppend},
		{"IncrBy", testIncrBy},
		{"Hash", testHash},
		{"HashReadYourWrites", testHashReadYourWrites},
		{"Atomicity", testAtomicity},
		{"View", testView},
		{"Incr", testIncr},
		{"Scan", testScan},
		{"Copies", testCopies},
		{"ConcurrentCounter", testConcurrentCounter},
		{"ConcurrentHSet", testConcurrentHSet},
		{"NoTornReads", testNoTornReads},
		{"Context", testContext},
		{"Name", testName},
		{"Now", testNow},

		{"HScan", testHScan}, // hscan.go
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := open(t)
			t.Cleanup(func() {
				if err := e.Close(); err != nil {
					t.Errorf("Close: %v", err)
				}
			})
			tc.fn(t, e)
		})
	}
}

var ctx = context.Background()

func update(t testing.TB, e kv.Engine, fn func(tx kv.Tx) error) {
	t.Helper()
	if err := e.Update(ctx, fn); err != nil {
		t.Fatalf("Update: %v", err)
	}
}

func view(t testing.TB, e kv.Engine, fn func(tx kv.Tx) error) {
	t.Helper()
	if err := e.View(ctx, fn); err != nil {
		t.Fatalf("View: %v", err)
	}
}

// get reads key in a fresh View; nil when missing.
func get(t testing.TB, e kv.Engine, key string) []byte {
	t.Helper()
	var v []byte
	view(t, e, func(tx kv.Tx) error {
		var err error
		v, err = tx.Get(key)
		return err
	})
	return v
}

func hgetall(t testing.TB, e kv.Engine, key string) map[string][]byte {
	t.Helper()
	var m map[string][]byte
	view(t, e, func(tx kv.Tx) error {
		var err error
		m, err = tx.HGetAll(key)
		return err
	})
	return m
}

// must fails the test on err; used inside fn where Fatal is not allowed
// from other goroutines, so it returns the error too.
func check(t testing.TB, what string, err error) error {
	t.Helper()
	if err != nil {
		t.Errorf("%s: %v", what, err)
	}
	return err
}

func wantBytes(t testing.TB, what string, got []byte, want []byte) {
	t.Helper()
	if (got == nil) != (want == nil) || string(got) != string(want) {
		t.Errorf("%s = %s, want %s", what, show(got), show(want))
	}
}

func show(b []byte) string {
	if b == nil {
		return "nil"
	}
	return strconv.Quote(string(b))
}

func testStrings(t *testing.T, e kv.Engine) {
	wantBytes(t, "Get(missing)", get(t, e, "k"), nil)
	update(t, e, func(tx kv.Tx) error {
		v, err := tx.Get("k")
		if check(t, "Get", err) != nil {
			return err
		}
		wantBytes(t, "Get(missing) in tx", v, nil)
		tx.Set("k", []byte("v1"))
		v, err = tx.Get("k")
		wantBytes(t, "Get after Set in tx", v, []byte("v1"))
		tx.Set("k", []byte("v2"))
		v, _ = tx.Get("k")
		wantBytes(t, "Get after second Set in tx", v, []byte("v2"))
		tx.Set("empty", []byte{})
		v, _ = tx.Get("empty")
		wantBytes(t, "Get(empty) in tx", v, []byte{})
		tx.Set("bin", []byte("a\x00b\xff"))
		return err
	})
	wantBytes(t, "Get(k)", get(t, e, "k"), []byte("v2"))
	wantBytes(t, "Get(empty) (an empty value is not a missing one)", get(t, e, "empty"), []byte{})
	wantBytes(t, "Get(bin)", get(t, e, "bin"), []byte("a\x00b\xff"))
	// Overwrite of a value read in the same tx.
	update(t, e, func(tx kv.Tx) error {
		v, err := tx.Get("k")
		wantBytes(t, "Get(k) in second tx", v, []byte("v2"))
		tx.Set("k", append(v, '!'))
		return err
	})
	wantBytes(t, "Get(k) after read-modify-write", get(t, e, "k"), []byte("v2!"))
}

func testMGet(t *testing.T, e kv.Engine) {
	update(t, e, func(tx kv.Tx) error {
		tx.Set("a", []byte("1"))
		tx.Set("b", []byte("2"))
		return nil
	})
	update(t, e, func(tx kv.Tx) error {
		tx.Set("c", []byte("3"))
		tx.Delete("b")
		vs, err := tx.MGet("a", "b", "c", "missing", "a")
		if check(t, "MGet", err) != nil {
			return err
		}
		got := make([]string, len(vs))
		for i, v := range vs {
			got[i] = show(v)
		}
		if d := cmp.Diff([]string{`"1"`, "nil", `"3"`, "nil", `"1"`}, got); d != "" {
			t.Errorf("MGet in tx (-want +got):\n%s", d)
		}
		vs, err = tx.MGet()
		if err != nil || len(vs) != 0 {
			t.Errorf("MGet() = %v, %v; want empty, nil", vs, err)
		}
		return nil
	})
	view(t, e, func(tx kv.Tx) error {
		vs, err := tx.MGet("c", "b", "a")
		if check(t, "MGet in View", err) != nil {
			return err
		}
		if len(vs) != 3 || string(vs[0]) != "3" || vs[1] != nil || string(vs[2]) != "1" {
			t.Errorf("MGet(c,b,a) in View = %q, want [3 nil 1]", vs)
		}
		return nil
	})
}

func testDelete(t *testing.T, e kv.Engine) {
	update(t, e, func(tx kv.Tx) error {
		tx.Set("s", []byte("x"))
		tx.HSet("h", "f", []byte("y"))
		tx.Set("keep", []byte("z"))
		return nil
	})
	update(t, e, func(tx kv.Tx) error {
		tx.Delete("s", "h", "missing")
		v, err := tx.Get("s")
		wantBytes(t, "Get after Delete in tx", v, nil)
		hv, _ := tx.HGet("h", "f")
		wantBytes(t, "HGet after Delete in tx", hv, nil)
		n, _ := tx.HLen("h")
		if n != 0 {
			t.Errorf("HLen after Delete in tx = %d, want 0", n)
		}
		m, _ := tx.HGetAll("h")
		if len(m) != 0 {
			t.Errorf("HGetAll after Delete in tx = %q, want empty", m)
		}
		return err
	})
	wantBytes(t, "Get(s)", get(t, e, "s"), nil)
	wantBytes(t, "Get(keep)", get(t, e, "keep"), []byte("z"))
	if m := hgetall(t, e, "h"); len(m) != 0 {
		t.Errorf("HGetAll(h) after Delete = %q, want empty", m)
	}
	// Delete then recreate in one tx.
	update(t, e, func(tx kv.Tx) error {
		tx.Delete("keep")
		tx.Set("keep", []byte("again"))
		tx.HSet("h2", "a", []byte("1"))
		tx.Delete("h2")
		tx.HSet("h2", "b", []byte("2"))
		return nil
	})
	wantBytes(t, "Get(keep) after delete+set", get(t, e, "keep"), []byte("again"))
	if d := cmp.Diff(map[string][]byte{"b": []byte("2")}, hgetall(t, e, "h2")); d != "" {
		t.Errorf("HGetAll(h2) after hset+delete+hset (-want +got):\n%s", d)
	}
}

func testAppend(t *testing.T, e kv.Engine) {
	update(t, e, func(tx kv.Tx) error {
		tx.Append("log", []byte("a"))
		v, err := tx.Get("log")
		wantBytes(t, "Get after Append to missing", v, []byte("a"))
		tx.Append("log", []byte("b"))
		v, _ = tx.Get("log")
		wantBytes(t, "Get after second Append", v, []byte("ab"))
		tx.Set("s", []byte("x"))
		tx.Append("s", []byte("y"))
		return err
	})
	wantBytes(t, "Get(log)", get(t, e, "log"), []byte("ab"))
	wantBytes(t, "Get(s)", get(t, e, "s"), []byte("xy"))
	// Blind append (no earlier read) to an existing value, then read.
	update(t, e, func(tx kv.Tx) error {
		tx.Append("log", []byte("c"))
		tx.Append("log", []byte("d"))
		v, err := tx.Get("log")
		wantBytes(t, "Get after blind Append", v, []byte("abcd"))
		return err
	})
	// Blind append without any read in the tx.
	update(t, e, func(tx kv.Tx) error {
		tx.Append("log", []byte("e"))
		return nil
	})
	wantBytes(t, "Get(log) at end", get(t, e, "log"), []byte("abcde"))
	update(t, e, func(tx kv.Tx) error {
		tx.Append("log", []byte("f"))
		vs, err := tx.MGet("log", "s")
		if check(t, "MGet after Append", err) == nil {
			wantBytes(t, "MGet(log) after Append", vs[0], []byte("abcdef"))
		}
		tx.Append("e", nil)
		v, _ := tx.Get("e")
		wantBytes(t, "Get after empty Append to missing", v, []byte{})
		return err
	})
	wantBytes(t, "Get(e)", get(t, e, "e"), []byte{})
}

func testIncrBy(t *testing.T, e kv.Engine) {
	update(t, e, func(tx kv.Tx) error {
		n, err := tx.IncrBy("n", 5)
		if check(t, "IncrBy", err) != nil {
			return err
		}
		if n != 5 {
			t.Errorf("IncrBy(missing, 5) = %d, want 5", n)
		}
		n, _ = tx.IncrBy("n", -2)
		if n != 3 {
			t.Errorf("IncrBy(n, -2) = %d, want 3", n)
		}
		v, _ := tx.Get("n")
		wantBytes(t, "Get after IncrBy", v, []byte("3"))
		tx.Set("m", []byte("40"))
		n, _ = tx.IncrBy("m", 2)
		if n != 42 {
			t.Errorf("IncrBy after Set(40) = %d, want 42", n)
		}
		tx.Set("bad", []byte("x"))
		return nil
	})
	wantBytes(t, "Get(n)", get(t, e, "n"), []byte("3"))
	wantBytes(t, "Get(m)", get(t, e, "m"), []byte("42"))
	update(t, e, func(tx kv.Tx) error {
		n, err := tx.IncrBy("n", 0)
		if n != 3 || err != nil {
			t.Errorf("IncrBy(n, 0) = %d, %v; want 3, nil", n, err)
		}
		if _, err := tx.IncrBy("bad", 1); err == nil {
			t.Errorf("IncrBy on a non-integer value: no error")
		}
		return nil
	})
	wantBytes(t, "Get(bad) is unchanged", get(t, e, "bad"), []byte("x"))
}

func testHash(t *testing.T, e kv.Engine) {
	update(t, e, func(tx kv.Tx) error {
		v, err := tx.HGet("h", "f")
		wantBytes(t, "HGet(missing hash)", v, nil)
		if n, err := tx.HLen("h"); n != 0 || err != nil {
			t.Errorf("HLen(missing) = %d, %v", n, err)
		}
		if m, err := tx.HGetAll("h"); m == nil || len(m) != 0 || err != nil {
			t.Errorf("HGetAll(missing) = %#v, %v; want empty non-nil map", m, err)
		}
		tx.HSet("h", "f", []byte("1"))
		tx.HSet("h", "g", []byte("2"))
		tx.HSet("h", "e", []byte{})
		tx.HSet("h", "f", []byte("3"))
		return err
	})
	want := map[string][]byte{"f": []byte("3"), "g": []byte("2"), "e": {}}
	if d := cmp.Diff(want, hgetall(t, e, "h")); d != "" {
		t.Errorf("HGetAll (-want +got):\n%s", d)
	}
	view(t, e, func(tx kv.Tx) error {
		v, err := tx.HGet("h", "e")
		wantBytes(t, "HGet(empty field value)", v, []byte{})
		v, _ = tx.HGet("h", "nope")
		wantBytes(t, "HGet(missing field)", v, nil)
		if n, _ := tx.HLen("h"); n != 3 {
			t.Errorf("HLen = %d, want 3", n)
		}
		return err
	})
	update(t, e, func(tx kv.Tx) error {
		tx.HDel("h", "f", "nope")
		tx.HDel("missing-hash", "x")
		return nil
	})
	if d := cmp.Diff(map[string][]byte{"g": []byte("2"), "e": {}}, hgetall(t, e, "h")); d != "" {
		t.Errorf("HGetAll after HDel (-want +got):\n%s", d)
	}
	// Removing the last fields removes the hash (it no longer scans).
	update(t, e, func(tx kv.Tx) error {
		tx.HDel("h", "g", "e")
		return nil
	})
	var keys []string
	if err := e.Scan(ctx, "h", func(k string) bool { keys = append(keys, k); return true }); err != nil {
		t.Fatalf("Scan: %v", err)
	}
	if len(keys) != 0 {
		t.Errorf("Scan after removing every field = %q, want none", keys)
	}
}

func testHashReadYourWrites(t *testing.T, e kv.Engine) {
	update(t, e, func(tx kv.Tx) error {
		tx.HSet("h", "a", []byte("1"))
		tx.HSet("h", "b", []byte("2"))
		tx.HSet("h", "c", []byte("3"))
		return nil
	})
	update(t, e, func(tx kv.Tx) error {
		tx.HSet("h", "d", []byte("4"))  // new field
		tx.HSet("h", "a", []byte("10")) // overwrite
		tx.HDel("h", "b", "zz")         // delete existing + missing
		v, err := tx.HGet("h", "a")
		wantBytes(t, "HGet(a) after HSet in tx", v, []byte("10"))
		v, _ = tx.HGet("h", "b")
		wantBytes(t, "HGet(b) after HDel in tx", v, nil)
		v, _ = tx.HGet("h", "c")
		wantBytes(t, "HGet(c) untouched in tx", v, []byte("3"))
		n, _ := tx.HLen("h")
		if n != 3 {
			t.Errorf("HLen in tx = %d, want 3 (a c d)", n)
		}
		m, _ := tx.HGetAll("h")
		want := map[string][]byte{"a": []byte("10"), "c": []byte("3"), "d": []byte("4")}
		if d := cmp.Diff(want, m); d != "" {
			t.Errorf("HGetAll in tx (-want +got):\n%s", d)
		}
		// Re-adding a deleted field.
		tx.HSet("h", "b", []byte("back"))
		n, _ = tx.HLen("h")
		if n != 4 {
			t.Errorf("HLen after re-adding b = %d, want 4", n)
		}
		// A brand-new hash in the same tx.
		tx.HSet("new", "x", []byte("y"))
		n, _ = tx.HLen("new")
		if n != 1 {
			t.Errorf("HLen(new) in tx = %d, want 1", n)
		}
		m, _ = tx.HGetAll("new")
		if d := cmp.Diff(map[string][]byte{"x": []byte("y")}, m); d != "" {
			t.Errorf("HGetAll(new) in tx (-want +got):\n%s", d)
		}
		// Delete everything then one field.
		tx.HDel("new", "x")
		n, _ = tx.HLen("new")
		if n != 0 {
			t.Errorf("HLen(new) after HDel = %d, want 0", n)
		}
		return err
	})
	want := map[string][]byte{"a": []byte("10"), "b": []byte("back"), "c": []byte("3"), "d": []byte("4")}
	if d := cmp.Diff(want, hgetall(t, e, "h")); d != "" {
		t.Errorf("HGetAll after commit (-want +got):\n%s", d)
	}
	if m := hgetall(t, e, "new"); len(m) != 0 {
		t.Errorf("HGetAll(new) = %q, want empty", m)
	}
	// HLen and HGetAll before any HGet, after blind writes only.
	update(t, e, func(tx kv.Tx) error {
		tx.HDel("h", "a")
		n, err := tx.HLen("h")
		if n != 3 {
			t.Errorf("HLen after blind HDel = %d, want 3", n)
		}
		return err
	})
}

var errBoom = errors.New("boom")

func testAtomicity(t *testing.T, e kv.Engine) {
	update(t, e, func(tx kv.Tx) error {
		tx.Set("a", []byte("old"))
		tx.HSet("h", "f", []byte("old"))
		return nil
	})
	err := e.Update(ctx, func(tx kv.Tx) error {
		tx.Set("a", []byte("new"))
		tx.Set("b", []byte("new"))
		tx.HSet("h", "f", []byte("new"))
		tx.HSet("h", "g", []byte("new"))
		tx.Append("c", []byte("x"))
		if _, err := tx.IncrBy("n", 1); err != nil {
			return err
		}
		tx.Delete("h")
		return fmt.Errorf("wrapped: %w", errBoom)
	})
	if !errors.Is(err, errBoom) || err.Error() != "wrapped: boom" {
		t.Fatalf("Update returned %v, want fn's own error", err)
	}
	wantBytes(t, "Get(a)", get(t, e, "a"), []byte("old"))
	wantBytes(t, "Get(b)", get(t, e, "b"), nil)
	wantBytes(t, "Get(c)", get(t, e, "c"), nil)
	wantBytes(t, "Get(n)", get(t, e, "n"), nil)
	if d := cmp.Diff(map[string][]byte{"f": []byte("old")}, hgetall(t, e, "h")); d != "" {
		t.Errorf("HGetAll after failed tx (-want +got):\n%s", d)
	}
	// fn runs to completion once more when the same Update succeeds.
	calls := 0
	update(t, e, func(tx kv.Tx) error {
		calls++
		tx.Set("a", []byte("newer"))
		return nil
	})
	if calls != 1 {
		t.Errorf("fn ran %d times without contention, want 1", calls)
	}
	wantBytes(t, "Get(a)", get(t, e, "a"), []byte("newer"))
}

func testView(t *testing.T, e kv.Engine) {
	update(t, e, func(tx kv.Tx) error {
		tx.Set("a", []byte("1"))
		tx.HSet("h", "f", []byte("1"))
		return nil
	})
	writes := map[string]func(tx kv.Tx){
		"Set":    func(tx kv.Tx) { tx.Set("a", []byte("2")) },
		"Delete": func(tx kv.Tx) { tx.Delete("a") },
		"Append": func(tx kv.Tx) { tx.Append("a", []byte("2")) },
		"IncrBy": func(tx kv.Tx) { tx.IncrBy("n", 1) },
		"HSet":   func(tx kv.Tx) { tx.HSet("h", "f", []byte("2")) },
		"HDel":   func(tx kv.Tx) { tx.HDel("h", "f") },
	}
	for name, w := range writes {
		err := e.View(ctx, func(tx kv.Tx) error {
			w(tx)
			return nil
		})
		if err == nil {
			t.Errorf("View with %s returned nil, want an error", name)
		}
	}
	wantBytes(t, "Get(a) after View writes", get(t, e, "a"), []byte("1"))
	wantBytes(t, "Get(n) after View writes", get(t, e, "n"), nil)
	if d := cmp.Diff(map[string][]byte{"f": []byte("1")}, hgetall(t, e, "h")); d != "" {
		t.Errorf("HGetAll after View writes (-want +got):\n%s", d)
	}
	// View returns fn's error as is.
	if err := e.View(ctx, func(kv.Tx) error { return errBoom }); err != errBoom {
		t.Errorf("View returned %v, want fn's error", err)
	}
	view(t, e, func(tx kv.Tx) error {
		v, err := tx.HGet("h", "f")
		wantBytes(t, "HGet in View", v, []byte("1"))
		if n, _ := tx.HLen("h"); n != 1 {
			t.Errorf("HLen in View = %d, want 1", n)
		}
		return err
	})
}

func testIncr(t *testing.T, e kv.Engine) {
	n, err := e.Incr(ctx, "id", 1)
	if err != nil || n != 1 {
		t.Fatalf("Incr(missing, 1) = %d, %v; want 1", n, err)
	}
	n, err = e.Incr(ctx, "id", 100)
	if err != nil || n != 101 {
		t.Fatalf("Incr(id, 100) = %d, %v; want 101", n, err)
	}
	wantBytes(t, "Get(id)", get(t, e, "id"), []byte("101"))
	n, err = e.Incr(ctx, "id", -1)
	if err != nil || n != 100 {
		t.Fatalf("Incr(id, -1) = %d, %v; want 100", n, err)
	}
	update(t, e, func(tx kv.Tx) error { tx.Set("bad", []byte("x")); return nil })
	if _, err := e.Incr(ctx, "bad", 1); err == nil {
		t.Errorf("Incr on a non-integer: no error")
	}

	const workers, each = 8, 50
	var mu sync.Mutex
	seen := map[int64]bool{}
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for range each {
				n, err := e.Incr(ctx, "ctr", 1)
				if err != nil {
					t.Errorf("Incr: %v", err)
					return
				}
				mu.Lock()
				if seen[n] {
					t.Errorf("Incr returned %d twice", n)
				}
				seen[n] = true
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	wantBytes(t, "Get(ctr)", get(t, e, "ctr"), []byte(strconv.Itoa(workers*each)))
}

func scan(t testing.TB, e kv.Engine, prefix string) []string {
	t.Helper()
	set := map[string]bool{} // Redis SCAN may repeat a key
	if err := e.Scan(ctx, prefix, func(k string) bool { set[k] = true; return true }); err != nil {
		t.Fatalf("Scan(%q): %v", prefix, err)
	}
	keys := make([]string, 0, len(set))
	for k := range set {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

func testScan(t *testing.T, e kv.Engine) {
	if got := scan(t, e, ""); len(got) != 0 {
		t.Errorf("Scan of an empty volume = %q", got)
	}
	update(t, e, func(tx kv.Tx) error {
		for _, k := range []string{"a1", "a2", "ab", "b1", "x*1", "x?2", "x[3]", "x\\4", "xy", "d"} {
			tx.Set(k, []byte("v"))
		}
		tx.HSet("a3", "f", []byte("v"))
		tx.HSet("ac", "f", []byte("v"))
		return nil
	})
	for _, tc := range []struct {
		prefix string
		want   []string
	}{
		{"a", []string{"a1", "a2", "a3", "ab", "ac"}},
		{"a1", []string{"a1"}},
		{"b", []string{"b1"}},
		{"x*", []string{"x*1"}},
		{"x?", []string{"x?2"}},
		{"x[", []string{"x[3]"}},
		{"x\\", []string{"x\\4"}},
		{"z", []string{}},
		{"", []string{"a1", "a2", "a3", "ab", "ac", "b1", "d", "x*1", "x?2", "x[3]", "x\\4", "xy"}},
	} {
		if d := cmp.Diff(tc.want, scan(t, e, tc.prefix)); d != "" {
			t.Errorf("Scan(%q) (-want +got):\n%s", tc.prefix, d)
		}
	}
	calls := 0
	if err := e.Scan(ctx, "", func(string) bool { calls++; return false }); err != nil {
		t.Fatalf("Scan: %v", err)
	}
	if calls != 1 {
		t.Errorf("Scan called fn %d times after it returned false, want 1", calls)
	}
}

func testCopies(t *testing.T, e kv.Engine) {
	val := []byte("orig")
	hval := []byte("horig")
	update(t, e, func(tx kv.Tx) error {
		tx.Set("k", val)
		tx.HSet("h", "f", hval)
		val[0] = 'X' // the caller reuses its buffer before commit
		hval[0] = 'X'
		return nil
	})
	wantBytes(t, "Get(k) after caller mutated the Set buffer", get(t, e, "k"), []byte("orig"))
	if d := cmp.Diff(map[string][]byte{"f": []byte("horig")}, hgetall(t, e, "h")); d != "" {
		t.Errorf("HGetAll after caller mutated the HSet buffer (-want +got):\n%s", d)
	}
	var held [][]byte
	view(t, e, func(tx kv.Tx) error {
		v, err := tx.Get("k")
		if err != nil {
			return err
		}
		hv, err := tx.HGet("h", "f")
		if err != nil {
			return err
		}
		vs, err := tx.MGet("k")
		if err != nil {
			return err
		}
		m, err := tx.HGetAll("h")
		if err != nil {
			return err
		}
		held = [][]byte{v, hv, vs[0], m["f"]}
		for _, b := range held {
			b[0] = 'Z' // scribble on what the engine handed out
		}
		return nil
	})
	update(t, e, func(tx kv.Tx) error {
		v, err := tx.Get("k")
		v[0] = 'Q'
		v2, _ := tx.Get("k")
		wantBytes(t, "Get in tx after scribbling on an earlier Get", v2, []byte("orig"))
		return err
	})
	for _, b := range held {
		if b[0] != 'Z' {
			t.Errorf("value handed out changed after the transaction: %q", b)
		}
	}
	wantBytes(t, "Get(k) after scribbling", get(t, e, "k"), []byte("orig"))
	if d := cmp.Diff(map[string][]byte{"f": []byte("horig")}, hgetall(t, e, "h")); d != "" {
		t.Errorf("HGetAll after scribbling (-want +got):\n%s", d)
	}
}

func testConcurrentCounter(t *testing.T, e kv.Engine) {
	const workers, each = 8, 200
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for range each {
				err := e.Update(ctx, func(tx kv.Tx) error {
					v, err := tx.Get("ctr")
					if err != nil {
						return err
					}
					n := 0
					if v != nil {
						if n, err = strconv.Atoi(string(v)); err != nil {
							return err
						}
					}
					tx.Set("ctr", []byte(strconv.Itoa(n+1)))
					return nil
				})
				if err != nil {
					t.Errorf("Update: %v", err)
					return
				}
			}
		})
	}
	wg.Wait()
	wantBytes(t, "Get(ctr)", get(t, e, "ctr"), []byte(strconv.Itoa(workers*each)))
}

func testConcurrentHSet(t *testing.T, e kv.Engine) {
	const workers, each = 8, 50
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for i := range each {
				field := fmt.Sprintf("w%d-%d", w, i)
				err := e.Update(ctx, func(tx kv.Tx) error {
					// Read-modify-write of the hash and of a count kept
					// beside it, so lost updates would show.
					n, err := tx.HLen("h")
					if err != nil {
						return err
					}
					tx.HSet("h", field, []byte(field))
					tx.Set("count", []byte(strconv.FormatInt(n+1, 10)))
					return nil
				})
				if err != nil {
					t.Errorf("Update: %v", err)
					return
				}
			}
		})
	}
	wg.Wait()
	m := hgetall(t, e, "h")
	if len(m) != workers*each {
		t.Errorf("HGetAll has %d fields, want %d", len(m), workers*each)
	}
	for f, v := range m {
		if f != string(v) {
			t.Errorf("field %q = %q", f, v)
		}
	}
	wantBytes(t, "Get(count)", get(t, e, "count"), []byte(strconv.Itoa(workers*each)))
}

// testNoTornReads checks that fn never observes half of another
// transaction: a writer keeps a == b, and a reader that finds a != b
// returns an error that must not escape Update (an optimistic engine must
// notice the read was stale and re-run fn instead).
func testNoTornReads(t *testing.T, e kv.Engine) {
	const rounds = 200
	update(t, e, func(tx kv.Tx) error {
		tx.Set("a", []byte("0"))
		tx.Set("b", []byte("0"))
		return nil
	})
	errTorn := errors.New("torn read")
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		defer close(done)
		for i := 1; i <= rounds; i++ {
			v := []byte(strconv.Itoa(i))
			if err := e.Update(ctx, func(tx kv.Tx) error {
				tx.Set("a", v)
				tx.Set("b", v)
				return nil
			}); err != nil {
				t.Errorf("writer Update: %v", err)
				return
			}
		}
	})
	for range 4 {
		wg.Go(func() {
			for {
				select {
				case <-done:
					return
				default:
				}
				err := e.Update(ctx, func(tx kv.Tx) error {
					a, err := tx.Get("a")
					if err != nil {
						return err
					}
					b, err := tx.Get("b")
					if err != nil {
						return err
					}
					if string(a) != string(b) {
						return fmt.Errorf("%w: a=%s b=%s", errTorn, a, b)
					}
					return nil
				})
				if err != nil {
					t.Errorf("reader Update: %v", err)
					return
				}
				err = e.View(ctx, func(tx kv.Tx) error {
					vs, err := tx.MGet("a", "b")
					if err != nil {
						return err
					}
					if string(vs[0]) != string(vs[1]) {
						return fmt.Errorf("%w in View MGet: a=%s b=%s", errTorn, vs[0], vs[1])
					}
					return nil
				})
				if err != nil {
					t.Errorf("reader View: %v", err)
					return
				}
			}
		})
	}
	wg.Wait()
}

func testContext(t *testing.T, e kv.Engine) {
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	ran := false
	err := e.Update(cctx, func(tx kv.Tx) error {
		ran = true
		tx.Set("a", []byte("x"))
		return nil
	})
	if !errors.Is(err, context.Canceled) {
		t.Errorf("Update with a cancelled context = %v, want context.Canceled", err)
	}
	_ = ran // an engine may or may not call fn; it must not commit
	wantBytes(t, "Get(a) after cancelled Update", get(t, e, "a"), nil)
	if err := e.View(cctx, func(kv.Tx) error { return nil }); !errors.Is(err, context.Canceled) {
		t.Errorf("View with a cancelled context = %v, want context.Canceled", err)
	}
}

func testName(t *testing.T, e kv.Engine) {
	if e.Name() == "" {
		t.Errorf("Name() is empty")
	}
}

// testNow: the engine's clock is close to real time (loopback servers share
// the host's clock), advances, and honours a canceled context.
func testNow(t *testing.T, e kv.Engine) {
	a, err := e.Now(ctx)
	if err != nil {
		t.Fatalf("Now: %v", err)
	}
	if d := time.Since(a); d < -time.Minute || d > time.Minute {
		t.Errorf("Now = %v, %v away from the local clock", a, d)
	}
	time.Sleep(5 * time.Millisecond)
	b, err := e.Now(ctx)
	if err != nil {
		t.Fatalf("Now: %v", err)
	}
	if !b.After(a) {
		t.Errorf("Now did not advance: %v then %v", a, b)
	}
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := e.Now(cctx); !errors.Is(err, context.Canceled) {
		t.Errorf("Now with a canceled context: %v, want context.Canceled", err)
	}
}
