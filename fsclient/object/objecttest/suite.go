package objecttest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/skiff-fs/skiff/fsclient/object"
)

// Run runs the conformance suite against stores made by newStore, which is
// called once per subtest and must return an empty store, registering its
// own clean-up with t. Subtests do not run in parallel, so newStore may
// use t.Setenv.
func Run(t *testing.T, newStore func(t testing.TB) object.Store) {
	tests := []struct {
		name string
		fn   func(t *testing.T, s object.Store)
	}{
		{"RoundTrip", testRoundTrip},
		{"Empty", testEmpty},
		{"Range", testRange},
		{"InvalidRange", testInvalidRange},
		{"Missing", testMissing},
		{"Delete", testDelete},
		{"Overwrite", testOverwrite},
		{"List", testList},
		{"ListPaging", testListPaging},
		{"Large", testLarge},
		{"Concurrent", testConcurrent},
		{"Canceled", testCanceled},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tc.fn(t, newStore(t))
		})
	}
}

// randBytes returns n pseudo-random bytes determined by seed.
func randBytes(seed uint64, n int) []byte {
	r := rand.New(rand.NewPCG(seed, seed^0x5eed))
	b := make([]byte, n)
	for i := 0; i < n; i += 8 {
		v := r.Uint64()
		for j := 0; j < 8 && i+j < n; j++ {
			b[i+j] = byte(v >> (8 * j))
		}
	}
	return b
}

// Put stores data under key and fails t on error.
func Put(t testing.TB, s object.Store, key string, data []byte) {
	t.Helper()
	if err := s.Put(context.Background(), key, data); err != nil {
		t.Fatalf("Put(%q, %d bytes): %v", key, len(data), err)
	}
}

// Get reads a range of key and fails t on error.
func Get(t testing.TB, s object.Store, key string, off, limit int64) []byte {
	t.Helper()
	b, err := get(context.Background(), s, key, off, limit)
	if err != nil {
		t.Fatalf("Get(%q, %d, %d): %v", key, off, limit, err)
	}
	return b
}

func get(ctx context.Context, s object.Store, key string, off, limit int64) ([]byte, error) {
	rc, err := s.Get(ctx, key, off, limit)
	if err != nil {
		return nil, err
	}
	b, err := io.ReadAll(rc)
	if cerr := rc.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return nil, fmt.Errorf("read: %w", err)
	}
	return b, nil
}

// ListAll pages through every key with prefix, pageSize keys at a time,
// and returns the infos in the order received.
func ListAll(t testing.TB, s object.Store, prefix, startAfter string, pageSize int) []object.Info {
	t.Helper()
	var all []object.Info
	for pages := 0; ; pages++ {
		if pages > 100000 {
			t.Fatalf("List(%q) did not end after %d pages", prefix, pages)
		}
		page, err := s.List(context.Background(), prefix, startAfter, pageSize)
		if err != nil {
			t.Fatalf("List(%q, %q, %d): %v", prefix, startAfter, pageSize, err)
		}
		if pageSize > 0 && len(page) > pageSize {
			t.Fatalf("List(%q, %q, %d) returned %d keys", prefix, startAfter, pageSize, len(page))
		}
		if len(page) == 0 {
			return all
		}
		all = append(all, page...)
		startAfter = page[len(page)-1].Key
	}
}

func keysOf(infos []object.Info) []string {
	var keys []string
	for _, in := range infos {
		keys = append(keys, in.Key)
	}
	return keys
}

