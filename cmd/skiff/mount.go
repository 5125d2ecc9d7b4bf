package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/skiff-fs/skiff/fsclient/chunk"
	"github.com/skiff-fs/skiff/fsclient/fuse"
	"github.com/skiff-fs/skiff/fsclient/meta"
	"github.com/skiff-fs/skiff/fsclient/meta/redis"
	"github.com/skiff-fs/skiff/fsclient/vfs"
	"github.com/skiff-fs/skiff/fsclient/volume"
)

// mountFlags are the options of skiff mount.
type mountFlags struct {
	readOnly          bool
	subdir            string
	attrTimeout       time.Duration
	entryTimeout      time.Duration
	dirEntryTimeout   time.Duration
	allowOther        bool
	bufferSize        string
	uploadConcurrency int
	debug             bool
	cache             cacheFlags // cache.go
	supervise         bool       // skiff mount --supervise (supervise.go)
	workerBinary      string     // its worker's binary
	adopt             adoptFlags // its hand-off (adopt.go)
	metaURLFile       string     // --meta-url-file: META_URL from a file
	metricsSocket     string     // --metrics-socket (metrics.go)
	statusFile        string     // --status-file of --supervise
	readAhead         string
	passthrough       bool          // --passthrough: file images read by the kernel directly
	flushAfter        time.Duration // --flush-after: chunk.Config.FlushAfter
	restricted        bool          // --restricted (hidden; restricted.go)

	metaTimeout time.Duration // --meta-timeout (addMetaTimeoutFlag)
}

// addMetaTimeoutFlag adds --meta-timeout to skiff mount and its worker.
func addMetaTimeoutFlag(cmd *cobra.Command, f *mountFlags) {
	cmd.Flags().DurationVar(&f.metaTimeout, "meta-timeout", redis.DefaultOpTimeout,
		"bound on each metadata (Redis) operation, retries included; past it, and at once while Redis is known down, file operations fail with EIO")
}

func newMount(g *globals) *cobra.Command {
	var f mountFlags
	cmd := &cobra.Command{
		Use:   "mount [flags] META_URL MOUNTPOINT  (or --meta-url-file FILE MOUNTPOINT)",
		Short: "Mount a volume with FUSE; runs in the foreground until unmounted or signalled",
		Long: `Mount the volume at META_URL on MOUNTPOINT (an existing, empty directory).
skiff mount stays in the foreground. SIGTERM or SIGINT flushes written data and
unmounts; a second signal detaches the mount at once (lazy unmount).
As root the mount uses mount(2) directly; other users need fusermount3.
With --meta-url-file the META_URL is read from a file and left out of the
command line, which every process can read in /proc.`,
		Args: cobra.RangeArgs(1, 2),
		RunE: func(cmd *cobra.Command, args []string) error {
			metaURL, err := f.metaURL(args[:len(args)-1])
			if err != nil {
				return err
			}
			return runMount(cmd, g, &f, metaURL, args[len(args)-1])
		},
	}
	fl := cmd.Flags()
	fl.BoolVar(&f.readOnly, "read-only", false, "mount read-only")
	fl.StringVar(&f.subdir, "subdir", "", "show this directory of the volume as the root (.. cannot leave it)")
	fl.DurationVar(&f.attrTimeout, "attr-timeout", time.Second, "how long the kernel caches attributes")
	fl.DurationVar(&f.entryTimeout, "entry-timeout", time.Second, "how long the kernel caches file names")
	fl.DurationVar(&f.dirEntryTimeout, "dir-entry-timeout", time.Second, "how long the kernel caches directory names")
	fl.BoolVar(&f.allowOther, "allow-other", os.Geteuid() == 0, "let every user use the mount (the kernel checks permissions: default_permissions); default on as root")
	fl.StringVar(&f.bufferSize, "buffer-size", "300M", "memory for written data not yet uploaded")
	fl.IntVar(&f.uploadConcurrency, "upload-concurrency", 20, "parallel block uploads")
	fl.StringVar(&f.readAhead, "read-ahead", "4M", "kernel read-ahead window for sequential reads (set on the mount's device; needs root); 0 keeps the kernel's 128K")
	fl.BoolVar(&f.passthrough, "passthrough", true, "let the kernel read files wholly in the cache from a local copy (FUSE passthrough, Linux 6.9+, root, private cache); those reads skip skiff's per-read checksums")
	fl.BoolVar(&f.debug, "debug", false, "log every FUSE request (at debug level; implies --verbose)")
	fl.StringVar(&f.metaURLFile, "meta-url-file", "", "read META_URL from this file (a Secret file, say) instead of the command line")
	fl.StringVar(&f.metricsSocket, "metrics-socket", "", "serve Prometheus metrics (the volume's counters and FUSE operations) at /metrics on this unix socket")
	addCacheFlags(cmd, &f.cache)
	addSuperviseFlags(cmd, &f)
	addMetaTimeoutFlag(cmd, &f)
	addRestrictedFlag(cmd, &f.restricted)
	addFlushAfterFlag(cmd, &f)
	return cmd
}

