package fuse

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"os"
	"syscall"

	gofuse "github.com/hanwen/go-fuse/v2/fuse"

	"github.com/skiff-fs/skiff/fsclient/chunk"
)

// status turns an error of vfs into the errno the kernel gets. This is the
// only place where that happens, and only file-system errnos leave it:
//   - a lost or damaged data block is EIO, logged loudly (data loss);
//   - a syscall.Errno found by errors.As passes through when it is a
//     file-system outcome (fsErrnos) and does not come from the network
//     (an Errno inside a net.Error, such as ECONNREFUSED or EAGAIN from a
//     socket to Redis or the object store, is EIO);
//   - cancellation (a FUSE interrupt) is EINTR;
//   - a context deadline that expired is ETIMEDOUT (the truth, and not
//     EINTR, which applications retry without end);
//   - anything else (network and metadata-server errors, socket
//     timeouts, an unreachable Redis) is EIO, logged once with the
//     operation and inode.
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
	network := fromNetwork(err)
	var en syscall.Errno
	if !network && errors.As(err, &en) && fsErrnos[en] {
		return gofuse.Status(en)
	}
	switch {
	case errors.Is(err, context.Canceled):
		return gofuse.EINTR
	case !network && errors.Is(err, context.DeadlineExceeded):
		return gofuse.Status(syscall.ETIMEDOUT)
	}
	log.Error("file system operation failed", "op", op, "ino", ino, "err", err)
	return gofuse.EIO
}

// fromNetwork reports an error of a socket (to Redis, the object store,
// a peer): its errno, if any, is not a file-system outcome. (net.Error
// itself cannot tell: syscall.Errno and context.DeadlineExceeded
// implement it too.)
func fromNetwork(err error) bool {
	var opErr *net.OpError
	var dnsErr *net.DNSError
	var addrErr *net.AddrError
	return errors.As(err, &opErr) || errors.As(err, &dnsErr) || errors.As(err, &addrErr) ||
		errors.Is(err, os.ErrDeadlineExceeded)
}

// fsErrnos are the errnos a file system operation may report to an
// application. Everything else a lower layer returns (ENOSYS, which would
// disable an operation in the kernel for the rest of the mount; socket
// errnos such as ECONNREFUSED, ECONNRESET, EPIPE, ENETUNREACH,
// EHOSTUNREACH, ETIMEDOUT, ENOTCONN) becomes EIO.
var fsErrnos = map[syscall.Errno]bool{
	syscall.EPERM: true, syscall.ENOENT: true, syscall.EINTR: true,
	syscall.EIO: true, syscall.ENXIO: true, syscall.E2BIG: true,
	syscall.EBADF: true, syscall.EAGAIN: true, syscall.ENOMEM: true,
	syscall.EACCES: true, syscall.EBUSY: true, syscall.EEXIST: true,
	syscall.EXDEV: true, syscall.ENODEV: true, syscall.ENOTDIR: true,
	syscall.EISDIR: true, syscall.EINVAL: true, syscall.ENFILE: true,
	syscall.EMFILE: true, syscall.ENOTTY: true, syscall.ETXTBSY: true,
	syscall.EFBIG: true, syscall.ENOSPC: true, syscall.ESPIPE: true,
	syscall.EROFS: true, syscall.EMLINK: true, syscall.ERANGE: true,
	syscall.EDEADLK: true, syscall.ENAMETOOLONG: true, syscall.ENOLCK: true,
	syscall.ENOTEMPTY: true, syscall.ELOOP: true, syscall.ENODATA: true,
	syscall.EOVERFLOW: true, syscall.EOPNOTSUPP: true, syscall.EDQUOT: true,
	syscall.ESTALE: true, syscall.ECANCELED: true, syscall.EBADFD: true,
}
