package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/skiff-fs/skiff/fsclient/meta/bolt"
	"github.com/skiff-fs/skiff/fsclient/object/gcs/gcstest"
	"github.com/skiff-fs/skiff/internal/testredis"
)

func TestFormatAndStatusEmbedded(t *testing.T) {
	dir := t.TempDir()
	url := "bolt://" + filepath.Join(dir, "vol.db")
	out := mustRun(t, nil, "format", "--compress", "zstd", "--block-size", "1M", url, "vol1")
	for _, w := range []string{`formatted volume "vol1"`, "1.0 MiB", "zstd", "file://" + filepath.Join(dir, "vol-blocks")} {
		if !strings.Contains(out, w) {
			t.Errorf("format output lacks %q:\n%s", w, out)
		}
	}
	st := mustRun(t, nil, "status", url)
	for _, w := range []string{"vol1", "zstd", "1.0 MiB", "encryption   off", "sessions     0"} {
		if !strings.Contains(st, w) {
			t.Errorf("status output lacks %q:\n%s", w, st)
		}
	}
	// A second format is refused, and --force keeps the volume's identity.
	mustFail(t, nil, []string{"already formatted", "--force"}, "format", url, "vol1")
	uuid := field(t, st, "uuid")
	mustRun(t, nil, "format", "--force", "--compress", "zstd", "--block-size", "1M", url, "vol1")
	if got := field(t, mustRun(t, nil, "status", url), "uuid"); got != uuid {
		t.Errorf("--force changed the uuid from %s to %s", uuid, got)
	}
	out = mustRun(t, nil, "fsck", url)
	if !strings.Contains(out, "volume is consistent") {
		t.Errorf("fsck: %s", out)
	}
}

// field returns the value of a "key   value" line of status output.
func field(t testing.TB, out, key string) string {
	t.Helper()
	for _, l := range strings.Split(out, "\n") {
		if f := strings.Fields(l); len(f) >= 2 && f[0] == key {
			return f[1]
		}
	}
	t.Fatalf("no %q line in:\n%s", key, out)
	return ""
}

func TestBadInput(t *testing.T) {
	dir := t.TempDir()
	url := "bolt://" + filepath.Join(dir, "vol.db")
	cases := []struct {
		name string
		want []string
		args []string
	}{
		{"unknown compression", []string{`unknown compression "brotli"`, "none, lz4, zstd"}, []string{"format", "--compress", "brotli", url, "vv"}},
		{"bad block size", []string{"block size", "power of two"}, []string{"format", "--block-size", "3M", url, "vv"}},
		{"bad size syntax", []string{"--block-size", "not a size"}, []string{"format", "--block-size", "lots", url, "vv"}},
		{"bad name", []string{"volume name", "a-z"}, []string{"format", url, "Bad_Name"}},
		{"bucket needed", []string{"--bucket is required"}, []string{"format", "redis://127.0.0.1:1/0", "vv"}},
		{"bad bucket url", []string{"s3://b"}, []string{"format", "--bucket", "s3://b", url, "vv"}},
		{"unknown meta scheme", []string{`"mysql"`, "bolt://"}, []string{"status", "mysql://x"}},
		{"no volume", []string{"skiff format"}, []string{"status", "bolt://" + filepath.Join(dir, "none.db")}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) { mustFail(t, nil, c.want, c.args...) })
	}
}

func TestEncryptedVolume(t *testing.T) {
	dir := t.TempDir()
	url := "bolt://" + filepath.Join(dir, "enc.db")
	mustFail(t, nil, []string{"passphrase", "SKIFF_PASSPHRASE", "--passphrase-file"}, "format", "--encrypt", url, "enc")
	pass := []string{"SKIFF_PASSPHRASE=correct horse battery staple"}
	out := mustRun(t, pass, "format", "--encrypt", url, "enc")
	if !strings.Contains(out, "encryption xchacha20poly1305") {
		t.Errorf("format output: %s", out)
	}
	// status needs no secret and shows none.
	st := mustRun(t, nil, "status", url)
	if strings.Contains(st, "correct horse") || !strings.Contains(st, "argon2id") {
		t.Errorf("status output: %s", st)
	}
	// Opening the data needs the passphrase.
	mustFail(t, nil, []string{"volume is encrypted", "SKIFF_PASSPHRASE"}, "fsck", url)
	mustFail(t, []string{"SKIFF_PASSPHRASE=wrong"}, []string{"wrong passphrase"}, "fsck", url)
	mustRun(t, pass, "fsck", url)
	// The passphrase may come from a file (a trailing newline is ignored).
	pf := filepath.Join(dir, "pass")
	if err := os.WriteFile(pf, []byte("correct horse battery staple\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	mustRun(t, nil, "fsck", "--passphrase-file", pf, url)
}

func TestEmbeddedVolumeInUse(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "vol.db")
	mustRun(t, nil, "format", "bolt://"+path, "busy")
	// Hold the database as a mount would; the skiff process must say so
	// instead of hanging.
	e, err := bolt.Open(path, bolt.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	mustFail(t, nil, []string{"in use by another skiff process", "mounted"}, "status", "bolt://"+path)
}

func TestRedisErrors(t *testing.T) {
	srv := testredis.Start(t, testredis.WithPassword("s3cret"))
	good := srv.URL() // carries the password
	bucket := t.TempDir()
	mustRun(t, nil, "format", "--bucket", bucket, good, "shared")
	mustRun(t, nil, "status", good)

	wrong := strings.Replace(good, "s3cret", "nope", 1)
	mustFail(t, nil, []string{"password"}, "status", wrong)
	r := run(t, nil, "status", wrong)
	if strings.Contains(r.stderr, "nope") {
		t.Errorf("error message shows the password: %s", r.stderr)
	}
	mustFail(t, nil, []string{"cannot reach redis", "127.0.0.1:1"}, "status", "redis://127.0.0.1:1/0")
}

func TestSharedBucket(t *testing.T) {
	bucket := t.TempDir()
	dir := t.TempDir()
	a := "bolt://" + filepath.Join(dir, "a.db")
	b := "bolt://" + filepath.Join(dir, "b.db")
	c := "bolt://" + filepath.Join(dir, "c.db")
	mustRun(t, nil, "format", "--bucket", bucket, a, "alpha")
	// Another volume under its own name shares the bucket.
	mustRun(t, nil, "format", "--bucket", bucket, b, "beta")
	// A third volume may not take a name another volume holds there.
	mustFail(t, nil, []string{"already holds volume", `"alpha"`, "another volume name"}, "format", "--bucket", bucket, c, "alpha")
	// Nor a prefix with foreign data in it.
	if err := os.MkdirAll(filepath.Join(bucket, "gamma"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(bucket, "gamma", "data.bin"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	mustFail(t, nil, []string{"not empty", "data.bin"}, "format", "--bucket", bucket, c, "gamma")
}

func TestGCSBucket(t *testing.T) {
	host := gcstest.Start(t, "skiff-test")
	env := []string{gcstest.EnvHost + "=" + host}
	dir := t.TempDir()
	url := "bolt://" + filepath.Join(dir, "g.db")
	mustRun(t, env, "format", "--bucket", "gs://skiff-test/team", url, "gvol")
	if st := mustRun(t, env, "status", url); !strings.Contains(st, "gs://skiff-test/team") {
		t.Errorf("status: %s", st)
	}
	mustRun(t, env, "fsck", url)
	mustFail(t, env, []string{`gcs bucket "no-such-bucket" does not exist`}, "format", "--bucket", "gs://no-such-bucket", "bolt://"+filepath.Join(dir, "h.db"), "hvol")
}
