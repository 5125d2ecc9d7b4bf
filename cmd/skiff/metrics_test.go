package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/skiff-fs/skiff/fsclient/volume"
	"github.com/skiff-fs/skiff/sidecar/telemetry"
)

// TestMetaURLFileAndMetricsSocket mounts with the META_URL read from a
// file and scrapes --metrics-socket after a write.
func TestMetaURLFileAndMetricsSocket(t *testing.T) {
	dir := t.TempDir()
	metaURL := "bolt://" + filepath.Join(dir, "meta.db")
	if _, err := volume.Create(context.Background(), volume.FormatConfig{MetaURL: metaURL, Name: "metrics"}); err != nil {
		t.Fatal(err)
	}
	urlFile := filepath.Join(dir, "metaurl")
	os.WriteFile(urlFile, []byte(metaURL+"\n"), 0o400)
	empty := filepath.Join(dir, "empty")
	os.WriteFile(empty, nil, 0o400)
	mp := filepath.Join(dir, "mnt")
	os.Mkdir(mp, 0o755)

	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--meta-url-file", urlFile, metaURL, mp}, "not both"},
		{[]string{"--meta-url-file", empty, mp}, "is empty"},
		{[]string{"--meta-url-file", filepath.Join(dir, "nope"), mp}, "--meta-url-file"},
		{[]string{mp}, "META_URL"},
	} {
		cmd := newMount(&globals{})
		cmd.SetArgs(c.args)
		cmd.SetOut(&bytes.Buffer{})
		cmd.SetErr(&bytes.Buffer{})
		if err := cmd.Execute(); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("skiff mount %v: %v, want an error containing %q", c.args, err, c.want)
		}
	}

	sock := filepath.Join(dir, "metrics.sock")
	out, done := startMount(t, "--meta-url-file", urlFile, "--metrics-socket", sock, "--buffer-size", "64M", mp)
	if err := os.WriteFile(filepath.Join(mp, "f"), bytes.Repeat([]byte("x"), 3<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	mfs, err := telemetry.Scrape(ctx, sock)
	if err != nil {
		t.Fatal(err)
	}
	var writes uint64
	for _, m := range mfs["skiff_fuse_op_duration_seconds"].GetMetric() {
		for _, l := range m.GetLabel() {
			if l.GetName() == "op" && l.GetValue() == "write" {
				writes = m.GetHistogram().GetSampleCount()
			}
		}
	}
	if writes == 0 {
		t.Errorf("no FUSE write observed on the metrics socket")
	}
	var puts float64
	for _, m := range mfs["skiff_object_requests_total"].GetMetric() {
		for _, l := range m.GetLabel() {
			if l.GetName() == "op" && l.GetValue() == "put" {
				puts = m.GetCounter().GetValue()
			}
		}
	}
	if puts == 0 {
		t.Errorf("skiff_object_requests_total{op=put} is 0 after a closed 3 MiB write")
	}
	if got := mfs["skiff_write_buffer_limit_bytes"].GetMetric(); len(got) != 1 || got[0].GetGauge().GetValue() != 64<<20 {
		t.Errorf("skiff_write_buffer_limit_bytes: %v", got)
	}
	umountAndWait(t, mp, done, out)
	if _, err := os.Lstat(sock); !os.IsNotExist(err) {
		t.Errorf("the metrics socket outlived the mount: %v", err)
	}
}
