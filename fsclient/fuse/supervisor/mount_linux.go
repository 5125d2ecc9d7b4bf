package supervisor

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/skiff-fs/skiff/fsclient/fuse"
)

// mountFUSE opens /dev/fuse and mounts it on mountpoint with mount(2)
// (the caller needs CAP_SYS_ADMIN).
func mountFUSE(cfg *Config, maxRead int) (*rawFD, error) {
	fd, err := unix.Open("/dev/fuse", unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("open /dev/fuse: %w", err)
	}
	opts := []string{
		"fd=" + strconv.Itoa(fd),
		"rootmode=40000",
		"user_id=" + strconv.Itoa(os.Geteuid()),
		"group_id=" + strconv.Itoa(os.Getegid()),
		"max_read=" + strconv.Itoa(maxRead),
		// The kernel checks permissions, also where it answers from its
		// caches (FIFO opens, path walks through cached entries).
		fuse.DefaultPermissions,
	}
	if cfg.AllowOther {
		opts = append(opts, "allow_other")
	}
	flags := uintptr(unix.MS_NOSUID | unix.MS_NODEV)
	if cfg.ReadOnly {
		flags |= unix.MS_RDONLY
	}
	err = unix.Mount(cfg.FsName, cfg.Mountpoint, "fuse."+cfg.Subtype, flags, strings.Join(opts, ","))
	if err != nil {
		unix.Close(fd)
		if errors.Is(err, unix.EPERM) {
			return nil, fmt.Errorf("mount %s: %w: a supervised mount needs CAP_SYS_ADMIN (run as root or privileged)", cfg.Mountpoint, err)
		}
		return nil, fmt.Errorf("mount %s: %w", cfg.Mountpoint, err)
	}
	r, err := newRawFD(fd)
	if err != nil {
		unix.Unmount(cfg.Mountpoint, unix.MNT_DETACH)
		unix.Close(fd)
		return nil, err
	}
	return r, nil
}

// setOOMScoreAdj sets the OOM score adjustment of pid (0: this process).
func setOOMScoreAdj(pid, adj int) error {
	p := "/proc/self/oom_score_adj"
	if pid != 0 {
		p = "/proc/" + strconv.Itoa(pid) + "/oom_score_adj"
	}
	return os.WriteFile(p, []byte(strconv.Itoa(adj)), 0)
}
