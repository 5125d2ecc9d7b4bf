package fstest

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// node is what the tests compare of one name: not times, not the size of
// directories (file systems differ there), not inode numbers.
type node struct {
	Type     string // file, dir, symlink, fifo, other
	Perm     uint32 // mode & 07777
	Size     int64  // files and symlinks
	Nlink    uint64
	UID, GID uint32
	Target   string // symlinks
	// key changes whenever the content or the xattrs may have changed;
	// it is not compared.
	key string
}

func (n node) String() string {
	s := fmt.Sprintf("%s %04o nlink=%d uid=%d gid=%d", n.Type, n.Perm, n.Nlink, n.UID, n.GID)
	if n.Type != "dir" {
		s += fmt.Sprintf(" size=%d", n.Size)
	}
	if n.Type == "symlink" {
		s += " -> " + n.Target
	}
	return s
}

// tree maps paths relative to the root ("" is the root) to their nodes.
type tree map[string]node

// paths returns the tree's paths, sorted.
func (tr tree) paths() []string {
	ps := make([]string, 0, len(tr))
	for p := range tr {
		ps = append(ps, p)
	}
	sort.Strings(ps)
	return ps
}

// scan reads the tree under root with lstat and readlink.
func scan(root string) (tree, error) {
	tr := tree{}
	var walk func(rel string) error
	walk = func(rel string) error {
		p := filepath.Join(root, rel)
		var st syscall.Stat_t
		if err := syscall.Lstat(p, &st); err != nil {
			return fmt.Errorf("lstat %s: %w", p, err)
		}
		n := node{Perm: st.Mode & 0o7777, Size: st.Size, Nlink: uint64(st.Nlink), UID: st.Uid, GID: st.Gid,
			key: fmt.Sprintf("%d/%d/%d.%d/%d.%d", st.Ino, st.Size, st.Mtim.Sec, st.Mtim.Nsec, st.Ctim.Sec, st.Ctim.Nsec)}
		switch st.Mode & syscall.S_IFMT {
		case syscall.S_IFREG:
			n.Type = "file"
		case syscall.S_IFDIR:
			n.Type, n.Size = "dir", 0
		case syscall.S_IFLNK:
			n.Type = "symlink"
			t, err := os.Readlink(p)
			if err != nil {
				return err
			}
			n.Target = t
		case syscall.S_IFIFO:
			n.Type = "fifo"
		default:
			n.Type = "other"
		}
		tr[rel] = n
		if n.Type != "dir" {
			return nil
		}
		es, err := os.ReadDir(p)
		if err != nil {
			return err
		}
		for _, e := range es {
			if err := walk(filepath.Join(rel, e.Name())); err != nil {
				return err
			}
		}
		return nil
	}
	if err := walk(""); err != nil {
		return nil, err
	}
	return tr, nil
}

// diffTrees describes how got differs from want ("" when it does not):
// at most a few lines.
func diffTrees(want, got tree) string {
	var out []string
	for _, p := range want.paths() {
		g, ok := got[p]
		switch {
		case !ok:
			out = append(out, fmt.Sprintf("%q missing (want %v)", p, want[p]))
		case g.String() != want[p].String():
			out = append(out, fmt.Sprintf("%q is %v, want %v", p, g, want[p]))
		}
	}
	for _, p := range got.paths() {
		if _, ok := want[p]; !ok {
			out = append(out, fmt.Sprintf("%q should not exist (it is %v)", p, got[p]))
		}
	}
	if len(out) > 10 {
		out = append(out[:10], fmt.Sprintf("... and %d more", len(out)-10))
	}
	return strings.Join(out, "\n")
}

// sameData compares two files' contents in 1 MiB reads and describes the
// first difference.
func sameData(want, got string) (string, error) {
	a, err := os.Open(want)
	if err != nil {
		return "", err
	}
	defer a.Close()
	b, err := os.Open(got)
	if err != nil {
		return "", err
	}
	defer b.Close()
	ba, bb := make([]byte, 1<<20), make([]byte, 1<<20)
	for off := int64(0); ; {
		na, ea := io.ReadFull(a, ba)
		nb, eb := io.ReadFull(b, bb)
		if ea != nil && ea != io.EOF && ea != io.ErrUnexpectedEOF {
			return "", ea
		}
		if eb != nil && eb != io.EOF && eb != io.ErrUnexpectedEOF {
			return fmt.Sprintf("read at %d: %v", off, eb), nil
		}
		if i := firstDiff(ba[:min(na, nb)], bb[:min(na, nb)]); i >= 0 {
			return fmt.Sprintf("contents differ from offset %d: want %s, got %s", off+int64(i), describe(ba[i:na]), describe(bb[i:nb])), nil
		}
		if na != nb {
			return fmt.Sprintf("%d bytes, want %d", off+int64(nb), off+int64(na)), nil
		}
		if na < len(ba) {
			return "", nil
		}
		off += int64(na)
	}
}

// xattrs lists the user.* xattrs of p (following symlinks) with their
// values, sorted.
func xattrs(p string) (string, error) {
	buf := make([]byte, 64<<10)
	n, err := unix.Listxattr(p, buf)
	if err != nil {
		return "", err
	}
	var names []string
	for _, name := range strings.Split(string(buf[:n]), "\x00") {
		if strings.HasPrefix(name, "user.") {
			names = append(names, name)
		}
	}
	sort.Strings(names)
	var out []string
	for _, name := range names {
		v, err := unix.Getxattr(p, name, buf)
		if err != nil {
			return "", fmt.Errorf("getxattr %s %s: %w", p, name, err)
		}
		out = append(out, fmt.Sprintf("%s=%x", name, sha256.Sum256(buf[:v])))
	}
	return strings.Join(out, " "), nil
}

// errName is an error as the tests compare it: "ok", "EOF" or an errno's
// name.
func errName(err error) string {
	var en syscall.Errno
	switch {
	case err == nil:
		return "ok"
	case errors.Is(err, io.EOF):
		return "EOF"
	case errors.As(err, &en):
		return unix.ErrnoName(en)
	}
	return err.Error()
}

// equalBytes is bytes.Equal with a description of the first difference.
func equalBytes(want, got []byte) string {
	if bytes.Equal(want, got) {
		return ""
	}
	if i := firstDiff(want[:min(len(want), len(got))], got[:min(len(want), len(got))]); i >= 0 {
		return fmt.Sprintf("differ from byte %d", i)
	}
	return fmt.Sprintf("%d bytes, want %d", len(got), len(want))
}
