package fuse

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// DefaultReadAhead is the kernel's read-ahead window Mount sets: four
// 1 MiB READ requests per window. See the package documentation for the
// measurements behind it.
const DefaultReadAhead = 4 << 20

// SetReadAhead sets the kernel's read-ahead window for the files of the
// FUSE mount at mountpoint to bytes (rounded down to whole KiB, at least
// 4 KiB), by writing read_ahead_kb of the mount's backing device
// (/sys/class/bdi/MAJOR:MINOR, the mount's st_dev). It needs root and a
// writable /sys. It sends no request to the file system (it finds the
// device in /proc/self/mountinfo), so it cannot block on the server.
//
// Call it after the kernel has received the answer to FUSE INIT: that
// answer lowers the window to at most the read-ahead it names, and FUSE
// can only lower the kernel's 128 KiB default that way. Files opened
// before the call keep the window they were opened with.
func SetReadAhead(mountpoint string, bytes int) error {
	if bytes < 4<<10 {
		return fmt.Errorf("read-ahead of %d bytes: it must be at least 4 KiB", bytes)
	}
	abs, err := filepath.Abs(mountpoint)
	if err != nil {
		return err
	}
	p, err := bdiPath(abs)
	if err != nil {
		return fmt.Errorf("set read-ahead of %s: %w", abs, err)
	}
	err = os.WriteFile(p, []byte(strconv.Itoa(bytes>>10)+"\n"), 0)
	switch {
	case err == nil:
		return nil
	case errors.Is(err, os.ErrPermission) || errors.Is(err, syscall.EROFS):
		return fmt.Errorf("set read-ahead of %s: %w: run as root with /sys writable (a privileged container), or set it yourself: echo %d > %s", abs, err, bytes>>10, p)
	}
	return fmt.Errorf("set read-ahead of %s: %w", abs, err)
}

// ReadAhead returns the kernel's read-ahead window in bytes for the files
// of the FUSE mount at mountpoint (newly opened ones).
func ReadAhead(mountpoint string) (int, error) {
	abs, err := filepath.Abs(mountpoint)
	if err != nil {
		return 0, err
	}
	p, err := bdiPath(abs)
	if err != nil {
		return 0, err
	}
	b, err := os.ReadFile(p)
	if err != nil {
		return 0, err
	}
	kb, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		return 0, fmt.Errorf("%s: %w", p, err)
	}
	return kb << 10, nil
}

// bdiPath is the read_ahead_kb file of the FUSE mount whose root is dir.
// It finds the mount's device in mountinfo rather than with stat(2),
// which would send a request to the file system: SetReadAhead may run
// before the server reads requests. Only FUSE mounts (fstype fuse or
// fuse.*) are accepted, so a disk's read-ahead is never changed by
// mistake.
func bdiPath(dir string) (string, error) {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return "", err
	}
	dev := ""
	for _, line := range strings.Split(string(b), "\n") {
		// id parent maj:min root mountpoint opts [optional...] - fstype ...
		f := strings.Fields(line)
		if len(f) < 7 || unescapeMountinfo(f[4]) != dir {
			continue
		}
		dev = "" // the last mount on dir is the visible one
		for i := 6; i+1 < len(f); i++ {
			if f[i] == "-" && (f[i+1] == "fuse" || strings.HasPrefix(f[i+1], "fuse.")) {
				dev = f[2]
			}
		}
	}
	if dev == "" {
		return "", errors.New("not the root of a FUSE mount")
	}
	return "/sys/class/bdi/" + dev + "/read_ahead_kb", nil
}
