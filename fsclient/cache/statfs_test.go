package cache

import (
	"os/exec"
	"strconv"
	"strings"
	"testing"
)

// TestStatfsLikeDf: the floor sees the disk as df(1) does — blocks
// reserved for root are neither free nor part of the total.
func TestStatfsLikeDf(t *testing.T) {
	dir := t.TempDir()
	free, total, err := statfs(dir)
	if err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("df", "-B1", "--output=used,avail", dir).Output()
	if err != nil {
		t.Fatalf("df: %v", err)
	}
	f := strings.Fields(string(out))
	if len(f) != 4 {
		t.Fatalf("df printed %q", out)
	}
	used, err1 := strconv.ParseUint(f[2], 10, 64)
	avail, err2 := strconv.ParseUint(f[3], 10, 64)
	if err1 != nil || err2 != nil {
		t.Fatalf("df printed %q", out)
	}
	// Other processes write meanwhile: allow 1% of the disk.
	near := func(a, b uint64) bool { d := int64(a - b); return max(d, -d) <= int64(total/100) }
	if !near(free, avail) || !near(total, used+avail) {
		t.Errorf("statfs: free %d, total %d; df: avail %d, used %d, used+avail %d", free, total, avail, used, used+avail)
	}
}
