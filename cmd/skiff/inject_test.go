package main

import (
	"os"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// TestInjectCommand runs `skiff inject` on the offline golden input: the
// command must print exactly what the library (and so the webhook, which
// webhook/offline's tests compare it with) produces.
func TestInjectCommand(t *testing.T) {
	const dir = "../../webhook/offline/testdata/"
	want, err := os.ReadFile(dir + "workloads.out.yaml")
	if err != nil {
		t.Fatal(err)
	}
	got := mustRun(t, nil, "inject", "-f", dir+"workloads.in.yaml", "--pv", dir+"workloads.pv.yaml",
		"--sidecar-image", "ghcr.io/skiff-fs/skiff-sidecar:test")
	if d := cmp.Diff(string(want), got); d != "" {
		t.Errorf("skiff inject output differs from %sworkloads.out.yaml (-want +got):\n%s", dir, d)
	}
	mustFail(t, nil, []string{"no-such-file.yaml"}, "inject", "-f", "no-such-file.yaml")
}
