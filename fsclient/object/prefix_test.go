package object_test

import (
	"context"
	"errors"
	"io"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/skiff-fs/skiff/fsclient/object"
	"github.com/skiff-fs/skiff/fsclient/object/dir"
	"github.com/skiff-fs/skiff/fsclient/object/objecttest"
)

type closeCounter struct {
	object.Store
	closed int
}

func (c *closeCounter) Close() error { c.closed++; return nil }

func keys(infos []object.Info) []string {
	var ks []string
	for _, in := range infos {
		ks = append(ks, in.Key)
	}
	return ks
}

func TestWithPrefix(t *testing.T) {
	ctx := context.Background()
	d, err := dir.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	inner := &closeCounter{Store: d}
	if object.WithPrefix(inner, "") != object.Store(inner) {
		t.Errorf("WithPrefix with an empty prefix does not return the store itself")
	}
	p := object.WithPrefix(inner, "vol/")
	for _, k := range []string{"vo", "vol0", "vox/a", "other/vol/x"} {
		objecttest.Put(t, inner, k, []byte("outside"))
	}
	for _, k := range []string{"a", "b/c", "b/d"} {
		objecttest.Put(t, p, k, []byte("in-"+k))
	}
	if got := objecttest.Get(t, inner, "vol/b/c", 0, -1); string(got) != "in-b/c" {
		t.Errorf("inner vol/b/c = %q", got)
	}
	if got := objecttest.Get(t, p, "b/c", 3, 2); string(got) != "b/" {
		t.Errorf("Get(b/c, 3, 2) = %q, want %q", got, "b/")
	}
	if diff := cmp.Diff([]string{"a", "b/c", "b/d"}, keys(objecttest.ListAll(t, p, "", "", 1))); diff != "" {
		t.Errorf("List (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{"b/d"}, keys(objecttest.ListAll(t, p, "b/", "b/c", 0))); diff != "" {
		t.Errorf("List(b/, after b/c) (-want +got):\n%s", diff)
	}
	info, err := p.Head(ctx, "b/d")
	if err != nil || info.Key != "b/d" || info.Size != int64(len("in-b/d")) {
		t.Errorf("Head(b/d) = %+v, %v", info, err)
	}
	if err := p.Delete(ctx, "a"); err != nil {
		t.Fatal(err)
	}
	if _, err := inner.Head(ctx, "vol/a"); !errors.Is(err, object.ErrNotFound) {
		t.Errorf("inner vol/a after Delete: %v", err)
	}
	if _, err := p.Get(ctx, "a", 0, -1); !errors.Is(err, object.ErrNotFound) {
		t.Errorf("Get(a) after Delete: %v", err)
	}
	if got, want := p.String(), d.String()+"vol/"; got != want {
		t.Errorf("String() = %q, want %q", got, want)
	}
	if err := p.(io.Closer).Close(); err != nil || inner.closed != 1 {
		t.Errorf("Close: %v, inner closed %d times, want 1", err, inner.closed)
	}
}

func TestWithPrefixConformance(t *testing.T) {
	objecttest.Run(t, func(t testing.TB) object.Store {
		d, err := dir.New(t.TempDir())
		if err != nil {
			t.Fatal(err)
		}
		return object.WithPrefix(d, "p/q-")
	})
}
