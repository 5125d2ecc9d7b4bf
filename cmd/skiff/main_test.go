package main

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// skiffBin is the skiff binary built once for the tests, so bad-input
// behaviour is checked end to end: exit status and the one line on stderr.
var skiffBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "skiff-cli-test")
	if err != nil {
		panic(err)
	}
	skiffBin = filepath.Join(dir, "skiff")
	out, err := exec.Command("go", "build", "-race", "-o", skiffBin, ".").CombinedOutput()
	if err != nil {
		os.Stderr.Write(out)
		panic("build skiff: " + err.Error())
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

type result struct {
	stdout, stderr string
	err            error
}

// run runs the skiff binary with env added to the environment.
func run(t testing.TB, env []string, args ...string) result {
	t.Helper()
	cmd := exec.Command(skiffBin, args...)
	cmd.Env = append(os.Environ(), env...)
	var so, se bytes.Buffer
	cmd.Stdout, cmd.Stderr = &so, &se
	err := cmd.Run()
	return result{so.String(), se.String(), err}
}

// mustRun fails the test unless skiff succeeds.
func mustRun(t testing.TB, env []string, args ...string) string {
	t.Helper()
	r := run(t, env, args...)
	if r.err != nil {
		t.Fatalf("skiff %s: %v\nstdout: %s\nstderr: %s", strings.Join(args, " "), r.err, r.stdout, r.stderr)
	}
	return r.stdout
}

// mustFail fails the test unless skiff exits non-zero with exactly one line
// on stderr that contains every one of want.
func mustFail(t testing.TB, env []string, want []string, args ...string) {
	t.Helper()
	r := run(t, env, args...)
	if r.err == nil {
		t.Fatalf("skiff %s succeeded, want failure; stdout: %s", strings.Join(args, " "), r.stdout)
	}
	lines := strings.Split(strings.TrimRight(r.stderr, "\n"), "\n")
	if len(lines) != 1 {
		t.Errorf("skiff %s: want one line on stderr, got %d:\n%s", strings.Join(args, " "), len(lines), r.stderr)
	}
	for _, w := range want {
		if !strings.Contains(r.stderr, w) {
			t.Errorf("skiff %s: stderr %q does not mention %q", strings.Join(args, " "), r.stderr, w)
		}
	}
}
