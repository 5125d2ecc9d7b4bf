package supervisor

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/skiff-fs/skiff/fsclient/fuse"
)

// WorkerControlFD is the descriptor number of the control socket in a
// worker process (the first of exec.Cmd.ExtraFiles).
const WorkerControlFD = 3

// The control protocol: one JSON object per SOCK_SEQPACKET message.
//
//	supervisor -> worker  hello (+ the FUSE socket by SCM_RIGHTS)
//	worker -> supervisor  ready {version, pid, lost}
//	supervisor -> worker  flush            worker -> flushed {err}
//	supervisor -> worker  stop             worker -> stopped {err}, exits
const (
	msgHello   = "hello"
	msgReady   = "ready"
	msgFlush   = "flush"
	msgFlushed = "flushed"
	msgStop    = "stop"
	msgStopped = "stopped"
)

type ctrlMsg struct {
	Op string `json:"op"`

	// hello
	Generation int           `json:"generation,omitempty"`
	Mountpoint string        `json:"mountpoint,omitempty"`
	MaxWrite   int           `json:"max_write,omitempty"`
	Handles    []fuse.Handle `json:"handles,omitempty"`
	NextFh     uint64        `json:"next_fh,omitempty"`
	// KernelChecks: the mount has default_permissions
	// (fuse.ConnOptions.KernelChecksPermissions).
	KernelChecks bool `json:"kernel_checks,omitempty"`

	// ready
	Version string `json:"version,omitempty"`
	PID     int    `json:"pid,omitempty"`
	Lost    int    `json:"lost,omitempty"`

	// flushed, stopped
	Err string `json:"err,omitempty"`
}

// ctrlConn is one end of a control socket.
type ctrlConn struct{ c *net.UnixConn }

// newCtrlConn wraps a SOCK_SEQPACKET unix socket; f is closed.
func newCtrlConn(f *os.File) (*ctrlConn, error) {
	defer f.Close()
	c, err := net.FileConn(f)
	if err != nil {
		return nil, fmt.Errorf("control socket: %w", err)
	}
	uc, ok := c.(*net.UnixConn)
	if !ok {
		c.Close()
		return nil, errors.New("control socket is not a unix socket")
	}
	return &ctrlConn{c: uc}, nil
}

// send writes m, with files passed by SCM_RIGHTS.
func (c *ctrlConn) send(m ctrlMsg, files ...*os.File) error {
	b, err := json.Marshal(m)
	if err != nil {
		return err
	}
	var oob []byte
	if len(files) > 0 {
		fds := make([]int, len(files))
		for i, f := range files {
			fds[i] = int(f.Fd())
		}
		oob = unix.UnixRights(fds...)
	}
	_, _, err = c.c.WriteMsgUnix(b, oob, nil)
	if err != nil {
		return fmt.Errorf("control socket: send %s: %w", m.Op, err)
	}
	return nil
}

// recv reads one message and the files passed with it; a zero deadline
// waits for ever.
func (c *ctrlConn) recv(deadline time.Time) (ctrlMsg, []*os.File, error) {
	c.c.SetReadDeadline(deadline)
	buf := make([]byte, 1<<20)
	oob := make([]byte, unix.CmsgSpace(4*4))
	n, oobn, _, _, err := c.c.ReadMsgUnix(buf, oob)
	if err != nil {
		return ctrlMsg{}, nil, err
	}
	if n == 0 {
		return ctrlMsg{}, nil, errors.New("control socket closed")
	}
	var files []*os.File
	if oobn > 0 {
		fds, err := unixRights(oob[:oobn])
		if err != nil {
			return ctrlMsg{}, nil, err
		}
		for _, fd := range fds {
			files = append(files, os.NewFile(uintptr(fd), "skiff-fuse-conn"))
		}
	}
	var m ctrlMsg
	if err := json.Unmarshal(buf[:n], &m); err != nil {
		for _, f := range files {
			f.Close()
		}
		return ctrlMsg{}, nil, fmt.Errorf("control socket: bad message: %w", err)
	}
	return m, files, nil
}

func (c *ctrlConn) close() error { return c.c.Close() }

// seqpacketPair makes a SOCK_SEQPACKET socketpair; local is non-blocking
// (served by the Go poller), remote blocking (for the worker). Both get a
// send buffer of at least sndbuf bytes when permitted; it returns the
// buffer the kernel granted.
func seqpacketPair(sndbuf int) (local, remote *os.File, granted int, err error) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, nil, 0, fmt.Errorf("socketpair: %w", err)
	}
	granted = 1 << 30
	for _, fd := range fds {
		if sndbuf > 0 {
			// SO_SNDBUFFORCE passes net.core.wmem_max (needs
			// CAP_NET_ADMIN); SO_SNDBUF is capped by it.
			if unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_SNDBUFFORCE, sndbuf) != nil {
				_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_SNDBUF, sndbuf)
			}
		}
		got, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_SNDBUF)
		if err == nil {
			granted = min(granted, got)
		}
	}
	if err := unix.SetNonblock(fds[0], true); err != nil {
		unix.Close(fds[0])
		unix.Close(fds[1])
		return nil, nil, 0, err
	}
	return os.NewFile(uintptr(fds[0]), "skiff-relay"), os.NewFile(uintptr(fds[1]), "skiff-relay-worker"), granted, nil
}

// unixRights returns the descriptors passed in the control messages oob
// (SCM_RIGHTS), each set close-on-exec.
func unixRights(oob []byte) ([]int, error) {
	scms, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return nil, err
	}
	var fds []int
	for _, scm := range scms {
		got, err := unix.ParseUnixRights(&scm)
		if err != nil {
			continue
		}
		for _, fd := range got {
			syscall.CloseOnExec(fd)
		}
		fds = append(fds, got...)
	}
	return fds, nil
}
