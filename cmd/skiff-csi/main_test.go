package main

import (
	"path/filepath"
	"strings"
	"testing"
)

func TestFlagErrors(t *testing.T) {
	sock := "unix://" + filepath.Join(t.TempDir(), "csi.sock")
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--endpoint", sock, "--mode", "node"}, "no node id provided"},
		{[]string{"--endpoint", sock, "--mode", "all", "--nodeid", "n", "--mounter-socket", ""}, "no mounter socket"},
		{[]string{"--endpoint", sock, "--mode", "everything"}, "want node, controller or all"},
		{[]string{"--endpoint", "tcp://127.0.0.1:1", "--mode", "controller"}, "only unix://PATH"},
		{[]string{"--endpoint", "unix://", "--mode", "controller"}, "no path"},
		{[]string{"mounter", "--skiff", "/x", "--state-dir", "", "extra"}, "unknown command"},
		{[]string{"mounter", "--skiff", "/x", "--supervise=false", "--state-dir", filepath.Join(t.TempDir(), "state"), "--handoff-dir", t.TempDir()}, "needs Supervise"},
		{[]string{"probe", "--socket", filepath.Join(t.TempDir(), "none.sock")}, "cannot be reached"},
	} {
		cmd := newRoot()
		cmd.SetArgs(tc.args)
		cmd.SetOut(&strings.Builder{})
		cmd.SetErr(&strings.Builder{})
		err := cmd.Execute()
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("skiff-csi %v: %v, want an error containing %q", tc.args, err, tc.want)
		}
	}
}
