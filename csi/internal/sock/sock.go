// Package sock listens on unix sockets that a successor may take over:
// during a rolling update with surge, the next pod's process binds the
// same path (a hostPath) before this one stops, so a listener removes its
// socket file on Close only while the file is still the one it bound.
package sock

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"syscall"
)

// Listen removes a stale socket file at path, listens there and, when
// perm is not 0, sets the file's mode. Close removes the file unless
// another listener replaced it meanwhile.
func Listen(path string, perm os.FileMode) (net.Listener, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o750); err != nil {
		return nil, err
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("remove the stale socket %s: %w", path, err)
	}
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		return nil, err
	}
	l.SetUnlinkOnClose(false)
	if perm != 0 {
		if err := os.Chmod(path, perm); err != nil {
			l.Close()
			os.Remove(path)
			return nil, err
		}
	}
	var st syscall.Stat_t
	if err := syscall.Stat(path, &st); err != nil {
		l.Close()
		return nil, err
	}
	return &Listener{UnixListener: l, path: path, ino: st.Ino, dev: st.Dev}, nil
}

// Listener is a unix listener that owns its socket file while nobody
// replaced it.
type Listener struct {
	*net.UnixListener
	path     string
	ino, dev uint64
}

// Close stops listening and removes the socket file if it is still ours.
func (l *Listener) Close() error {
	err := l.UnixListener.Close()
	if l.Owned() {
		os.Remove(l.path)
	}
	return err
}

// Owned reports whether the socket file at the path is the one l bound.
func (l *Listener) Owned() bool {
	var st syscall.Stat_t
	return syscall.Stat(l.path, &st) == nil && st.Ino == l.ino && st.Dev == l.dev
}
