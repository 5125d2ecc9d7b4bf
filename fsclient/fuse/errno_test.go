package fuse

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strings"
	"syscall"
	"testing"

	gofuse "github.com/hanwen/go-fuse/v2/fuse"

	"github.com/skiff-fs/skiff/fsclient/chunk"
)

// TestStatus is the table of what an application can see: file-system
// errnos pass, network and metadata-server errors are EIO.
func TestStatus(t *testing.T) {
	wrap := func(err error) error { return fmt.Errorf("meta: lookup 1/%q: %w", "f", err) }
	opErr := func(en syscall.Errno) error {
		return &net.OpError{Op: "dial", Net: "tcp", Err: os.NewSyscallError("connect", en)}
	}
	tests := []struct {
		name string
		err  error
		want gofuse.Status
		logs bool // logged as a failure
	}{
		{"nil", nil, gofuse.OK, false},
		{"ENOENT", wrap(syscall.ENOENT), gofuse.ENOENT, false},
		{"EACCES", syscall.EACCES, gofuse.EACCES, false},
		{"ENOSPC", wrap(syscall.ENOSPC), gofuse.Status(syscall.ENOSPC), false},
		{"EDQUOT", wrap(syscall.EDQUOT), gofuse.Status(syscall.EDQUOT), false},
		{"ENODATA", wrap(syscall.ENODATA), gofuse.Status(syscall.ENODATA), false},
		{"ENOTSUP", syscall.ENOTSUP, gofuse.Status(syscall.ENOTSUP), false},
		{"ENOSYS", wrap(syscall.ENOSYS), gofuse.EIO, true},
		{"bare ECONNREFUSED", wrap(syscall.ECONNREFUSED), gofuse.EIO, true},
		{"ECONNRESET", syscall.ECONNRESET, gofuse.EIO, true},
		{"EPIPE", wrap(syscall.EPIPE), gofuse.EIO, true},
		{"ENETUNREACH", syscall.ENETUNREACH, gofuse.EIO, true},
		{"EHOSTUNREACH", syscall.EHOSTUNREACH, gofuse.EIO, true},
		{"bare ETIMEDOUT", syscall.ETIMEDOUT, gofuse.EIO, true},
		{"ENOTCONN", syscall.ENOTCONN, gofuse.EIO, true},
		{"ECONNREFUSED in net.OpError", wrap(opErr(syscall.ECONNREFUSED)), gofuse.EIO, true},
		// A file-system-looking errno from a socket is still the network.
		{"EAGAIN in net.OpError", wrap(opErr(syscall.EAGAIN)), gofuse.EIO, true},
		{"EINVAL in net.OpError", wrap(opErr(syscall.EINVAL)), gofuse.EIO, true},
		{"socket timeout", wrap(&net.OpError{Op: "read", Net: "tcp", Err: os.ErrDeadlineExceeded}), gofuse.EIO, true},
		{"canceled", wrap(context.Canceled), gofuse.EINTR, false},
		{"deadline", wrap(context.DeadlineExceeded), gofuse.Status(syscall.ETIMEDOUT), false},
		{"block missing", wrap(chunk.ErrBlockMissing), gofuse.EIO, true},
		{"corrupt block", wrap(fmt.Errorf("%w: %w", chunk.ErrCorrupt, syscall.ENOENT)), gofuse.EIO, true},
		{"other", errors.New("redis 127.0.0.1:1: no answer within 2s"), gofuse.EIO, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var buf bytes.Buffer
			log := slog.New(slog.NewTextHandler(&buf, nil))
			if got := status(log, "lookup", 7, tc.err); got != tc.want {
				t.Errorf("status(%v) = %v (%d), want %v (%d)", tc.err, got, int32(got), tc.want, int32(tc.want))
			}
			if logged := buf.Len() > 0; logged != tc.logs {
				t.Errorf("logged = %v, want %v: %s", logged, tc.logs, buf.String())
			}
			if tc.logs && !strings.Contains(buf.String(), "ino=7") {
				t.Errorf("log line lacks the inode: %s", buf.String())
			}
		})
	}
}
