package sock_test

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/skiff-fs/skiff/csi/internal/sock"
)

// A listener whose path was taken over by a successor leaves the
// successor's socket file alone on Close; otherwise it removes its own.
func TestCloseKeepsSuccessorSocket(t *testing.T) {
	p := filepath.Join(t.TempDir(), "s.sock")
	old, err := sock.Listen(p, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	if st, err := os.Stat(p); err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("socket file: %v, %v", st, err)
	}
	succ, err := sock.Listen(p, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := old.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(p); err != nil {
		t.Fatalf("closing the old listener removed the successor's socket: %v", err)
	}
	if err := succ.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(p); !os.IsNotExist(err) {
		t.Fatalf("the last listener left its socket file: %v", err)
	}
}
