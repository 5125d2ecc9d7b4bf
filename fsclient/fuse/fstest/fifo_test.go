package fstest

import (
	"os"
	"syscall"
	"testing"

	"github.com/skiff-fs/skiff/fsclient/fuse/fusetest"
)

// TestUnlinkedOpenFIFO: a FIFO unlinked while open stays usable, and
// fstat of its descriptor works (nlink 0), as for any open file. The
// kernel opens FIFOs without a FUSE open request, so skiff does not know
// the FIFO is open and removes the inode at unlink; found by TestModel.
func TestUnlinkedOpenFIFO(t *testing.T) {
	m := fusetest.NewBolt(t)
	for _, root := range []string{t.TempDir(), m.Dir} {
		p := root + "/fifo"
		if err := syscall.Mkfifo(p, 0o644); err != nil {
			t.Fatal(err)
		}
		fd, err := syscall.Open(p, syscall.O_RDWR|syscall.O_NONBLOCK, 0)
		if err != nil {
			t.Fatal(err)
		}
		defer syscall.Close(fd)
		if err := os.Remove(p); err != nil {
			t.Fatal(err)
		}
		var st syscall.Stat_t
		if err := syscall.Fstat(fd, &st); err != nil {
			t.Errorf("%s: fstat of an unlinked open FIFO: %v", root, err)
		} else if st.Nlink != 0 || st.Mode&syscall.S_IFMT != syscall.S_IFIFO {
			t.Errorf("%s: fstat of an unlinked open FIFO: mode %o nlink %d", root, st.Mode, st.Nlink)
		}
		if _, err := syscall.Write(fd, []byte("x")); err != nil {
			t.Errorf("%s: write to the unlinked FIFO: %v", root, err)
		}
	}
}