func testRoundTrip(t *testing.T, s object.Store) {
	start := time.Now().Add(-time.Hour) // tolerate clock skew with a server
	for i, size := range []int{1, 100, 64<<10 + 3} {
		key := fmt.Sprintf("rt/%d/obj_%d", i, size)
		data := randBytes(uint64(i), size)
		Put(t, s, key, data)
		if got := Get(t, s, key, 0, -1); !bytes.Equal(got, data) {
			t.Errorf("Get(%q) returned %d bytes that differ from the %d put", key, len(got), len(data))
		}
		info, err := s.Head(context.Background(), key)
		if err != nil {
			t.Fatalf("Head(%q): %v", key, err)
		}
		if info.Key != key || info.Size != int64(size) {
			t.Errorf("Head(%q) = {Key: %q, Size: %d}, want {Key: %q, Size: %d}", key, info.Key, info.Size, key, size)
		}
		if info.ModTime.Before(start) || info.ModTime.After(time.Now().Add(time.Hour)) {
			t.Errorf("Head(%q).ModTime = %v, want about now", key, info.ModTime)
		}
	}
	// Put must not keep the caller's buffer.
	data := []byte("original")
	Put(t, s, "rt/buf", data)
	copy(data, "XXXXXXXX")
	if got := Get(t, s, "rt/buf", 0, -1); string(got) != "original" {
		t.Errorf("after changing the buffer passed to Put, Get = %q, want %q", got, "original")
	}
}

func testEmpty(t *testing.T, s object.Store) {
	Put(t, s, "e/empty", nil)
	for _, r := range [][2]int64{{0, -1}, {0, 10}, {0, 0}, {5, -1}} {
		if got := Get(t, s, "e/empty", r[0], r[1]); len(got) != 0 {
			t.Errorf("Get(empty, %d, %d) = %q, want nothing", r[0], r[1], got)
		}
	}
	info, err := s.Head(context.Background(), "e/empty")
	if err != nil || info.Size != 0 {
		t.Errorf("Head(empty) = %+v, %v; want size 0", info, err)
	}
	infos := ListAll(t, s, "e/", "", 0)
	if len(infos) != 1 || infos[0].Key != "e/empty" || infos[0].Size != 0 {
		t.Errorf("List(e/) = %+v, want just e/empty with size 0", infos)
	}
}

func testRange(t *testing.T, s object.Store) {
	data := randBytes(7, 1000)
	Put(t, s, "r/obj", data)
	tests := []struct {
		off, limit int64
		want       []byte
	}{
		{0, -1, data},
		{0, 0, nil},
		{0, 1, data[:1]},
		{0, 1000, data},
		{0, 5000, data},
		{1, -1, data[1:]},
		{500, 100, data[500:600]},
		{500, 0, nil},
		{999, -1, data[999:]},
		{990, 100, data[990:]},
		{1000, -1, nil},
		{1000, 10, nil},
		{1000, 0, nil},
		{2000, -1, nil},
		{2000, 10, nil},
	}
	for _, tc := range tests {
		got := Get(t, s, "r/obj", tc.off, tc.limit)
		if !bytes.Equal(got, tc.want) {
			t.Errorf("Get(off=%d, limit=%d) returned %d bytes, want %d (equal: %v)",
				tc.off, tc.limit, len(got), len(tc.want), bytes.Equal(got, tc.want))
		}
	}
}

func testInvalidRange(t *testing.T, s object.Store) {
	Put(t, s, "ir/obj", []byte("data"))
	for _, r := range [][2]int64{{-1, -1}, {-1, 2}, {0, -2}} {
		rc, err := s.Get(context.Background(), "ir/obj", r[0], r[1])
		if err == nil {
			rc.Close()
			t.Errorf("Get(off=%d, limit=%d) succeeded, want an error", r[0], r[1])
		} else if errors.Is(err, object.ErrNotFound) {
			t.Errorf("Get(off=%d, limit=%d) = %v, want an error other than ErrNotFound", r[0], r[1], err)
		}
	}
}

