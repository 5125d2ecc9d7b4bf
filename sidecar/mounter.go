package sidecar

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/skiff-fs/skiff/fsclient/cache"
	"github.com/skiff-fs/skiff/fsclient/chunk"
	"github.com/skiff-fs/skiff/fsclient/fuse"
	"github.com/skiff-fs/skiff/fsclient/meta"
	"github.com/skiff-fs/skiff/fsclient/vfs"
	"github.com/skiff-fs/skiff/fsclient/volume"
	"github.com/skiff-fs/skiff/sidecar/telemetry"
)

// A Mounter mounts one volume. The sidecar has two: Direct serves the
// file system in the sidecar process; Supervised runs it under the FUSE
// supervisor (`skiff mount --supervise`).
type Mounter interface {
	// Mount mounts spec at spec.MountPath, an existing empty directory
	// (the sidecar has already detached any stale mount there). When it
	// returns without error the file system answers requests.
	Mount(ctx context.Context, spec *Spec) (Mounted, error)
}

// Mounted is one mounted volume.
type Mounted interface {
	// Done is closed when the volume is no longer served (unmounted by
	// someone, or its server died).
	Done() <-chan struct{}
	// Shutdown stops taking writes where it can, flushes written data
	// until ctx ends, unmounts (lazily if busy) and ends the volume's
	// meta session. The error says what could not be flushed.
	Shutdown(ctx context.Context) error
	// Stats are the volume's counters; the zero value when the mount
	// cannot report them (a supervised worker is another process).
	Stats() Stats
}

// Stats are a mounted volume's counters, for /metrics.
type Stats = telemetry.Stats

// Direct serves volumes in this process: volume.Open, a meta session,
// vfs, fuse.Mount — what `skiff mount` does.
type Direct struct {
	Version string
	Logger  *slog.Logger
	// Ops, if set, records every FUSE operation of the mounts.
	Ops *telemetry.FuseOps
	// TrustInputs opens volumes unrestricted (Config.TrustInputs).
	// Default false: volume.Config.Restricted.
	TrustInputs bool
}

// Mount implements Mounter.
func (d Direct) Mount(ctx context.Context, s *Spec) (Mounted, error) {
	log := d.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	log = log.With("volume", s.Name)
	var cc *cache.Config
	if s.CacheDir != "" {
		mem := s.CacheMem
		if mem == 0 {
			mem = -1
		}
		cc = &cache.Config{Dir: s.CacheDir, Size: s.CacheSize, MemSize: mem, Logger: log}
	}
	v, err := volume.Open(ctx, volume.Config{
		MetaURL:         s.MetaURL,
		Passphrase:      s.Passphrase,
		CredentialsFile: s.CredentialsFile,
		Logger:          log,
		Meta:            meta.Options{Logger: log, ReadOnly: s.ReadOnly},
		Chunk:           chunk.Config{BufferSize: s.BufferSize, UploadConcurrency: s.UploadConcurrency, CacheWrites: s.CacheWrites, FlushAfter: s.FlushAfter},
		Cache:           cc,
		Restricted:      !d.TrustInputs,
	})
	if err != nil {
		return nil, err
	}
	closeVolume := func() {
		if err := v.Close(context.WithoutCancel(ctx)); err != nil {
			log.Error("close volume", "err", err)
		}
	}
	host, _ := os.Hostname()
	if err := v.Meta.NewSession(ctx, meta.SessionInfo{Version: d.Version, Hostname: host, MountPoint: s.MountPath, PID: os.Getpid()}); err != nil {
		closeVolume()
		return nil, err
	}
	fs, err := vfs.New(v, vfs.Config{
		AttrTimeout:     s.AttrTimeout,
		EntryTimeout:    s.EntryTimeout,
		DirEntryTimeout: s.DirEntryTimeout,
		ReadOnly:        s.ReadOnly,
		Subdir:          s.Subdir,
		Images:          s.Passthrough,
		Logger:          log,
	})
	if err != nil {
		closeVolume()
		return nil, err
	}
	opts := fuse.Options{AllowOther: s.AllowOther, Passthrough: s.Passthrough, Debug: s.Debug, Logger: log}
	if d.Ops != nil {
		opts.Observer = d.Ops.Observer(s.Name)
	}

	srv, err := fuse.Mount(fs, s.MountPath, opts)
	if err != nil {
		closeVolume()
		return nil, err
	}
	return &direct{spec: s, v: v, fs: fs, srv: srv, log: log}, nil
}

