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
	fl.StringVar(&f.statusFile, "status-file", "", "with --supervise: keep the supervisor's status (worker pid, version, generation) in this JSON file")
	fl.MarkHidden("supervise")
	fl.MarkHidden("worker-binary")
	fl.MarkHidden("status-file")
	addAdoptFlags(cmd, &f.adopt)
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
		"--flush-after=" + f.flushAfter.String(),
		"--debug=" + strconv.FormatBool(f.debug),
		"--verbose=" + strconv.FormatBool(g.verbose),
		"--meta-timeout=" + f.metaTimeout.String(),
	}
	a = append(a, f.cache.args()...)
	if g.passphraseFile != "" {
		a = append(a, "--passphrase-file="+g.passphraseFile)
	}
	if g.credentials != "" {
		a = append(a, "--google-credentials="+g.credentials)
	}
	if f.metricsSocket != "" {
		a = append(a, "--metrics-socket="+f.metricsSocket)
	}
	if f.restricted {
		a = append(a, "--restricted")
	}
	// The worker's command line must not show a META_URL that came
	// from a file.
	if f.metaURLFile != "" {
		return append(a, "--meta-url-file="+f.metaURLFile)
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
	if err := f.adopt.checkMountpoint(mp); err != nil {
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
	readAhead, err := f.readAheadBytes()
	if err != nil {
		return err
	}
	args := workerArgs(g, f, metaURL)
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGUSR2)
	defer signal.Stop(sigs)
	s, err := f.adopt.start(cmd, supervisor.Config{
		Mountpoint: mp,
		FsName:     "skiff:supervised",
		AllowOther: f.allowOther,
		ReadOnly:   f.readOnly,
		ReadAhead:  readAhead,
		Worker:     supervisor.Command{Path: path, Args: args},
		Logger:     log,
	})
	if err != nil {
		return err
	}
	out := cmd.OutOrStdout()
	fmt.Fprintf(out, "skiff: supervised mount on %s (worker pid %d, version %s)\n", mp, s.WorkerPID(), s.WorkerVersion())
	status := newStatusFile(f.statusFile, s, log)
	defer status.close()
	for {
		select {
		case <-status.tick():
			status.update()
		case <-s.Done():
			if err := s.Err(); err != nil {
				return err
			}
			fmt.Fprintln(out, f.adopt.ended(s, mp))
			return nil
		case sig := <-sigs:
			if sig == syscall.SIGUSR2 {
				path, err := binary()
				if err == nil {
					var v string
					v, err = s.Upgrade(context.Background(), supervisor.Command{Path: path, Args: args})
					if err == nil {
						status.update()
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
		Use:    workerCommand + " [flags] [META_URL]",
		Short:  "Serve a supervised mount (run by skiff mount --supervise)",
		Hidden: true,
		Args:   cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			metaURL, err := f.metaURL(args)
			if err != nil {
				return err
			}
			return runWorker(cmd, g, &f, metaURL)
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
	fl.StringVar(&f.metaURLFile, "meta-url-file", "", "")
	fl.StringVar(&f.metricsSocket, "metrics-socket", "", "")
	addCacheFlags(cmd, &f.cache)
	addMetaTimeoutFlag(cmd, &f)
	addRestrictedFlag(cmd, &f.restricted)
	addFlushAfterFlag(cmd, &f)
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
	opts := fuse.Options{Debug: f.debug, Logger: log}
	// Each worker binds the metrics socket again: the sidecar always
	// reaches the current one.
	ms, err := f.serveMetrics(v, &opts)
	if err != nil {
		return errors.Join(err, fs.Close(ctx), v.Close(ctx))
	}
	serr := w.Serve(fs, opts, version)
	return errors.Join(serr, ms.Close(), fs.Close(ctx), v.Close(ctx))
}