func testMissing(t *testing.T, s object.Store) {
	ctx := context.Background()
	Put(t, s, "m/dir/present", []byte("x"))
	for _, key := range []string{
		"m/absent",
		"no/such/dir/key",
		"m/dir",               // a "directory" of another key
		"m/dir/present/below", // below an existing object
		"m/dir/presen",        // a prefix of an existing key
	} {
		for _, r := range [][2]int64{{0, -1}, {0, 0}, {3, 10}} {
			rc, err := s.Get(ctx, key, r[0], r[1])
			if err == nil {
				rc.Close()
			}
			if !errors.Is(err, object.ErrNotFound) {
				t.Errorf("Get(%q, %d, %d) error = %v, want ErrNotFound", key, r[0], r[1], err)
			}
		}
		if _, err := s.Head(ctx, key); !errors.Is(err, object.ErrNotFound) {
			t.Errorf("Head(%q) error = %v, want ErrNotFound", key, err)
		}
		if err := s.Delete(ctx, key); err != nil {
			t.Errorf("Delete(%q) of a missing key: %v", key, err)
		}
	}
	if got := Get(t, s, "m/dir/present", 0, -1); string(got) != "x" {
		t.Errorf("Get(m/dir/present) = %q, want %q", got, "x")
	}
}

func testDelete(t *testing.T, s object.Store) {
	ctx := context.Background()
	Put(t, s, "d/a/1", []byte("1"))
	Put(t, s, "d/a/2", []byte("2"))
	Put(t, s, "d/b/1", []byte("3"))
	for range 2 {
		if err := s.Delete(ctx, "d/a/1"); err != nil {
			t.Fatalf("Delete(d/a/1): %v", err)
		}
	}
	if _, err := s.Head(ctx, "d/a/1"); !errors.Is(err, object.ErrNotFound) {
		t.Errorf("Head after Delete: %v, want ErrNotFound", err)
	}
	if _, err := s.Get(ctx, "d/a/1", 0, -1); !errors.Is(err, object.ErrNotFound) {
		t.Errorf("Get after Delete: %v, want ErrNotFound", err)
	}
	if diff := cmp.Diff([]string{"d/a/2", "d/b/1"}, keysOf(ListAll(t, s, "d/", "", 0))); diff != "" {
		t.Errorf("List after Delete (-want +got):\n%s", diff)
	}
	// Emptying a "directory" and writing to it again works.
	for _, k := range []string{"d/a/2", "d/b/1"} {
		if err := s.Delete(ctx, k); err != nil {
			t.Fatalf("Delete(%q): %v", k, err)
		}
	}
	if infos := ListAll(t, s, "", "", 0); len(infos) != 0 {
		t.Errorf("List after deleting everything = %v, want nothing", keysOf(infos))
	}
	Put(t, s, "d/a/3", []byte("again"))
	if got := Get(t, s, "d/a/3", 0, -1); string(got) != "again" {
		t.Errorf("Get(d/a/3) = %q", got)
	}
}

func testOverwrite(t *testing.T, s object.Store) {
	ctx := context.Background()
	a := bytes.Repeat([]byte("a"), 256<<10)
	b := bytes.Repeat([]byte("b"), 100<<10)
	Put(t, s, "o/key", a)
	Put(t, s, "o/key", b)
	if got := Get(t, s, "o/key", 0, -1); !bytes.Equal(got, b) {
		t.Fatalf("after overwrite, Get returned %d bytes, want the %d of the second Put", len(got), len(b))
	}
	if info, err := s.Head(ctx, "o/key"); err != nil || info.Size != int64(len(b)) {
		t.Errorf("after overwrite, Head = %+v, %v; want size %d", info, err, len(b))
	}
	// Readers racing with writers see one whole version or the other.
	var wg sync.WaitGroup
	stop := make(chan struct{})
	for range 4 {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				got, err := get(ctx, s, "o/key", 0, -1)
				if err != nil {
					t.Errorf("Get during overwrites: %v", err)
					return
				}
				if !bytes.Equal(got, a) && !bytes.Equal(got, b) {
					t.Errorf("Get during overwrites returned %d bytes that are neither version", len(got))
					return
				}
			}
		})
	}
	for i := range 20 {
		data := a
		if i%2 == 1 {
			data = b
		}
		if err := s.Put(ctx, "o/key", data); err != nil {
			t.Errorf("Put during reads: %v", err)
			break
		}
	}
	close(stop)
	wg.Wait()
}

