package fstest

import (
	"crypto/sha256"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/skiff-fs/skiff/fsclient/fuse/fusetest"
)

func TestMain(m *testing.M) { fusetest.Main(m) }

// modelUsers are the callers of the model's non-root operations (no
// passwd entries needed); the second and third share a group, the first
// is in the third's primary group as a supplementary one.
var modelUsers = []struct {
	uid  uint32
	gids []uint32
}{
	{1101, []uint32{1101, 1103}},
	{1102, []uint32{1102}},
	{1103, []uint32{1103, 1102}},
}

// modelOwners are the owners chown hands out (root included).
var modelOwners = []uint32{0, 1101, 1102, 1103}

// openToUsers lets the model's users reach root: test directories are
// created 0700.
func openToUsers(t *testing.T, root string) {
	tmp := filepath.Clean(os.TempDir())
	for d := filepath.Dir(root); strings.HasPrefix(d, tmp+"/"); d = filepath.Dir(d) {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
}

// chown gives an entry a random owner and group (as root), so that the
// users' operations meet entries of their own, of their groups and of
// others.
func (s *model) chown() {
	p := s.path()
	uid, gid := modelOwners[s.rng.IntN(len(modelOwners))], modelOwners[s.rng.IntN(len(modelOwners))]
	s.both(fmt.Sprintf("lchown %q %d %d", p, uid, gid), func(_ int, root string) string {
		return errName(os.Lchown(filepath.Join(root, p), int(uid), int(gid)))
	})
}

// asUser performs one random operation as a random non-root user (in a
// child process, fusetest.As) on both sides; the local disk is the
// oracle for every errno the kernel and skiff return together. Two
// process starts make it the costliest operation (about a third of
// TestModel's time under -race on a loaded machine), hence its weight.
func (s *model) asUser() {
	u := modelUsers[s.rng.IntN(len(modelUsers))]
	file := func() string { // a file or nothing: opening a FIFO would wait
		if p := s.pick("file"); p != "" && s.rng.IntN(5) > 0 {
			return p
		}
		for range 10 {
			if p := s.newPath(fileNames); s.tree[p].Type == "" {
				return p
			}
		}
		return "nofile"
	}
	any := s.path
	mode := func(modes []uint32) string { return fmt.Sprintf("0%o", s.mode(modes)) }
	var op string
	var args []string // paths are marked with a leading "@"
	switch r := s.rng.IntN(19); r {
	case 0:
		op, args = "stat", []string{"@" + any()}
	case 1:
		op, args = "read", []string{"@" + file()}
	case 2:
		op, args = "write", []string{"@" + file(), fmt.Sprintf("w%d", s.rng.IntN(1000))}
	case 3:
		op, args = "append", []string{"@" + file(), "a"}
	case 4:
		op, args = "create", []string{"@" + s.newPath(fileNames), mode(fileModes)}
	case 5:
		op, args = "mkdir", []string{"@" + s.newPath(dirNames), mode(dirModes)}
	case 6:
		op, args = "rmdir", []string{"@" + s.path("dir")}
	case 7:
		op, args = "unlink", []string{"@" + any()}
	case 8:
		op, args = "rename", []string{"@" + any(), "@" + s.newPath(append(fileNames, dirNames...))}
	case 9:
		op, args = "link", []string{"@" + s.path("file", "symlink"), "@" + s.newPath(fileNames)}
	case 10:
		modes := fileModes
		p := any()
		if s.tree[p].Type == "dir" {
			modes = dirModes
		}
		op, args = "chmod", []string{"@" + p, mode(modes)}
	case 11:
		gid := u.gids[s.rng.IntN(len(u.gids))]
		if s.rng.IntN(4) == 0 {
			gid = modelOwners[s.rng.IntN(len(modelOwners))]
		}
		op, args = "lchown", []string{"@" + any(), "-1", fmt.Sprint(gid)}
	case 12:
		op, args = "truncate", []string{"@" + file(), fmt.Sprint(s.rng.IntN(3 * modelBlock))}
	case 13:
		op, args = "ftruncate", []string{"@" + file(), fmt.Sprint(s.rng.IntN(100))}
	case 14:
		op, args = "access", []string{"@" + any(), []string{"r", "w", "x", "rw", "rx", "f"}[s.rng.IntN(6)]}
	case 15:
		op, args = "readdir", []string{"@" + s.path("dir")}
	case 16:
		op, args = "utimens", []string{"@" + any(), "now", "now"}
	case 17:
		op, args = "mkfifo", []string{"@" + s.newPath(fileNames), mode(fileModes)}
	default:
		op, args = "open", []string{"@" + any(), []string{"O_RDONLY,O_NONBLOCK", "O_WRONLY,O_NONBLOCK", "O_RDWR,O_NONBLOCK,O_TRUNC", "O_RDONLY,O_DIRECTORY"}[s.rng.IntN(4)]}
	}
	desc := fmt.Sprintf("as %d %v: %s %v", u.uid, u.gids, op, args)
	s.both(desc, func(_ int, root string) string {
		a := make([]string, len(args))
		for i, x := range args {
			if p, ok := strings.CutPrefix(x, "@"); ok {
				x = filepath.Join(root, p)
			}
			a[i] = x
		}
		out := fusetest.As(s.t, u.uid, u.gids, op, a...)
		switch {
		case op == "stat" && strings.HasPrefix(out, "0 "):
			// Sizes are compared with the trees; a directory's
			// differs between file systems.
			f := strings.Fields(out)
			out = strings.Join(f[:len(f)-1], " ")
		case op == "read" && strings.HasPrefix(out, "0 "):
			out = fmt.Sprintf("0 %x", sha256.Sum256([]byte(out[2:])))
		}
		return out
	})
}
