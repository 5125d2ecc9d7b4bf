package dir_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/skiff-fs/skiff/fsclient/object"
	"github.com/skiff-fs/skiff/fsclient/object/dir"
	"github.com/skiff-fs/skiff/fsclient/object/objecttest"
)

func newStore(t testing.TB) *dir.Store {
	t.Helper()
	s, err := dir.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestConformance(t *testing.T) {
	objecttest.Run(t, func(t testing.TB) object.Store { return newStore(t) })
}

func TestInvalidKeys(t *testing.T) {
	s := newStore(t)
	ctx := context.Background()
	// A file next to the root, which an escaping key would reach.
	outside := filepath.Join(filepath.Dir(s.Root()), "outside")
	for _, key := range []string{
		"", "/abs", "a/", "a//b", "../outside", "a/../../outside", "a/./b", ".", "..",
		"a/.skiff-tmp-123", "nul\x00byte",
	} {
		err := s.Put(ctx, key, []byte("x"))
		if !errors.Is(err, object.ErrInvalidKey) {
			t.Errorf("Put(%q) error = %v, want ErrInvalidKey", key, err)
		}
		if _, err := s.Get(ctx, key, 0, -1); !errors.Is(err, object.ErrInvalidKey) {
			t.Errorf("Get(%q) error = %v, want ErrInvalidKey", key, err)
		}
		if _, err := s.Head(ctx, key); !errors.Is(err, object.ErrInvalidKey) {
			t.Errorf("Head(%q) error = %v, want ErrInvalidKey", key, err)
		}
		if err := s.Delete(ctx, key); !errors.Is(err, object.ErrInvalidKey) {
			t.Errorf("Delete(%q) error = %v, want ErrInvalidKey", key, err)
		}
	}
	if _, err := os.Stat(outside); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a file appeared outside the root: %v", err)
	}
	err := s.Put(ctx, "a/../b", nil)
	if want := `invalid object key "a/../b": it has a ".." segment`; err == nil || err.Error() != want {
		t.Errorf("Put(a/../b) error = %v, want %q", err, want)
	}
}

func TestLayoutAndTempFiles(t *testing.T) {
	s := newStore(t)
	ctx := context.Background()
	if err := s.Put(ctx, "vol/chunks/0/1/1234_0_4096", []byte("block")); err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(filepath.Join(s.Root(), "vol", "chunks", "0", "1", "1234_0_4096"))
	if err != nil || string(got) != "block" {
		t.Fatalf("file for key: %q, %v", got, err)
	}
	// Leftovers of a crashed Put, and things that are not regular files,
	// are not objects.
	if err := os.WriteFile(filepath.Join(s.Root(), "vol", "chunks", "0", "1", ".skiff-tmp-42"), []byte("partial"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(filepath.Join(s.Root(), ".skiff-tmp-dir"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("/etc/passwd", filepath.Join(s.Root(), "vol", "link")); err != nil {
		t.Fatal(err)
	}
	infos, err := s.List(ctx, "", "", 0)
	if err != nil {
		t.Fatal(err)
	}
	var keys []string
	for _, in := range infos {
		keys = append(keys, in.Key)
	}
	if diff := cmp.Diff([]string{"vol/chunks/0/1/1234_0_4096"}, keys); diff != "" {
		t.Errorf("List (-want +got):\n%s", diff)
	}
	if _, err := s.Head(ctx, "vol/chunks"); !errors.Is(err, object.ErrNotFound) {
		t.Errorf("Head of a directory: %v, want ErrNotFound", err)
	}
	if err := s.Delete(ctx, "vol/chunks"); err != nil {
		t.Errorf("Delete of a directory: %v", err)
	}
}

func TestDeletePrunesEmptyDirectories(t *testing.T) {
	s := newStore(t)
	ctx := context.Background()
	for _, k := range []string{"v/chunks/0/1/a", "v/chunks/0/2/b"} {
		if err := s.Put(ctx, k, []byte("x")); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Delete(ctx, "v/chunks/0/1/a"); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(s.Root(), "v/chunks/0/1")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("empty directory left behind: %v", err)
	}
	if err := s.Delete(ctx, "v/chunks/0/2/b"); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(s.Root(), "v")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("empty directory left behind: %v", err)
	}
	if _, err := os.Stat(s.Root()); err != nil {
		t.Errorf("root removed: %v", err)
	}
}

func TestNew(t *testing.T) {
	root := filepath.Join(t.TempDir(), "new", "root")
	s, err := dir.New(root)
	if err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(root); err != nil || !fi.IsDir() {
		t.Fatalf("root not created: %v", err)
	}
	if got, want := s.String(), "file://"+root+"/"; got != want {
		t.Errorf("String() = %q, want %q", got, want)
	}
	file := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := dir.New(file); err == nil {
		t.Errorf("New(%q) of a file succeeded", file)
	}
	if _, err := dir.New(""); err == nil {
		t.Errorf("New(\"\") succeeded")
	}
}