func runMount(cmd *cobra.Command, g *globals, f *mountFlags, metaURL, mountpoint string) error {
	// The command's context ends at the first signal; the mount has its
	// own signal handling below, so work under a context that lasts.
	ctx := context.WithoutCancel(cmd.Context())
	if f.debug {
		g.verbose = true
	}
	log := g.logger()
	mp, err := filepath.Abs(mountpoint)
	if err != nil {
		return err
	}
	if f.supervise {
		return runSupervised(cmd, g, f, metaURL, mp)
	}
	// Check before connecting anywhere: a wrong mountpoint is the most
	// common mistake.
	if err := fuse.CheckMountpoint(mp); err != nil {
		return err
	}
	v, err := f.openVolume(ctx, g, log, metaURL, mp)
	if err != nil {
		return err
	}
	closeVolume := func() {
		if err := v.Close(context.Background()); err != nil {
			log.Error("close volume", "err", err)
		}
	}
	fs, err := vfs.New(v, vfs.Config{
		AttrTimeout:     f.attrTimeout,
		EntryTimeout:    f.entryTimeout,
		DirEntryTimeout: f.dirEntryTimeout,
		ReadOnly:        f.readOnly,
		Subdir:          f.subdir,
		Images:          f.passthrough,
		Logger:          log,
	})
	if err != nil {
		closeVolume()
		return err
	}
	// Catch signals before the mount exists, so that none kills the
	// process between mounting and serving.
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	defer signal.Stop(sigs)
	readAhead, err := f.readAheadBytes()
	if err != nil {
		closeVolume()
		return err
	}
	opts := fuse.Options{AllowOther: f.allowOther, MaxReadAhead: readAhead, Passthrough: f.passthrough, Debug: f.debug, Logger: log}
	ms, err := f.serveMetrics(v, &opts)
	if err != nil {
		closeVolume()
		return err
	}
	defer ms.Close()
	srv, err := fuse.Mount(fs, mp, opts)
	if err != nil {
		closeVolume()
		return err
	}
	what := v.Format.Name
	if f.subdir != "" {
		what += ":" + f.subdir
	}
	fmt.Fprintf(cmd.OutOrStdout(), "skiff: volume %q mounted on %s (Ctrl-C or skiff umount %s to unmount)\n", what, mp, mp)

	stopping := false
	for done := false; !done; {
		select {
		case <-srv.Done():
			done = true
		case sig := <-sigs:
			if !stopping {
				stopping = true
				log.Warn("signal received: flushing and unmounting (send it again to detach at once)", "signal", sig)
				go func() {
					if err := fs.FlushAll(ctx); err != nil {
						log.Error("flush before unmount failed", "err", err)
					}
					if err := srv.Unmount(); err != nil {
						log.Error("unmount failed; send the signal again to detach lazily", "err", err)
					}
				}()
				continue
			}
			log.Warn("second signal: detaching the mount now", "signal", sig)
			if err := srv.UnmountLazy(); err != nil {
				log.Error("lazy unmount failed", "err", err)
			}
		}
	}
	var errs []error
	if err := fs.Close(ctx); err != nil {
		errs = append(errs, fmt.Errorf("flush open files: %w", err))
	}
	if err := v.Close(ctx); err != nil {
		errs = append(errs, fmt.Errorf("close volume: %w", err))
	}
	fmt.Fprintf(cmd.OutOrStdout(), "skiff: %s unmounted\n", mp)
	return errors.Join(errs...)
}

