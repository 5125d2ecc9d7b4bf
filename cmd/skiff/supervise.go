package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	stdlog "log"
	"os"
	"os/signal"
	"strconv"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/skiff-fs/skiff/fsclient/fuse"
	"github.com/skiff-fs/skiff/fsclient/fuse/supervisor"
	"github.com/skiff-fs/skiff/fsclient/vfs"
)

// workerCommand is the hidden sub-command a supervised mount runs as its
// worker process.
const workerCommand = "__worker"

// addSuperviseFlags adds the hidden flags of skiff mount --supervise.
func addSuperviseFlags(cmd *cobra.Command, f *mountFlags) {
	fl := cmd.Flags()
	fl.BoolVar(&f.supervise, "supervise", false, "keep the mount in a small supervisor process and the file system in a worker it restarts when it dies; SIGUSR2 upgrades the worker to --worker-binary")
	fl.StringVar(&f.workerBinary, "worker-binary", "", "binary the supervisor runs as the worker, read again at each SIGUSR2 (default: this one)")
	fl.MarkHidden("supervise")
	fl.MarkHidden("worker-binary")
}

// workerArgs are the arguments of `skiff __worker` for these flags.
func workerArgs(g *globals, f *mountFlags, metaURL string) []string {
	a := []string{workerCommand,
		"--read-only=" + strconv.FormatBool(f.readOnly),
		"--subdir=" + f.subdir,
		"--attr-timeout=" + f.attrTimeout.String(),
		"--entry-timeout=" + f.entryTimeout.String(),
		"--dir-entry-timeout=" + f.dirEntryTimeout.String(),
		"--buffer-size=" + f.bufferSize,
		"--upload-concurrency=" + strconv.Itoa(f.uploadConcurrency),
		"--debug=" + strconv.FormatBool(f.debug),
		"--verbose=" + strconv.FormatBool(g.verbose),
	}
	a = append(a, f.cache.args()...)
	if g.passphraseFile != "" {
		a = append(a, "--passphrase-file="+g.passphraseFile)
	}
	if g.credentials != "" {
		a = append(a, "--google-credentials="+g.credentials)
	}
	return append(a, metaURL)
}

// runSupervised is skiff mount --supervise: the supervisor mounts and
// relays; `skiff __worker` serves the volume.
func runSupervised(cmd *cobra.Command, g *globals, f *mountFlags, metaURL, mp string) error {
	if f.debug {
		g.verbose = true
	}
	log := g.logger()
	if err := fuse.CheckMountpoint(mp); err != nil {
		return err
	}
	binary := func() (string, error) {
		if f.workerBinary != "" {
			return f.workerBinary, nil
		}
		return os.Executable()
	}
	path, err := binary()
	if err != nil {
		return err
	}
	args := workerArgs(g, f, metaURL)
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGUSR2)
	defer signal.Stop(sigs)
	s, err := supervisor.Start(supervisor.Config{
		Mountpoint: mp,
		FsName:     "skiff:supervised",
		AllowOther: f.allowOther,
		ReadOnly:   f.readOnly,
		Worker:     supervisor.Command{Path: path, Args: args},
		Logger:     log,
	})
	if err != nil {
		return err
	}
	out := cmd.OutOrStdout()
	fmt.Fprintf(out, "skiff: supervised mount on %s (worker pid %d, version %s)\n", mp, s.WorkerPID(), s.WorkerVersion())
	for {
		select {
		case <-s.Done():
			if err := s.Err(); err != nil {
				return err
			}
			fmt.Fprintf(out, "skiff: %s unmounted\n", mp)
			return nil
		case sig := <-sigs:
			if sig == syscall.SIGUSR2 {
				path, err := binary()
				if err == nil {
					var v string
					v, err = s.Upgrade(context.Background(), supervisor.Command{Path: path, Args: args})
					if err == nil {
						fmt.Fprintf(out, "skiff: worker upgraded to version %s (pid %d)\n", v, s.WorkerPID())
						continue
					}
				}
				log.Error("worker upgrade failed", "err", err)
				continue
			}
			log.Warn("signal received: flushing and unmounting", "signal", sig)
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
			err := s.Shutdown(ctx)
			cancel()
			if err != nil {
				return err
			}
			fmt.Fprintf(out, "skiff: %s unmounted\n", mp)
			return nil
		}
	}
}

// newWorker is the hidden `skiff __worker` a supervisor runs: it serves
// the volume on the connection the supervisor passes on descriptor 3.
func newWorker(g *globals) *cobra.Command {
	var f mountFlags
	cmd := &cobra.Command{
		Use:    workerCommand + " [flags] META_URL",
		Short:  "Serve a supervised mount (run by skiff mount --supervise)",
		Hidden: true,
		Args:   cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return runWorker(cmd, g, &f, args[0])
		},
	}
	fl := cmd.Flags()
	fl.BoolVar(&f.readOnly, "read-only", false, "")
	fl.StringVar(&f.subdir, "subdir", "", "")
	fl.DurationVar(&f.attrTimeout, "attr-timeout", time.Second, "")
	fl.DurationVar(&f.entryTimeout, "entry-timeout", time.Second, "")
	fl.DurationVar(&f.dirEntryTimeout, "dir-entry-timeout", time.Second, "")
	fl.StringVar(&f.bufferSize, "buffer-size", "300M", "")
	fl.IntVar(&f.uploadConcurrency, "upload-concurrency", 20, "")
	fl.BoolVar(&f.debug, "debug", false, "")
	addCacheFlags(cmd, &f.cache)
	return cmd
}

func runWorker(cmd *cobra.Command, g *globals, f *mountFlags, metaURL string) error {
	// Signals are the supervisor's business: it stops the worker over the
	// control socket. A SIGINT from the terminal reaches the whole group.
	signal.Ignore(syscall.SIGINT, syscall.SIGTERM)
	// go-fuse reports the end of a relayed connection ("short read") on
	// the standard logger; it is not news in a worker.
	if !g.verbose {
		stdlog.SetOutput(io.Discard)
	}
	ctx := context.Background()
	log := g.logger().With("worker", os.Getpid())
	w, err := supervisor.Attach(os.NewFile(supervisor.WorkerControlFD, "skiff-control"))
	if err != nil {
		return err
	}
	v, err := f.openVolume(ctx, g, log, metaURL, w.Mountpoint())
	if err != nil {
		return err
	}
	fs, err := vfs.New(v, vfs.Config{
		AttrTimeout:     f.attrTimeout,
		EntryTimeout:    f.entryTimeout,
		DirEntryTimeout: f.dirEntryTimeout,
		ReadOnly:        f.readOnly,
		Subdir:          f.subdir,
		Logger:          log,
	})
	if err != nil {
		v.Close(ctx)
		return err
	}
	serr := w.Serve(fs, fuse.Options{Debug: f.debug, Logger: log}, version)
	return errors.Join(serr, fs.Close(ctx), v.Close(ctx))
}
