package fuse

import (
	"context"
	"errors"
	"log/slog"
	"syscall"

	gofuse "github.com/hanwen/go-fuse/v2/fuse"

	"github.com/skiff-fs/skiff/fsclient/chunk"
)

// status turns an error of vfs into the errno the kernel gets. This is the
// only place where that happens:
//   - a lost or damaged data block is EIO, logged loudly (data loss);
//   - a syscall.Errno found by errors.As passes through (POSIX outcomes);
//   - cancellation (a FUSE interrupt) is EINTR;
//   - anything else is EIO, logged once with the operation and inode.
//
// ENOSYS is never returned for an unknown error.
func status(log *slog.Logger, op string, ino uint64, err error) gofuse.Status {
	if err == nil {
		return gofuse.OK
	}
	if errors.Is(err, chunk.ErrBlockMissing) || errors.Is(err, chunk.ErrCorrupt) {
		log.Error("DATA LOSS: a block of this file cannot be read", "op", op, "ino", ino, "err", err)
		return gofuse.EIO
	}
	var en syscall.Errno
	if errors.As(err, &en) {
		if en == syscall.ENOSYS {
			// Never let a lower layer's ENOSYS disable an operation in
			// the kernel for the rest of the mount.
			log.Error("file system operation failed", "op", op, "ino", ino, "err", err)
			return gofuse.EIO
		}
		return gofuse.Status(en)
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return gofuse.EINTR
	}
	log.Error("file system operation failed", "op", op, "ino", ino, "err", err)
	return gofuse.EIO
}
