package mounter_test

import (
	"context"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/skiff-fs/skiff/csi/mounter"
	"github.com/skiff-fs/skiff/internal/syncbuf"
	"github.com/skiff-fs/skiff/internal/testloop"
	"github.com/skiff-fs/skiff/internal/testsecret"
)

// recordingSkiff is a skiff binary that appends its command line to a
// file before running the real one.
func recordingSkiff(t *testing.T) (bin, argsFile string) {
	dir := t.TempDir()
	argsFile = filepath.Join(dir, "args")
	bin = filepath.Join(dir, "skiff")
	script := "#!/bin/sh\nprintf '%s\\n' \"$*\" >> " + argsFile + "\nexec " + skiffBinary(t) + " \"$@\"\n"
	if err := os.WriteFile(bin, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	return bin, argsFile
}

// stageFailing stages req on a new mounter (plain children) and returns
// the error, the mounter's log, the children's output and their command
// lines.
func stageFailing(t *testing.T, req mounter.StageRequest, trust, supervise bool) (err error, logs, out, args string) {
	t.Helper()
	dir := t.TempDir()
	bin, argsFile := recordingSkiff(t)
	var lb, ob syncbuf.Buffer
	s, nerr := mounter.New(mounter.Config{Skiff: bin, Supervise: supervise, StateDir: filepath.Join(dir, "state"), Output: &ob,
		StartTimeout: 20 * time.Second, StopTimeout: 5 * time.Second, TrustInputs: trust,
		Logger: slog.New(slog.NewTextHandler(&lb, &slog.HandlerOptions{Level: slog.LevelDebug}))})
	if nerr != nil {
		t.Fatal(nerr)
	}
	req.VolumeID, req.Path = "v", filepath.Join(dir, "stage")
	_, err = s.Stage(context.Background(), req)
	if err == nil {
		s.Unstage(context.Background(), mounter.UnstageRequest{Path: req.Path})
		t.Fatalf("Stage of %s succeeded", req.MetaURL)
	}
	if files, _ := filepath.Glob(filepath.Join(dir, "state", "*", "*")); len(files) != 0 {
		t.Errorf("secret files left after a failed stage: %v", files)
	}
	b, _ := os.ReadFile(argsFile)
	return err, lb.String(), ob.String(), string(b)
}

// TestStageRefusesBlockDevice: CSI staging of bolt:///dev/loopN fails,
// restricted (plain or supervised: the worker gets --restricted too) or
// trusted, and the device is not written.
func TestStageRefusesBlockDevice(t *testing.T) {
	dev := testloop.New(t)
	for _, c := range []struct{ trust, supervise bool }{{false, false}, {true, false}, {false, true}} {
		trust := c.trust
		err, _, _, args := stageFailing(t, mounter.StageRequest{MetaURL: "bolt://" + dev.Path}, trust, c.supervise)
		want := "accept only redis://"
		if trust {
			want = "it is a device"
		}
		if !strings.Contains(err.Error(), want) {
			t.Errorf("trust=%v: %v, want %q", trust, err, want)
		}
		if strings.Contains(args, "--restricted") == trust {
			t.Errorf("trust=%v: child command line %q", trust, args)
		}
		dev.Unchanged(t)
	}
}

// TestStageHostilePasswords: no piece of a password with "/ # ? @ % :"
// reaches the child's command line, the Stage error, the mounter's log
// or the children's output.
func TestStageHostilePasswords(t *testing.T) {
	r := testsecret.Rand(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := strconv.Itoa(ln.Addr().(*net.TCPAddr).Port)
	ln.Close()
	for range 3 {
		pw := testsecret.Password(r, 20+r.IntN(12))
		err, logs, out, args := stageFailing(t, mounter.StageRequest{MetaURL: "redis://:" + pw + "@127.0.0.1:" + port + "/0", Passphrase: pw}, false, false)
		if args == "" {
			t.Fatal("no child was started")
		}
		testsecret.Check(t, "child command line", args, pw)
		testsecret.Check(t, "Stage error", err.Error(), pw)
		testsecret.Check(t, "mounter log", logs, pw)
		testsecret.Check(t, "children's output", out, pw)
	}
}
