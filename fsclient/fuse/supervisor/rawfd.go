package supervisor

import (
	"errors"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// rawFD is a non-blocking descriptor read and written with plain system
// calls and poll(2), never through the Go runtime's epoll instance.
//
// Why: a Go program that opens a file on a FUSE mount makes the runtime
// add it to its epoll set, and epoll_ctl then calls the file's poll,
// which sends FUSE_POLL and waits for the answer while holding the epoll
// instance's lock. If the relay waited on that same epoll instance it
// could never deliver the answer: the process (a sidecar serving probes,
// a test, the CSI plugin) would deadlock on its own mount.
type rawFD struct {
	fd     int
	wake   int  // eventfd; readable once shut down
	timed  bool // a blocking socket with SO_RCVTIMEO/SO_SNDTIMEO
	down   atomic.Bool
	users  sync.RWMutex // read-held by read and write; close takes it
	closed bool         // guarded by users
}

var errShutdown = errors.New("descriptor shut down")

func newRawFD(fd int) (*rawFD, error) {
	if err := unix.SetNonblock(fd, true); err != nil {
		return nil, err
	}
	wake, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		return nil, err
	}
	return &rawFD{fd: fd, wake: wake}, nil
}

// socketFD takes over the socket f as a blocking descriptor whose reads
// and writes return every socketTick to notice a shutdown: one system
// call per message instead of read, poll, read.
func socketFD(f *os.File) (*rawFD, error) {
	fd, err := unix.Dup(int(f.Fd()))
	f.Close()
	if err != nil {
		return nil, err
	}
	unix.CloseOnExec(fd)
	r, err := newRawFD(fd)
	if err == nil {
		err = unix.SetNonblock(fd, false)
	}
	tv := unix.NsecToTimeval(socketTick.Nanoseconds())
	if err == nil {
		err = unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv)
	}
	if err == nil {
		err = unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_SNDTIMEO, &tv)
	}
	if err != nil {
		unix.Close(fd)
		if r != nil {
			unix.Close(r.wake)
		}
		return nil, err
	}
	r.timed = true
	return r, nil
}

// socketTick bounds how long a blocked socket read or write takes to
// notice a shutdown.
const socketTick = 100 * time.Millisecond

// wait polls for ev until timeout (negative: none) or shutdown.
func (r *rawFD) wait(ev int16, deadline time.Time) error {
	ms := -1
	if !deadline.IsZero() {
		d := time.Until(deadline)
		if d <= 0 {
			return os.ErrDeadlineExceeded
		}
		ms = int(d/time.Millisecond) + 1
	}
	fds := []unix.PollFd{{Fd: int32(r.fd), Events: ev}, {Fd: int32(r.wake), Events: unix.POLLIN}}
	_, err := unix.Poll(fds, ms)
	if err != nil && err != unix.EINTR {
		return err
	}
	if r.down.Load() {
		return errShutdown
	}
	return nil
}

// read reads one message (a FUSE request, or a SOCK_SEQPACKET message);
// (0, nil) is end of file.
func (r *rawFD) read(p []byte, deadline time.Time) (int, error) {
	r.users.RLock()
	defer r.users.RUnlock()
	for {
		if r.down.Load() {
			return 0, errShutdown
		}
		n, err := unix.Read(r.fd, p)
		switch err {
		case nil:
			return n, nil
		case unix.EINTR:
			continue
		case unix.EAGAIN:
			if r.timed {
				if !deadline.IsZero() && time.Now().After(deadline) {
					return 0, os.ErrDeadlineExceeded
				}
				continue
			}
			if err := r.wait(unix.POLLIN, deadline); err != nil {
				return 0, err
			}
			continue
		}
		return 0, err
	}
}

// write writes p as one message.
func (r *rawFD) write(p []byte) error {
	r.users.RLock()
	defer r.users.RUnlock()
	for {
		if r.down.Load() {
			return errShutdown
		}
		var err error
		if r.timed {
			// A socket: no SIGPIPE when the worker is gone.
			_, err = unix.SendmsgN(r.fd, p, nil, nil, unix.MSG_NOSIGNAL)
		} else {
			_, err = unix.Write(r.fd, p)
		}
		switch err {
		case nil:
			return nil
		case unix.EINTR:
			continue
		case unix.EAGAIN, unix.ENOBUFS:
			if r.timed {
				continue
			}
			if err := r.wait(unix.POLLOUT, time.Time{}); err != nil {
				return err
			}
			continue
		}
		return err
	}
}

// shutdown wakes every reader and writer; they return errShutdown.
func (r *rawFD) shutdown() {
	if r.down.CompareAndSwap(false, true) {
		var one [8]byte
		one[0] = 1
		unix.Write(r.wake, one[:])
	}
}

// reset undoes shutdown once every reader and writer has returned.
func (r *rawFD) reset() {
	var b [8]byte
	unix.Read(r.wake, b[:])
	r.down.Store(false)
}

// close shuts r down, waits for its users and closes the descriptor.
func (r *rawFD) close() {
	r.shutdown()
	r.users.Lock()
	defer r.users.Unlock()
	if !r.closed {
		r.closed = true
		unix.Close(r.fd)
		unix.Close(r.wake)
	}
}