// listKeys are the keys of the List tests: nested block keys, and keys that
// sort differently from a depth-first walk of sorted directory names.
var listKeys = []string{
	"a-c", "a/b", "a/c/d", "a0", "b",
	"chunks/1/1000/1000_0_4096",
	"chunks/1/1000/1000_1_4096",
	"chunks/1/1000/1000_10_4096",
	"chunks/1/1001/1001_0_4096",
	"chunks/10/10000/10000_0_100",
	"chunks/2/2000/2000_0_4096",
	"sp ace/f+g%h",
	"z/y/x/w",
	"ümlaut/é",
}

func putListKeys(t *testing.T, s object.Store) []string {
	var wg sync.WaitGroup
	for i, k := range listKeys {
		wg.Go(func() {
			if err := s.Put(context.Background(), k, bytes.Repeat([]byte{'x'}, i)); err != nil {
				t.Errorf("Put(%q): %v", k, err)
			}
		})
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	sorted := slices.Clone(listKeys)
	slices.Sort(sorted)
	return sorted
}

func testList(t *testing.T, s object.Store) {
	sorted := putListKeys(t, s)
	infos := ListAll(t, s, "", "", 0)
	if diff := cmp.Diff(sorted, keysOf(infos)); diff != "" {
		t.Fatalf("List of everything (-want +got):\n%s", diff)
	}
	for _, in := range infos {
		want := int64(slices.Index(listKeys, in.Key))
		if in.Size != want {
			t.Errorf("List: %q has Size %d, want %d", in.Key, in.Size, want)
		}
		if in.ModTime.IsZero() {
			t.Errorf("List: %q has no ModTime", in.Key)
		}
	}
	if got := ListAll(t, s, "", "\U0010FFFF", 0); len(got) != 0 {
		t.Errorf("List after U+10FFFF = %v, want nothing", keysOf(got))
	}
}

func testListPaging(t *testing.T, s object.Store) {
	sorted := putListKeys(t, s)
	prefixes := []string{
		"", "a", "a/", "a/c/d", "a/c/d/", "chunks/", "chunks/1", "chunks/1/",
		"chunks/1/1000/1000_1", "chunks/1/1000/", "nope", "nope/", "z/y/",
		"ü", "sp ace/", "/", "../", "a//", "./a",
	}
	startAfters := []string{
		"", "a", "a/", "a/b", "a0", "chunks/1/1000/1000_0_5",
		"chunks/1/1000/1000_10_4096", "chunks/1/1001", "chunks/2", "zzz",
	}
	for _, prefix := range prefixes {
		for _, after := range startAfters {
			var want []string
			for _, k := range sorted {
				if strings.HasPrefix(k, prefix) && k > after {
					want = append(want, k)
				}
			}
			for _, pageSize := range []int{1, 3, 0} {
				got := keysOf(ListAll(t, s, prefix, after, pageSize))
				if diff := cmp.Diff(want, got); diff != "" {
					t.Errorf("List(prefix %q, after %q, pages of %d) (-want +got):\n%s", prefix, after, pageSize, diff)
				}
			}
		}
	}
}

func testLarge(t *testing.T, s object.Store) {
	const size = 20 << 20
	data := randBytes(20, size)
	Put(t, s, "large/obj", data)
	info, err := s.Head(context.Background(), "large/obj")
	if err != nil || info.Size != size {
		t.Fatalf("Head(large) = %+v, %v; want size %d", info, err, size)
	}
	if got := Get(t, s, "large/obj", 0, -1); !bytes.Equal(got, data) {
		t.Fatalf("Get(large) returned %d bytes that differ from the %d put", len(got), size)
	}
	for _, r := range [][2]int64{{4<<20 - 10, 20}, {16<<20 - 1, 2}, {size - 5, -1}, {1 << 20, 8 << 20}} {
		end := int64(size)
		if r[1] >= 0 {
			end = min(end, r[0]+r[1])
		}
		if got := Get(t, s, "large/obj", r[0], r[1]); !bytes.Equal(got, data[r[0]:end]) {
			t.Errorf("Get(large, %d, %d) returned %d bytes, want %d equal ones", r[0], r[1], len(got), end-r[0])
		}
	}
}

func testConcurrent(t *testing.T, s object.Store) {
	ctx := context.Background()
	var wg sync.WaitGroup
	// Distinct keys.
	for w := range 8 {
		wg.Go(func() {
			for i := range 8 {
				key := fmt.Sprintf("c/%d/%d", w, i)
				data := randBytes(uint64(w*100+i), 1000+w*10+i)
				if err := s.Put(ctx, key, data); err != nil {
					t.Errorf("Put(%q): %v", key, err)
					return
				}
				got, err := get(ctx, s, key, 0, -1)
				if err != nil || !bytes.Equal(got, data) {
					t.Errorf("Get(%q) after Put: %d bytes, %v; want the %d put", key, len(got), err, len(data))
					return
				}
			}
		})
	}
	// One key, many writers and readers.
	versions := make([][]byte, 8)
	for i := range versions {
		versions[i] = bytes.Repeat([]byte{byte('A' + i)}, 10000+i*1000)
	}
	for w := range 8 {
		wg.Go(func() {
			for range 4 {
				if err := s.Put(ctx, "c/same", versions[w]); err != nil {
					t.Errorf("Put(c/same): %v", err)
					return
				}
				got, err := get(ctx, s, "c/same", 0, -1)
				if err != nil {
					t.Errorf("Get(c/same): %v", err)
					return
				}
				if !slices.ContainsFunc(versions, func(v []byte) bool { return bytes.Equal(v, got) }) {
					t.Errorf("Get(c/same) returned %d bytes that are no version put", len(got))
					return
				}
			}
		})
	}
	wg.Wait()
	if got := ListAll(t, s, "c/", "", 0); len(got) != 8*8+1 {
		t.Errorf("List(c/) returned %d keys, want %d", len(got), 8*8+1)
	}
}

func testCanceled(t *testing.T, s object.Store) {
	Put(t, s, "x/present", randBytes(1, 1<<20))
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	check := func(op string, err error) {
		t.Helper()
		if !errors.Is(err, context.Canceled) {
			t.Errorf("%s with a canceled context: error = %v, want context.Canceled", op, err)
		}
	}
	check("Put", s.Put(ctx, "x/new", []byte("data")))
	rc, err := s.Get(ctx, "x/present", 0, -1)
	if err == nil {
		_, err = io.ReadAll(rc)
		rc.Close()
	}
	check("Get", err)
	_, err = s.Head(ctx, "x/present")
	check("Head", err)
	check("Delete", s.Delete(ctx, "x/present"))
	_, err = s.List(ctx, "", "", 0)
	check("List", err)

	if _, err := s.Head(context.Background(), "x/new"); !errors.Is(err, object.ErrNotFound) {
		t.Errorf("Head of a key whose Put was canceled: %v, want ErrNotFound", err)
	}
	if _, err := s.Head(context.Background(), "x/present"); err != nil {
		t.Errorf("Head of a key whose Delete was canceled: %v", err)
	}

	// A reader stops once its context is done.
	ctx, cancel = context.WithCancel(context.Background())
	defer cancel()
	rc, err = s.Get(ctx, "x/present", 0, -1)
	if err != nil {
		t.Fatalf("Get: %v", err)
	}
	defer rc.Close()
	if _, err := io.ReadFull(rc, make([]byte, 10)); err != nil {
		t.Fatalf("read: %v", err)
	}
	cancel()
	if _, err := io.ReadAll(rc); err == nil {
		t.Errorf("reading after the context was canceled succeeded, want an error")
	}
}
