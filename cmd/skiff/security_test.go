package main

import (
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/skiff-fs/skiff/internal/testloop"
	"github.com/skiff-fs/skiff/internal/testredis"
	"github.com/skiff-fs/skiff/internal/testsecret"
)

// TestBoltBlockDevice: skiff format and skiff mount of bolt:///dev/loopN
// (a real block device) are refused in one line and write nothing to it.
func TestBoltBlockDevice(t *testing.T) {
	dev := testloop.New(t)
	meta := "bolt://" + dev.Path
	mp := t.TempDir()
	mustFail(t, nil, []string{"it is a device"}, "format", "--bucket", t.TempDir(), meta, "vol")
	mustFail(t, nil, []string{"it is a device"}, "mount", meta, mp)
	mustFail(t, nil, []string{"it is a device"}, "status", meta)
	mustFail(t, nil, []string{"accept only redis://"}, "mount", "--restricted", meta, mp)
	dev.Unchanged(t)
}

// hasEscape says whether a password holds a '%' followed by two hex
// digits, which a META_URL reads as an escape.
var hasEscape = regexp.MustCompile(`%[0-9A-Fa-f]{2}`)

// TestHostilePasswords: passwords with "/ # ? @ % :" work percent-encoded
// (and unescaped when they hold no %XX), and no failing command prints
// any piece of one.
func TestHostilePasswords(t *testing.T) {
	r := testsecret.Rand(t)
	pw := testsecret.Password(r, 24)
	srv := testredis.Start(t, testredis.WithPassword(pw))
	good := "redis://:" + url.PathEscape(pw) + "@" + srv.Addr() + "/0"
	bucket := t.TempDir()
	out := mustRun(t, nil, "format", "--bucket", bucket, good, "hostile")
	testsecret.Check(t, "format output", out, pw)
	out = mustRun(t, nil, "status", good)
	testsecret.Check(t, "status output", out, pw)
	raw := "redis://:" + pw + "@" + srv.Addr() + "/0"
	if res := run(t, nil, "status", raw); res.err != nil {
		// Refused for a bare '%', or a wrong password when '%XX' was
		// read as an escape; anything else must have worked.
		if !strings.Contains(res.stderr, "percent-encode") && !hasEscape.MatchString(pw) {
			t.Errorf("status with the unescaped password: %v: %s", res.err, res.stderr)
		}
		testsecret.Check(t, "status error", res.stderr, pw)
	}
	mp := t.TempDir()
	n := 2
	if testing.Short() {
		n = 1
	}
	for range n {
		wrong := testsecret.Password(r, 20+r.IntN(12))
		for _, u := range []string{
			"redis://:" + wrong + "@" + srv.Addr() + "/0",
			"redis://:" + url.PathEscape(wrong) + "@" + srv.Addr() + "/0",
			"redis://user:" + wrong + "@" + srv.Addr() + "/0?prefix=x",
			"redis://:" + wrong + "@127.0.0.1:1/0",
		} {
			for _, args := range [][]string{{"status", u}, {"mount", u, mp}, {"mount", "--restricted", u, mp}} {
				res := run(t, nil, args...)
				if res.err == nil {
					t.Fatalf("skiff %s with a wrong password succeeded", args[0])
				}
				testsecret.Check(t, "skiff "+args[0]+" stderr", res.stderr, wrong)
				testsecret.Check(t, "skiff "+args[0]+" stdout", res.stdout, wrong)
			}
			f := filepath.Join(t.TempDir(), "metaurl")
			if err := os.WriteFile(f, []byte(u), 0o600); err != nil {
				t.Fatal(err)
			}
			res := run(t, nil, "mount", "--meta-url-file", f, mp)
			if res.err == nil {
				t.Fatal("skiff mount --meta-url-file with a wrong password succeeded")
			}
			testsecret.Check(t, "skiff mount --meta-url-file stderr", res.stderr, wrong)
		}
	}
}
