// Package mnt answers the questions csi-node and the mounter ask about
// the mount table of their own mount namespace: what is mounted on a
// path, whether it is a live FUSE mount, which other mounts share its
// file system (binds), and how to take stale ones away.
package mnt

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
	mount "k8s.io/mount-utils"
)

// FuseSuperMagic is f_type of a FUSE file system in statfs(2).
const FuseSuperMagic = 0x65735546

// mountinfo is read from here; tests of this package never change it.
const mountinfo = "/proc/self/mountinfo"

// List returns the mount table of this mount namespace.
func List() ([]mount.MountInfo, error) {
	ms, err := mount.ParseMountInfo(mountinfo)
	if err != nil {
		return nil, fmt.Errorf("read the mount table: %w", err)
	}
	return ms, nil
}

// At returns the mounts on path (cleaned, absolute), the topmost last.
func At(path string) ([]mount.MountInfo, error) {
	ms, err := List()
	if err != nil {
		return nil, err
	}
	path = filepath.Clean(path)
	var out []mount.MountInfo
	for _, m := range ms {
		if m.MountPoint == path {
			out = append(out, m)
		}
	}
	return out, nil
}

// Under returns the mounts on path or below it.
func Under(path string) ([]mount.MountInfo, error) {
	ms, err := List()
	if err != nil {
		return nil, err
	}
	path = filepath.Clean(path)
	var out []mount.MountInfo
	for _, m := range ms {
		if m.MountPoint == path || strings.HasPrefix(m.MountPoint, path+"/") {
			out = append(out, m)
		}
	}
	return out, nil
}

// IsFUSE reports whether m is a FUSE mount (fuse or fuse.<subtype>).
func IsFUSE(m mount.MountInfo) bool {
	return m.FsType == "fuse" || strings.HasPrefix(m.FsType, "fuse.")
}

// Top returns the topmost mount on path, and false when there is none.
func Top(path string) (mount.MountInfo, bool, error) {
	ms, err := At(path)
	if err != nil || len(ms) == 0 {
		return mount.MountInfo{}, false, err
	}
	return ms[len(ms)-1], true, nil
}

// Binds returns the mount points, other than path itself, that show the
// same file system as the topmost mount on path (same device numbers):
// its bind mounts. None when nothing is mounted on path.
func Binds(path string) ([]string, error) {
	ms, err := List()
	if err != nil {
		return nil, err
	}
	path = filepath.Clean(path)
	var top *mount.MountInfo
	for i := range ms {
		if ms[i].MountPoint == path {
			top = &ms[i]
		}
	}
	if top == nil {
		return nil, nil
	}
	var out []string
	for _, m := range ms {
		if m.MountPoint != path && m.Major == top.Major && m.Minor == top.Minor {
			out = append(out, m.MountPoint)
		}
	}
	return out, nil
}

// StatFUSE fails unless path answers statfs(2) as a FUSE file system.
func StatFUSE(path string) error {
	var st unix.Statfs_t
	if err := unix.Statfs(path, &st); err != nil {
		return fmt.Errorf("statfs %s: %w", path, err)
	}
	if st.Type != FuseSuperMagic {
		return fmt.Errorf("%s is not a FUSE mount (file system type %#x)", path, st.Type)
	}
	return nil
}

// IsDead reports whether err from stat(2) says the FUSE server behind
// the path is gone.
func IsDead(err error) bool {
	return errors.Is(err, unix.ENOTCONN) || errors.Is(err, unix.ECONNABORTED)
}

// DetachFUSE lazily unmounts (MNT_DETACH) every FUSE mount stacked on
// path, and any mount there whose server is dead, and returns how many it
// detached. Files still open on a detached mount keep it until closed.
func DetachFUSE(path string) (int, error) {
	path = filepath.Clean(path)
	n := 0
	for range 16 { // mounts may be stacked; each round removes the top one
		_, serr := os.Stat(path)
		top, ok, err := Top(path)
		if err != nil {
			return n, err
		}
		if !ok || !IsFUSE(top) && !IsDead(serr) {
			return n, nil
		}
		if err := unix.Unmount(path, unix.MNT_DETACH); err != nil {
			return n, fmt.Errorf("detach %s: %w", path, err)
		}
		n++
	}
	return n, fmt.Errorf("detach %s: still mounted after 16 unmounts", path)
}
