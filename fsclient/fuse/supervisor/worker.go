package supervisor

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"time"

	"github.com/skiff-fs/skiff/fsclient/fuse"
	"github.com/skiff-fs/skiff/fsclient/vfs"
)

// Worker is the worker side of a supervised mount: the process that runs
// the file system and serves the FUSE connection its supervisor relays.
//
// A worker's main calls Attach with the control socket it inherited
// (descriptor WorkerControlFD), opens its volume, and calls Serve.
type Worker struct {
	ctrl  *ctrlConn
	conn  *os.File
	hello ctrlMsg
}

// Attach reads the supervisor's hello from the control socket ctrl (which
// it takes over) and the FUSE connection passed with it (SCM_RIGHTS).
func Attach(ctrl *os.File) (*Worker, error) {
	c, err := newCtrlConn(ctrl)
	if err != nil {
		return nil, err
	}
	m, files, err := c.recv(time.Now().Add(time.Minute))
	if err != nil {
		c.close()
		return nil, fmt.Errorf("worker: waiting for the supervisor's hello: %w", err)
	}
	if m.Op != msgHello || len(files) != 1 {
		for _, f := range files {
			f.Close()
		}
		c.close()
		return nil, fmt.Errorf("worker: expected a hello with one descriptor, got %q with %d", m.Op, len(files))
	}
	return &Worker{ctrl: c, conn: files[0], hello: m}, nil
}

// Mountpoint is where the supervisor mounted the file system.
func (w *Worker) Mountpoint() string { return w.hello.Mountpoint }

// Generation counts the workers of the mount: 1 for the first.
func (w *Worker) Generation() int { return w.hello.Generation }

// Serve serves v on the relayed connection until the supervisor stops the
// worker (it then returns nil, every write flushed) or the connection or
// the supervisor goes away (an error). version is reported to the
// supervisor. It answers the supervisor's flush requests with
// v.FlushAll. The caller closes v and its volume afterwards.
func (w *Worker) Serve(v *vfs.VFS, opts fuse.Options, version string) error {
	defer w.conn.Close()
	defer w.ctrl.close()
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	srv, err := fuse.ServeConn(v, w.conn, fuse.ConnOptions{
		Options:  opts,
		MaxWrite: w.hello.MaxWrite,
		Handles:  w.hello.Handles,
		NextFh:   w.hello.NextFh,

		KernelChecksPermissions: w.hello.KernelChecks,
	})
	if err != nil {
		return err
	}
	if err := w.ctrl.send(ctrlMsg{Op: msgReady, Version: version, PID: os.Getpid(), Lost: len(srv.Lost())}); err != nil {
		srv.Close()
		return err
	}
	msgs := make(chan ctrlMsg)
	errc := make(chan error, 1)
	go func() {
		for {
			m, files, err := w.ctrl.recv(time.Time{})
			for _, f := range files {
				f.Close()
			}
			if err != nil {
				errc <- err
				return
			}
			select {
			case msgs <- m:
			case <-srv.Done():
				return
			}
		}
	}()
	ctx := context.Background()
	for {
		select {
		case <-srv.Done():
			return errors.New("worker: the FUSE connection was closed")
		case err := <-errc:
			// The supervisor is gone: with it the mount.
			srv.Close()
			return fmt.Errorf("worker: control socket: %w", err)
		case m := <-msgs:
			switch m.Op {
			case msgFlush:
				err := v.FlushAll(ctx)
				if err := w.ctrl.send(ctrlMsg{Op: msgFlushed, Err: errString(err)}); err != nil {
					return err
				}
			case msgStop:
				cerr := srv.Close()
				err := errors.Join(v.FlushAll(ctx), cerr)
				return w.ctrl.send(ctrlMsg{Op: msgStopped, Err: errString(err)})
			default:
				opts.Logger.Warn("worker: unknown control message", "op", m.Op)
			}
		}
	}
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}
