package sidecar

import (
	"bytes"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/skiff-fs/skiff/sidecar/contract"
)

// writeSecret lays out a volume's Secret as the kubelet mounts it.
func writeSecret(t testing.TB, dir string, kv map[string]string) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	for k, v := range kv {
		if err := os.WriteFile(filepath.Join(dir, k), []byte(v), 0o400); err != nil {
			t.Fatal(err)
		}
	}
}

func TestSpecs(t *testing.T) {
	root := t.TempDir()
	writeSecret(t, filepath.Join(root, "a"), map[string]string{
		contract.SecretKeyMetaURL:           "redis://user:s3cret@10.0.0.1:6379/2\n",
		contract.SecretKeyPassphrase:        "pass phrase\n",
		contract.SecretKeyGoogleCredentials: "{}",
	})
	writeSecret(t, filepath.Join(root, "b"), map[string]string{contract.SecretKeyMetaURL: "bolt:///x.db"})
	cfg := Config{
		Volumes: []contract.Volume{
			{Name: "a", MountPath: "/skiff/a", SecretDir: filepath.Join(root, "a"), Options: []string{"attr-timeout=5", "entry-timeout=250ms", "cache-size=1024", "prefetch=2", "buffer-size=1G"}},
			{Name: "b", MountPath: "/skiff/b", SecretDir: filepath.Join(root, "b"), Subdir: "x/y", ReadOnly: true, Options: []string{"cache-size=0", "upload-concurrency=3", "no-passthrough", "flush-after=2s"}},
		},
		MemoryLimit: 1 << 30,
	}
	if err := cfg.validate(); err != nil {
		t.Fatal(err)
	}
	specs, err := cfg.specs()
	if err != nil {
		t.Fatal(err)
	}
	a, b := specs[0], specs[1]
	if a.MetaURL != "redis://user:s3cret@10.0.0.1:6379/2" || string(a.Passphrase) != "pass phrase" ||
		a.PassphraseFile != filepath.Join(root, "a", contract.SecretKeyPassphrase) ||
		a.CredentialsFile != filepath.Join(root, "a", contract.SecretKeyGoogleCredentials) {
		t.Errorf("a's secrets: %+v", a)
	}
	if a.AttrTimeout != 5*time.Second || a.EntryTimeout != 250*time.Millisecond || a.DirEntryTimeout != time.Second {
		t.Errorf("a's timeouts: %v %v %v", a.AttrTimeout, a.EntryTimeout, a.DirEntryTimeout)
	}
	if a.CacheSize != 1024<<20 || a.CacheDir != filepath.Join(contract.CacheDir, "a") {
		t.Errorf("a's cache: %s %d", a.CacheDir, a.CacheSize)
	}
	// 25% of 1 GiB over two volumes; buffer-size=1G cannot exceed it.
	if a.BufferSize != 128<<20 || b.BufferSize != 128<<20 {
		t.Errorf("buffers %d %d, want 128 MiB each", a.BufferSize, b.BufferSize)
	}
	if d := cmp.Diff([]string{"prefetch=2"}, a.Ignored); d != "" {
		t.Errorf("ignored options: %s", d)
	}
	if !a.AllowOther {
		t.Error("allow_other must be the default (apps run as other uids)")
	}
	if !a.Passthrough || b.Passthrough {
		t.Errorf("passthrough: a %v (the default), b %v (no-passthrough)", a.Passthrough, b.Passthrough)
	}
	if a.FlushAfter != 0 || b.FlushAfter != 2*time.Second {
		t.Errorf("flush-after: a %v (the default, 0), b %v", a.FlushAfter, b.FlushAfter)
	}
	if b.Passphrase != nil || b.PassphraseFile != "" || b.CredentialsFile != "" || b.CacheDir != "" || b.UploadConcurrency != 3 || !b.ReadOnly || b.Subdir != "x/y" {
		t.Errorf("b: %+v", b)
	}

	// Secrets never reach the log.
	var buf bytes.Buffer
	slog.New(slog.NewTextHandler(&buf, nil)).Info("mounting", "spec", a)
	if s := buf.String(); strings.Contains(s, "s3cret") || strings.Contains(s, "pass phrase") || !strings.Contains(s, "10.0.0.1") {
		t.Errorf("log line leaks a secret or lacks the host: %s", s)
	}
}

