package stores_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/skiff-fs/skiff/fsclient/object"
	"github.com/skiff-fs/skiff/fsclient/object/gcs"
	"github.com/skiff-fs/skiff/fsclient/object/gcs/gcstest"
	"github.com/skiff-fs/skiff/fsclient/object/objecttest"
	"github.com/skiff-fs/skiff/fsclient/object/stores"
)

func TestParse(t *testing.T) {
	tests := []struct {
		in   string
		want stores.Location
	}{
		{"gs://bucket", stores.Location{Scheme: "gs", Bucket: "bucket"}},
		{"gs://bucket/", stores.Location{Scheme: "gs", Bucket: "bucket"}},
		{"gs://bucket/vol1", stores.Location{Scheme: "gs", Bucket: "bucket", Prefix: "vol1/"}},
		{"gs://bucket/a/b/", stores.Location{Scheme: "gs", Bucket: "bucket", Prefix: "a/b/"}},
		{"GS://my.bucket_1/x", stores.Location{Scheme: "gs", Bucket: "my.bucket_1", Prefix: "x/"}},
		{"file:///data/skiff", stores.Location{Scheme: "file", Dir: "/data/skiff"}},
		{"file://localhost/data", stores.Location{Scheme: "file", Dir: "/data"}},
		{"/abs/dir", stores.Location{Scheme: "file", Dir: "/abs/dir"}},
		{"rel/dir", stores.Location{Scheme: "file", Dir: "rel/dir"}},
		{"./dir", stores.Location{Scheme: "file", Dir: "./dir"}},
	}
	for _, tc := range tests {
		got, err := stores.Parse(tc.in)
		if err != nil {
			t.Errorf("Parse(%q): %v", tc.in, err)
			continue
		}
		if diff := cmp.Diff(tc.want, got); diff != "" {
			t.Errorf("Parse(%q) (-want +got):\n%s", tc.in, diff)
		}
	}
}

func TestParseErrors(t *testing.T) {
	tests := []struct {
		in, want string // want: a part of the message
	}{
		{"", "no bucket URL given"},
		{"   ", "no bucket URL given"},
		{"s3://bucket", `unsupported scheme "s3"`},
		{"http://host/x", `unsupported scheme "http"`},
		{"gs://", "no bucket name after gs://"},
		{"gs:///prefix", "no bucket name after gs://"},
		{"gs:bucket", `"gs:" must be followed by //`},
		{"gs://Bucket", `gcs bucket name "Bucket" is invalid`},
		{"gs://b", `gcs bucket name "b" is invalid`},
		{"gs://bucket:443/x", "only a bucket and a prefix"},
		{"gs://bucket/x?y=1", "only a bucket and a prefix"},
		{"gs://bucket/a//b", "empty"},
		{"gs://bucket/a/../b", `".."`},
		{"file://relative/dir", "absolute path"},
		{"file://", "no directory"},
		{"file:/x", `"file:" must be followed by //`},
	}
	for _, tc := range tests {
		_, err := stores.Parse(tc.in)
		if err == nil {
			t.Errorf("Parse(%q) succeeded, want an error containing %q", tc.in, tc.want)
			continue
		}
		msg := err.Error()
		if !strings.Contains(msg, tc.want) || strings.Contains(msg, "\n") {
			t.Errorf("Parse(%q) = %q, want one line containing %q", tc.in, msg, tc.want)
		}
		if !strings.Contains(msg, stores.Forms) {
			t.Errorf("Parse(%q) = %q, does not say which forms work", tc.in, msg)
		}
	}
}

func TestOpenDir(t *testing.T) {
	ctx := context.Background()
	root := t.TempDir()
	t.Chdir(root)
	for _, u := range []string{"file://" + filepath.Join(root, "a"), filepath.Join(root, "b"), "c/d"} {
		s, err := stores.Open(ctx, u)
		if err != nil {
			t.Fatalf("Open(%q): %v", u, err)
		}
		objecttest.Put(t, s, "k/1", []byte("v"))
		if err := stores.Close(s); err != nil {
			t.Errorf("Close: %v", err)
		}
	}
	for _, p := range []string{"a/k/1", "b/k/1", "c/d/k/1"} {
		if _, err := os.Stat(filepath.Join(root, p)); err != nil {
			t.Errorf("object not stored at %s: %v", p, err)
		}
	}
}

func TestOpenGCS(t *testing.T) {
	ctx := context.Background()
	gcstest.Start(t, "bkt")
	s, err := stores.Open(ctx, "gs://bkt/vol1", stores.WithGCSConfig(gcs.Config{MaxAttempts: 2}))
	if err != nil {
		t.Fatal(err)
	}
	defer stores.Close(s)
	if got, want := s.String(), "gs://bkt/vol1/"; got != want {
		t.Errorf("String() = %q, want %q", got, want)
	}
	objecttest.Put(t, s, "chunks/0/0/1_0_3", []byte("abc"))

	whole, err := stores.Open(ctx, "gs://bkt")
	if err != nil {
		t.Fatal(err)
	}
	defer stores.Close(whole)
	if got := objecttest.Get(t, whole, "vol1/chunks/0/0/1_0_3", 0, -1); string(got) != "abc" {
		t.Errorf("object under the prefix = %q, want %q", got, "abc")
	}

	_, err = stores.Open(ctx, "gs://missing-bucket/vol1")
	if want := `gcs bucket "missing-bucket" does not exist (create it, or fix --bucket)`; err == nil || err.Error() != want {
		t.Errorf("Open of a missing bucket: %v, want %q", err, want)
	}
}

// TestConformance runs the suite through Open, with the prefix decorator
// and the fault store (with no faults) on top of the dir store.
func TestConformance(t *testing.T) {
	open := func(t testing.TB) object.Store {
		s, err := stores.Open(context.Background(), t.TempDir())
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	t.Run("Prefix", func(t *testing.T) {
		objecttest.Run(t, func(t testing.TB) object.Store {
			return object.WithPrefix(open(t), "vol/")
		})
	})
	t.Run("Faulty", func(t *testing.T) {
		objecttest.Run(t, func(t testing.TB) object.Store {
			return objecttest.NewFaulty(open(t))
		})
	})
}