// readAheadBytes is --read-ahead for fuse.Options.MaxReadAhead and
// supervisor.Config.ReadAhead: 0 there means the default, so the flag's 0
// (the kernel's window) becomes -1.
func (f *mountFlags) readAheadBytes() (int, error) {
	n, err := parseSize(f.readAhead)
	if err != nil {
		return 0, fmt.Errorf("--read-ahead: %w", err)
	}
	if n == 0 {
		return -1, nil
	}
	return int(n), nil
}

// addFlushAfterFlag adds --flush-after to skiff mount and its worker.
func addFlushAfterFlag(cmd *cobra.Command, f *mountFlags) {
	cmd.Flags().DurationVar(&f.flushAfter, "flush-after", 5*time.Second,
		"commit written data in the background once it is this old, even while the file is written without pause (a kill -9 loses at most about this much of a file not closed or fsynced)")
}

func newUmount(g *globals) *cobra.Command {
	var force bool
	cmd := &cobra.Command{
		Use:   "umount [--force] MOUNTPOINT",
		Short: "Unmount a skiff mount (--force detaches it even while in use)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return fuse.Unmount(args[0], force)
		},
	}
	cmd.Flags().BoolVar(&force, "force", false, "detach at once even if files are in use (lazy unmount)")
	return cmd
}

// openVolume opens the volume named by metaURL with the mount's flags and
// registers this process's session for mountpoint (skiff mount, and the
// worker of skiff mount --supervise).
func (f *mountFlags) openVolume(ctx context.Context, g *globals, log *slog.Logger, metaURL, mountpoint string) (*volume.Volume, error) {
	buf, err := parseSize(f.bufferSize)
	if err != nil {
		return nil, fmt.Errorf("--buffer-size: %w", err)
	}
	if f.uploadConcurrency <= 0 {
		return nil, fmt.Errorf("--upload-concurrency must be at least 1")
	}
	if f.metaTimeout <= 0 {
		return nil, fmt.Errorf("--meta-timeout must be positive (e.g. 15s)")
	}
	if f.flushAfter <= 0 {
		return nil, fmt.Errorf("--flush-after must be a positive duration, such as 5s (got %s)", f.flushAfter)
	}
	pass, err := g.passphrase()
	if err != nil {
		return nil, err
	}
	cacheCfg, err := f.cache.config(log)
	if err != nil {
		return nil, err
	}
	v, err := volume.Open(ctx, volume.Config{
		MetaURL:         metaURL,
		Passphrase:      pass,
		CredentialsFile: g.credentials,
		Logger:          log,
		Meta:            meta.Options{Logger: log, ReadOnly: f.readOnly, OpTimeout: f.metaTimeout},
		Chunk:           chunk.Config{BufferSize: buf, UploadConcurrency: f.uploadConcurrency, CacheWrites: f.cache.writes, FlushAfter: f.flushAfter},
		Cache:           cacheCfg,
		Restricted:      f.restricted,
	})
	if err != nil {
		return nil, err
	}
	host, _ := os.Hostname()
	if err := v.Meta.NewSession(ctx, meta.SessionInfo{Version: version, Hostname: host, MountPoint: mountpoint, PID: os.Getpid()}); err != nil {
		v.Close(context.Background())
		return nil, err
	}
	return v, nil
}