func TestSpecErrors(t *testing.T) {
	root := t.TempDir()
	writeSecret(t, filepath.Join(root, "empty"), map[string]string{contract.SecretKeyMetaURL: "\n"})
	writeSecret(t, filepath.Join(root, "ok"), map[string]string{contract.SecretKeyMetaURL: "bolt:///x.db"})
	for name, c := range map[string]struct {
		v    contract.Volume
		want string
	}{
		"no secret":    {contract.Volume{Name: "a", MountPath: "/m/a", SecretDir: filepath.Join(root, "missing")}, `no key "metaurl"`},
		"empty url":    {contract.Volume{Name: "a", MountPath: "/m/a", SecretDir: filepath.Join(root, "empty")}, "is empty"},
		"bad duration": {contract.Volume{Name: "a", MountPath: "/m/a", SecretDir: filepath.Join(root, "ok"), Options: []string{"attr-timeout=soon"}}, "attr-timeout=soon"},
		"bad size":     {contract.Volume{Name: "a", MountPath: "/m/a", SecretDir: filepath.Join(root, "ok"), Options: []string{"cache-size=lots"}}, "not a size"},
		"zero flush":   {contract.Volume{Name: "a", MountPath: "/m/a", SecretDir: filepath.Join(root, "ok"), Options: []string{"flush-after=0"}}, "positive"},
		"no value":     {contract.Volume{Name: "a", MountPath: "/m/a", SecretDir: filepath.Join(root, "ok"), Options: []string{"upload-concurrency"}}, "upload-concurrency"},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := New(Config{Volumes: []contract.Volume{c.v}})
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("New = %v, want an error containing %q", err, c.want)
			}
		})
	}
	if _, err := New(Config{}); err == nil || !strings.Contains(err.Error(), contract.EnvVolumes) {
		t.Errorf("no volumes: %v", err)
	}
	if _, err := New(Config{Volumes: []contract.Volume{{Name: "a", MountPath: "/m/a", SecretDir: filepath.Join(root, "ok")}}, Mode: "magic"}); err == nil {
		t.Error("unknown mode accepted")
	}
}

func TestBudget(t *testing.T) {
	vols := func(n int) []contract.Volume {
		vs := make([]contract.Volume, n)
		for i := range vs {
			vs[i] = contract.Volume{Name: string(rune('a' + i))}
		}
		return vs
	}
	for name, c := range map[string]struct {
		cfg  Config
		want Budget
	}{
		"no limit": {Config{Volumes: vols(1), BufferSize: 300 << 20, CacheMem: 64 << 20},
			Budget{Buffer: 300 << 20, CacheMem: 64 << 20, PerVolumeBuffer: 300 << 20, PerVolumeCacheMem: 64 << 20}},
		"webhook default 1843MiB": {Config{Volumes: vols(2), BufferSize: 300 << 20, CacheMem: 256 << 20, MemoryLimit: 1843 << 20},
			Budget{MemoryLimit: 1843 << 20, Buffer: 300 << 20, CacheMem: 184<<20 + 314572, PerVolumeBuffer: 150 << 20, PerVolumeCacheMem: 92<<20 + 157286}},
		"small limit": {Config{Volumes: vols(1), BufferSize: 300 << 20, CacheMem: 64 << 20, MemoryLimit: 256 << 20},
			Budget{MemoryLimit: 256 << 20, Buffer: 64 << 20, CacheMem: 25<<20 + 629145, PerVolumeBuffer: 64 << 20, PerVolumeCacheMem: 25<<20 + 629145}},
		"floor per volume": {Config{Volumes: vols(4), BufferSize: 32 << 20, CacheMem: -1},
			Budget{Buffer: 64 << 20, PerVolumeBuffer: 16 << 20}},
	} {
		t.Run(name, func(t *testing.T) {
			if d := cmp.Diff(c.want, c.cfg.budget()); d != "" {
				t.Error(d)
			}
		})
	}
}

func TestParseMountinfo(t *testing.T) {
	info := `22 1 0:21 / / rw,relatime shared:1 - ext4 /dev/vda rw
36 22 0:31 / /tmp/x/skiff/data rw,nosuid,nodev,relatime shared:12 - fuse.skiff skiff:data rw,user_id=0,group_id=0,allow_other
37 22 0:32 / /tmp/with\040space rw master:3 - fuse.skiff skiff:v rw
38 22 0:33 / /mnt/other rw - fuse.sshfs host:/ rw
bad line`
	got := parseMountinfo(info)
	want := []mountEntry{
		{"/", "ext4", "/dev/vda", true},
		{"/tmp/x/skiff/data", "fuse.skiff", "skiff:data", true},
		{"/tmp/with space", "fuse.skiff", "skiff:v", false},
		{"/mnt/other", "fuse.sshfs", "host:/", false},
	}
	if d := cmp.Diff(want, got); d != "" {
		t.Fatal(d)
	}
	var skiff []string
	for _, e := range got {
		if e.isSkiff() {
			skiff = append(skiff, e.Mountpoint)
		}
	}
	if d := cmp.Diff([]string{"/tmp/x/skiff/data", "/tmp/with space"}, skiff); d != "" {
		t.Error(d)
	}
}
