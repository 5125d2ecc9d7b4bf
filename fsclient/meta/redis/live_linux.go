//go:build linux

package redis

import (
	"errors"
	"net"
	"syscall"
)

// peerClosed reports, without blocking or consuming data, whether the
// server has closed c (or sent something nobody asked for, which would
// desynchronise the protocol). It is the check go-redis does before
// reusing a connection: it turns "the server restarted while this
// connection sat idle" into a clean retry instead of an unknown commit.
func peerClosed(c net.Conn) bool {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return false
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return true
	}
	closed := false
	var buf [1]byte
	cerr := rc.Read(func(fd uintptr) bool {
		n, _, err := syscall.Recvfrom(int(fd), buf[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		switch {
		case n == 0 && err == nil: // orderly shutdown by the peer
			closed = true
		case n > 0: // unexpected data
			closed = true
		case errors.Is(err, syscall.EAGAIN), errors.Is(err, syscall.EINTR):
		default:
			closed = true
		}
		return true // never wait for readiness
	})
	return closed || cerr != nil
}
