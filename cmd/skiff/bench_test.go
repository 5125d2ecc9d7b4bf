package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// hasRows fails the test unless out has a line starting with each item.
func hasRows(t *testing.T, out string, items ...string) {
	t.Helper()
	lines := strings.Split(out, "\n")
	for _, item := range items {
		found := false
		for _, l := range lines {
			if strings.HasPrefix(l, item+" ") {
				found = true
				break
			}
		}
		if !found {
			t.Errorf("no %q row in:\n%s", item, out)
		}
	}
}

func TestBench(t *testing.T) {
	dir := t.TempDir()
	out := mustRun(t, nil, "bench", "--big-size", "1M", "--io-size", "64K", "--small-count", "5",
		"--small-size", "4K", "--threads", "2", "--drop-caches=false", dir)
	hasRows(t, out, "ITEM", "Write big file", "Read big file", "Write small files", "Read small files",
		"Stat small files", "Delete small files")
	if !strings.Contains(out, "MiB/s") || !strings.Contains(out, "files/s") {
		t.Errorf("no throughput in:\n%s", out)
	}
	if left, _ := os.ReadDir(dir); len(left) != 0 {
		t.Errorf("skiff bench left %d entries in %s", len(left), dir)
	}

	mustFail(t, nil, []string{"--threads"}, "bench", "--threads", "0", dir)
	mustFail(t, nil, []string{"nothing to do"}, "bench", "--big-size", "0", "--small-count", "0", dir)
	mustFail(t, nil, []string{"no such file"}, "bench", filepath.Join(dir, "x"))
	file := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(file, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	mustFail(t, nil, []string{"not a directory"}, "bench", file)
}

func TestObjbench(t *testing.T) {
	dir := t.TempDir()
	out := mustRun(t, nil, "objbench", "--size", "64K", "--count", "7", "--threads", "3", "--list-runs", "2", "file://"+dir)
	hasRows(t, out, "ITEM", "Put", "Get", "Head", "List", "Delete")
	if left, _ := os.ReadDir(dir); len(left) != 0 {
		t.Errorf("skiff objbench left %d entries in %s", len(left), dir)
	}
	mustFail(t, nil, []string{"--count"}, "objbench", "--count", "0", "file://"+dir)
	mustFail(t, nil, []string{"--size"}, "objbench", "--size", "lots", "file://"+dir)
}