type direct struct {
	spec *Spec
	v    *volume.Volume
	fs   *vfs.VFS
	srv  *fuse.Server
	log  *slog.Logger

	once sync.Once
	err  error
}

func (m *direct) Done() <-chan struct{} { return m.srv.Done() }

func (m *direct) Stats() Stats { return telemetry.StatsOf(m.v, m.spec.BufferSize) }

// closeReserve is the part of the shutdown deadline kept for unmounting
// and closing after the flush.
const closeReserve = 2 * time.Second

func (m *direct) Shutdown(ctx context.Context) error {
	m.once.Do(func() { m.err = m.shutdown(ctx) })
	return m.err
}

func (m *direct) shutdown(ctx context.Context) error {
	mp := m.spec.MountPath
	select {
	case <-m.srv.Done():
		// Already unmounted (by someone else): flush what is left.
	default:
		if !m.spec.ReadOnly {
			m.stopWrites()
		}
	}
	flushCtx := ctx
	if dl, ok := ctx.Deadline(); ok {
		var cancel context.CancelFunc
		flushCtx, cancel = context.WithDeadline(ctx, dl.Add(-closeReserve))
		defer cancel()
	}
	var errs []error
	ferr := m.fs.FlushAll(flushCtx)
	if ferr != nil {
		errs = append(errs, fmt.Errorf("flush: %w", ferr))
	}
	if err := m.srv.Unmount(); err != nil {
		m.log.Warn("unmount failed; detaching lazily", "err", err)
		if lerr := m.srv.UnmountLazy(); lerr != nil && !errors.Is(lerr, unix.EINVAL) {
			errs = append(errs, fmt.Errorf("lazy unmount %s: %w", mp, lerr))
		}
		// After a lazy unmount the connection lives until the last file
		// of it is closed; wait for that only until the deadline.
		select {
		case <-m.srv.Done():
		case <-ctx.Done():
			m.log.Warn("files of the detached mount are still open; ending anyway")
		}
	}
	// Release every handle (a second chance for data still buffered)
	// and end the session.
	cerr := m.fs.Close(context.WithoutCancel(ctx))
	if cerr != nil && ferr == nil {
		errs = append(errs, fmt.Errorf("flush open files: %w", cerr))
	}
	if left := m.v.Chunks.Stats().Buffered; left > 0 {
		m.log.Error("written data could not be flushed before the deadline; it is lost", "bytes", left)
		errs = append(errs, fmt.Errorf("%d bytes of written data not flushed", left))
	}
	if err := m.v.Close(context.WithoutCancel(ctx)); err != nil {
		errs = append(errs, fmt.Errorf("close volume: %w", err))
	}
	return errors.Join(errs...)
}

// stopWrites remounts the file system read-only (the superblock, so every
// propagated copy of the mount too): new opens for writing get EROFS.
// The kernel refuses (EBUSY) while a file is open for writing; those
// writers keep writing until the flush deadline.
func (m *direct) stopWrites() {
	err := unix.Mount("", m.spec.MountPath, "", unix.MS_REMOUNT|unix.MS_RDONLY|unix.MS_NOSUID|unix.MS_NODEV, "")
	if err != nil {
		m.log.Info("cannot stop new writes (files are open for writing); flushing what they wrote until the deadline", "err", err)
		return
	}
	m.log.Info("mount switched to read-only for the shutdown")
}
