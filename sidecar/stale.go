package sidecar

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// fuseSuperMagic is f_type of a FUSE file system in statfs(2).
const fuseSuperMagic = 0x65735546

// mountEntry is one line of /proc/self/mountinfo.
type mountEntry struct {
	Mountpoint string
	FSType     string
	Source     string
	// Shared says the mount is in a peer group (optional field
	// "shared:N"): mounts and unmounts on it propagate.
	Shared bool
}

// parseMountinfo reads the lines of a mountinfo file
// (proc_pid_mountinfo(5)): field 5 is the mount point, and after the "-"
// separator come the file system type and the source.
func parseMountinfo(s string) []mountEntry {
	var out []mountEntry
	for _, line := range strings.Split(s, "\n") {
		f := strings.Fields(line)
		if len(f) < 7 {
			continue
		}
		sep := -1
		for i := 6; i < len(f); i++ {
			if f[i] == "-" {
				sep = i
				break
			}
		}
		if sep < 0 || sep+2 >= len(f) {
			continue
		}
		e := mountEntry{Mountpoint: unescapeOctal(f[4]), FSType: f[sep+1], Source: unescapeOctal(f[sep+2])}
		for _, o := range f[6:sep] {
			e.Shared = e.Shared || strings.HasPrefix(o, "shared:")
		}
		out = append(out, e)
	}
	return out
}

// unescapeOctal undoes mountinfo's octal escapes (\040 for a space).
func unescapeOctal(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+4 <= len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// isSkiff reports whether a mount entry is a skiff FUSE mount (type
// fuse.skiff, as both fuse.Mount and the supervisor mount it).
func (e mountEntry) isSkiff() bool {
	return e.FSType == "fuse.skiff" || strings.HasPrefix(e.Source, "skiff:") && strings.HasPrefix(e.FSType, "fuse")
}

// mountsAt returns the mounts on mp in this mount namespace, the
// topmost last.
func mountsAt(mp string) ([]mountEntry, error) {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return nil, err
	}
	var out []mountEntry
	for _, e := range parseMountinfo(string(b)) {
		if e.Mountpoint == mp {
			out = append(out, e)
		}
	}
	return out, nil
}

func skiffMounted(mp string) (bool, error) {
	es, err := mountsAt(mp)
	for _, e := range es {
		if e.isSkiff() {
			return true, err
		}
	}
	return false, err
}

// isDeadMount reports whether err from stat(2) says the FUSE server
// behind the path is gone.
func isDeadMount(err error) bool {
	return errors.Is(err, unix.ENOTCONN) || errors.Is(err, unix.ECONNABORTED)
}

// recoverStale prepares mp for a new mount and says how to mount there.
//
// A dead FUSE mount on mp (statfs gives ENOTCONN: the server of the
// previous sidecar died) is detached with MNT_DETACH, and so is any other
// skiff mount the mount table lists there, unless the dead mount is
// shared (in a peer group). That is the container-restart case: the
// runtime bound the emptyDir into the new container, and the emptyDir's
// topmost mount was the dead FUSE mount that had propagated to the host,
// so mp is a bind of that dead mount, and it is the only link to the
// apps' copies of it. Detaching it would cut the link (an unmount only
// propagates through the parent, which here is the container's root), so
// the caller must stack the new mount on top of it instead: stack is
// true. Mounts and unmounts on a shared mount propagate to its peers and
// slaves, so the apps see the new mount on top of their dead copy.
//
// It returns how many mounts it detached.
func recoverStale(mp string, log *slog.Logger) (detached int, stack bool, err error) {
	for range 16 { // mounts may be stacked; each round removes the top one
		// statfs, not stat: FUSE caches attributes (for the attribute
		// timeout), and stat of a dead mount's root answers from that
		// cache without asking the server; statfs always asks.
		var sfs unix.Statfs_t
		serr := unix.Statfs(mp, &sfs)
		es, err := mountsAt(mp)
		if err != nil {
			return detached, false, fmt.Errorf("read the mount table: %w", err)
		}
		dead := isDeadMount(serr)
		skiff := false
		for _, e := range es {
			skiff = skiff || e.isSkiff()
		}
		if !dead && !skiff {
			break
		}
		if dead && len(es) > 0 && es[len(es)-1].Shared {
			log.Warn("a dead skiff mount left by a previous sidecar is shared with the apps: mounting on top of it", "mountPath", mp)
			return detached, true, nil
		}
		log.Warn("detaching a stale skiff mount left by a previous sidecar", "mountPath", mp, "dead", dead)
		if err := unix.Unmount(mp, unix.MNT_DETACH); err != nil {
			return detached, false, fmt.Errorf("detach the stale mount on %s: %w", mp, err)
		}
		detached++
	}
	if err := os.MkdirAll(mp, 0o755); err != nil {
		return detached, false, fmt.Errorf("create the mount point: %w", err)
	}
	return detached, false, nil
}

// statfsTimeout runs statfs(2) on mp in a goroutine and waits at most d:
// a hung FUSE server must not hang the caller (the goroutine then stays
// blocked until the kernel answers; callers keep at most one per mount,
// see volState.check). It fails unless mp is a FUSE mount.
func statfsTimeout(mp string, d time.Duration) error {
	ch := make(chan error, 1)
	go func() { ch <- statfsFUSE(mp) }()
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case err := <-ch:
		return err
	case <-t.C:
		return fmt.Errorf("statfs %s did not answer within %s", mp, d)
	}
}

func statfsFUSE(mp string) error {
	var st unix.Statfs_t
	if err := unix.Statfs(mp, &st); err != nil {
		return fmt.Errorf("statfs %s: %w", mp, err)
	}
	if st.Type != fuseSuperMagic {
		return fmt.Errorf("%s is not mounted (file system type %#x)", mp, st.Type)
	}
	return nil
}
