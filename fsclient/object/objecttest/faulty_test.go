package objecttest_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"

	"github.com/skiff-fs/skiff/fsclient/object"
	"github.com/skiff-fs/skiff/fsclient/object/dir"
	"github.com/skiff-fs/skiff/fsclient/object/objecttest"
)

func newFaulty(t *testing.T) (*objecttest.Faulty, object.Store) {
	t.Helper()
	d, err := dir.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return objecttest.NewFaulty(d), d
}

func TestFailNext(t *testing.T) {
	f, _ := newFaulty(t)
	ctx := context.Background()
	f.FailNext(objecttest.OpPut, 2)
	for i := range 2 {
		if err := f.Put(ctx, "k", []byte("v")); !errors.Is(err, objecttest.ErrInjected) {
			t.Errorf("Put %d = %v, want ErrInjected", i, err)
		}
	}
	if _, err := f.Head(ctx, "k"); !errors.Is(err, object.ErrNotFound) {
		t.Errorf("failed Puts stored the object: Head = %v", err)
	}
	if err := f.Put(ctx, "k", []byte("v")); err != nil {
		t.Errorf("third Put: %v", err)
	}
	if got := f.Calls(objecttest.OpPut); got != 3 {
		t.Errorf("Calls(OpPut) = %d, want 3", got)
	}
	if got := f.Calls(objecttest.OpAll); got != 4 {
		t.Errorf("Calls(OpAll) = %d, want 4", got)
	}
}

func TestFailKey(t *testing.T) {
	f, _ := newFaulty(t)
	ctx := context.Background()
	objecttest.Put(t, f, "bad", []byte("x"))
	objecttest.Put(t, f, "good", []byte("y"))
	remove := f.FailKey(objecttest.OpGet|objecttest.OpHead, "bad")
	for range 3 {
		if _, err := f.Get(ctx, "bad", 0, -1); !errors.Is(err, objecttest.ErrInjected) {
			t.Errorf("Get(bad) = %v, want ErrInjected", err)
		}
		if _, err := f.Head(ctx, "bad"); !errors.Is(err, objecttest.ErrInjected) {
			t.Errorf("Head(bad) = %v, want ErrInjected", err)
		}
	}
	if err := f.Delete(ctx, "nothing"); err != nil {
		t.Errorf("Delete is not a faulty op here: %v", err)
	}
	if got := objecttest.Get(t, f, "good", 0, -1); string(got) != "y" {
		t.Errorf("Get(good) = %q", got)
	}
	remove()
	if got := objecttest.Get(t, f, "bad", 0, -1); string(got) != "x" {
		t.Errorf("Get(bad) after remove = %q", got)
	}
}

func TestInjectErrAndAfter(t *testing.T) {
	f, inner := newFaulty(t)
	ctx := context.Background()
	objecttest.Put(t, f, "lost", []byte("x"))
	f.Inject(objecttest.Fault{Ops: objecttest.OpGet, Key: "lost", Times: 1, Err: object.ErrNotFound})
	if _, err := f.Get(ctx, "lost", 0, -1); !errors.Is(err, object.ErrNotFound) {
		t.Errorf("Get = %v, want ErrNotFound", err)
	}
	objecttest.Get(t, f, "lost", 0, -1) // Times: 1 is used up

	f.Inject(objecttest.Fault{Ops: objecttest.OpPut | objecttest.OpDelete, After: true, Times: 2})
	if err := f.Put(ctx, "k", []byte("stored")); !errors.Is(err, objecttest.ErrInjected) {
		t.Errorf("Put with After = %v, want ErrInjected", err)
	}
	if got := objecttest.Get(t, inner, "k", 0, -1); string(got) != "stored" {
		t.Errorf("Put with After did not store: %q", got)
	}
	if err := f.Delete(ctx, "k"); !errors.Is(err, objecttest.ErrInjected) {
		t.Errorf("Delete with After = %v, want ErrInjected", err)
	}
	if _, err := inner.Head(ctx, "k"); !errors.Is(err, object.ErrNotFound) {
		t.Errorf("Delete with After did not delete: %v", err)
	}

	remove := f.Inject(objecttest.Fault{Ops: objecttest.OpList, Key: "p/"})
	if _, err := f.List(ctx, "p/", "", 0); !errors.Is(err, objecttest.ErrInjected) {
		t.Errorf("List(p/) = %v, want ErrInjected", err)
	}
	if _, err := f.List(ctx, "q/", "", 0); err != nil {
		t.Errorf("List(q/) = %v", err)
	}
	remove()
	f.Inject(objecttest.Fault{}) // every op
	for name, err := range map[string]error{
		"put":    f.Put(ctx, "z", nil),
		"delete": f.Delete(ctx, "z"),
	} {
		if !errors.Is(err, objecttest.ErrInjected) {
			t.Errorf("%s with a match-all fault = %v", name, err)
		}
	}
	f.Reset()
	objecttest.Put(t, f, "z", nil)
}

func TestCorrupt(t *testing.T) {
	f, _ := newFaulty(t)
	data := bytes.Repeat([]byte{0x55}, 100)
	objecttest.Put(t, f, "blk", data)
	objecttest.Put(t, f, "other", data)
	remove := f.CorruptKey("blk")
	for _, r := range [][2]int64{{0, -1}, {10, 20}} {
		got := objecttest.Get(t, f, "blk", r[0], r[1])
		want := data[r[0]:]
		if r[1] >= 0 {
			want = want[:r[1]]
		}
		if len(got) != len(want) {
			t.Fatalf("corrupted Get(%d, %d) returned %d bytes, want %d", r[0], r[1], len(got), len(want))
		}
		diff := 0
		for i := range got {
			if got[i] != want[i] {
				diff++
			}
		}
		if diff != 1 {
			t.Errorf("corrupted Get(%d, %d) differs in %d bytes, want 1", r[0], r[1], diff)
		}
	}
	if got := objecttest.Get(t, f, "other", 0, -1); !bytes.Equal(got, data) {
		t.Errorf("Get(other) was corrupted")
	}
	if err := f.Put(context.Background(), "blk", data); err != nil {
		t.Errorf("Put is not affected by a corrupt fault: %v", err)
	}
	remove()
	if got := objecttest.Get(t, f, "blk", 0, -1); !bytes.Equal(got, data) {
		t.Errorf("Get(blk) after remove was corrupted")
	}
}

func TestFaultyConcurrent(t *testing.T) {
	f, _ := newFaulty(t)
	ctx := context.Background()
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Go(func() {
			for i := range 50 {
				key := fmt.Sprintf("k%d", i%5)
				switch i % 4 {
				case 0:
					f.FailNext(objecttest.OpGet, 1)
				case 1:
					remove := f.CorruptKey(key)
					defer remove()
				}
				f.Put(ctx, key, []byte(fmt.Sprint(w, i)))
				if rc, err := f.Get(ctx, key, 0, -1); err == nil {
					rc.Close()
				}
			}
		})
	}
	wg.Wait()
	if got := f.Calls(objecttest.OpGet | objecttest.OpPut); got != 8*50*2 {
		t.Errorf("Calls = %d, want %d", got, 8*50*2)
	}
}
