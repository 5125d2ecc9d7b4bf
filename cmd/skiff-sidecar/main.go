// Command skiff-sidecar is the skiff client in a pod: the webhook injects
// it as a native sidecar. It mounts the volumes SKIFF_VOLUMES lists (with
// the Secrets mounted under /etc/skiff/secrets), serves /readyz, /healthz
// and /metrics on SKIFF_PROBE_PORT, and on SIGTERM flushes, unmounts and
// exits; in supervised mode SIGUSR2 upgrades the workers in place.
// `skiff-sidecar probe [readyz|healthz]` is the exec probe.
// See package sidecar for the behaviour.
package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"runtime/debug"
	"strconv"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/skiff-fs/skiff/sidecar"
	"github.com/skiff-fs/skiff/sidecar/contract"
)

// runtimeHeadroom is the memory the soft limit allows beyond the buffer
// budget: read buffers, FUSE request buffers, HTTP clients, the runtime.
const runtimeHeadroom = 96 << 20

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

func main() {
	if err := newRoot().Execute(); err != nil {
		fmt.Fprintf(os.Stderr, "skiff-sidecar: %v\n", err)
		os.Exit(1)
	}
}

// flags are the sidecar's options. Each defaults to an environment
// variable, so the pod spec can set them either way.
type flags struct {
	probePort         int
	cacheDir          string
	cacheSize         string
	cacheMem          string
	bufferSize        string
	uploadConcurrency int
	grace             time.Duration
	mode              string
	skiffBinary       string
	workerBinary      string
	stageDir          string
	verbose           bool
	trustInputs       bool
}

func envOr(key, def string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return def
}

func envDuration(key string, def time.Duration) time.Duration {
	if d, err := time.ParseDuration(os.Getenv(key)); err == nil {
		return d
	}
	return def
}

func probePort() int {
	if p, err := strconv.Atoi(os.Getenv(contract.EnvProbePort)); err == nil && p > 0 {
		return p
	}
	return contract.DefaultProbePort
}

func newRoot() *cobra.Command {
	var f flags
	root := &cobra.Command{
		Use:   "skiff-sidecar",
		Short: "Mount the pod's skiff volumes ($" + contract.EnvVolumes + "), serve probes and metrics, flush and unmount on SIGTERM",
		Long: `skiff-sidecar mounts every volume of $SKIFF_VOLUMES (a JSON list the skiff
webhook writes) at its mountPath, reading each volume's metaurl, passphrase and
google-credentials.json from its secretDir. It serves /readyz, /healthz and
/metrics on $SKIFF_PROBE_PORT (default 9567). A dead mount left by a previous
run is detached and mounted again. On SIGTERM it stops new writes, flushes
written data within --grace-period, unmounts (lazily if busy), ends its meta
sessions and exits; it exits 1 if data could not be flushed.
GOMEMLIMIT caps the write buffer (25%) and the cache memory (10%).
With --mount-mode supervised each volume runs under skiff mount --supervise:
the mount survives its worker, the workers' counters appear on /metrics, and
SIGUSR2 upgrades every worker in place to the binary at --worker-binary.`,
		Version:       version,
		SilenceUsage:  true,
		SilenceErrors: true,
		Args:          cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return run(&f)
		},
	}
	fl := root.Flags()
	fl.IntVar(&f.probePort, "probe-port", probePort(), "port of /readyz, /healthz and /metrics ($"+contract.EnvProbePort+")")
	fl.StringVar(&f.cacheDir, "cache-dir", envOr("SKIFF_CACHE_DIR", contract.CacheDir), "block cache directory, one sub-directory per volume ($SKIFF_CACHE_DIR)")
	fl.StringVar(&f.cacheSize, "cache-size", envOr("SKIFF_CACHE_SIZE", "10G"), "disk cache limit per volume; 0 turns it off ($SKIFF_CACHE_SIZE)")
	fl.StringVar(&f.cacheMem, "cache-mem", envOr("SKIFF_CACHE_MEM", "64M"), "memory for hot blocks, all volumes together; at most 10% of GOMEMLIMIT ($SKIFF_CACHE_MEM)")
	fl.StringVar(&f.bufferSize, "buffer-size", envOr("SKIFF_BUFFER_SIZE", "300M"), "memory for written data not yet uploaded, all volumes together; at most 25% of GOMEMLIMIT ($SKIFF_BUFFER_SIZE)")
	fl.IntVar(&f.uploadConcurrency, "upload-concurrency", 20, "parallel block uploads per volume")
	fl.DurationVar(&f.grace, "grace-period", envDuration("SKIFF_GRACE_PERIOD", 25*time.Second), "time to flush and unmount after SIGTERM; keep it below the pod's terminationGracePeriodSeconds ($SKIFF_GRACE_PERIOD)")
	fl.StringVar(&f.mode, "mount-mode", envOr("SKIFF_MOUNT_MODE", string(sidecar.ModeDirect)), "direct: serve in this process; supervised: run each volume under skiff mount --supervise, which survives worker crashes ($SKIFF_MOUNT_MODE)")
	fl.StringVar(&f.skiffBinary, "skiff-binary", os.Getenv("SKIFF_BINARY"), "the skiff binary of --mount-mode supervised (default: skiff beside this binary)")
	fl.StringVar(&f.workerBinary, "worker-binary", os.Getenv("SKIFF_WORKER_BINARY"), "the binary supervised mounts run as their worker, read again on SIGUSR2: deliver a new skiff binary here (by rename) and send SIGUSR2 to upgrade every worker in place (default: --skiff-binary) ($SKIFF_WORKER_BINARY)")
	fl.StringVar(&f.stageDir, "stage-dir", envOr("SKIFF_STAGE_DIR", "/run/skiff/stage"), "staging mount points, for mounting over a dead mount after a container restart ($SKIFF_STAGE_DIR)")
	fl.BoolVarP(&f.verbose, "verbose", "v", false, "log debug messages")
	fl.BoolVar(&f.trustInputs, "trust-inputs", os.Getenv("SKIFF_TRUST_INPUTS") == "true", "mount volumes without the restrictions on what a Secret may name (bolt://, directory buckets, any GCS credentials): tests and development only ($SKIFF_TRUST_INPUTS)")
	root.AddCommand(newProbe())
	return root
}

func run(f *flags) error {
	level := slog.LevelInfo
	if f.verbose {
		level = slog.LevelDebug
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	vols, err := contract.ParseVolumes(os.Getenv(contract.EnvVolumes))
	if err != nil {
		return err
	}
	cfg := sidecar.Config{
		Volumes:           vols,
		ProbeAddr:         ":" + strconv.Itoa(f.probePort),
		CacheDir:          f.cacheDir,
		UploadConcurrency: f.uploadConcurrency,
		GracePeriod:       f.grace,
		Mode:              sidecar.Mode(f.mode),
		SkiffBinary:       f.skiffBinary,
		WorkerBinary:      f.workerBinary,
		StageDir:          f.stageDir,
		TrustInputs:       f.trustInputs,
		Version:           version,
		Logger:            log,
		// The runtime applies GOMEMLIMIT itself; the sidecar sizes its
		// buffers from it.
		MemoryLimit: debug.SetMemoryLimit(-1),
	}
	if cfg.BufferSize, err = sidecar.ParseSize(f.bufferSize, 1); err != nil {
		return fmt.Errorf("--buffer-size: %w", err)
	}
	if cfg.CacheMem, err = sidecar.ParseSize(f.cacheMem, 1); err != nil {
		return fmt.Errorf("--cache-mem: %w", err)
	}
	if cfg.CacheMem == 0 {
		cfg.CacheMem = -1
	}
	if cfg.CacheSize, err = sidecar.ParseSize(f.cacheSize, 1); err != nil {
		return fmt.Errorf("--cache-size: %w", err)
	}
	if cfg.CacheSize == 0 {
		cfg.CacheSize = -1
	}
	s, err := sidecar.New(cfg)
	if err != nil {
		return err
	}
	// The garbage collector lets the heap grow to twice the live data
	// (GOGC=100) before collecting, up to GOMEMLIMIT. Lower the soft limit
	// to the buffer budget plus room for the rest of the process, so that
	// the heap stays near the budget under sustained writes; the runtime
	// caps the GC's CPU share if the live heap ever exceeds it.
	if lim := s.Budget().Total() + runtimeHeadroom; cfg.MemoryLimit == 0 || cfg.MemoryLimit > lim {
		debug.SetMemoryLimit(lim)
		log.Info("Go memory limit set from the buffer budget", "bytes", lim)
	}
	// SIGUSR2 upgrades the workers of supervised mounts in place.
	usr2 := make(chan os.Signal, 1)
	signal.Notify(usr2, syscall.SIGUSR2)
	defer signal.Stop(usr2)
	// SIGTERM (the kubelet) or SIGINT starts the shutdown; later signals
	// are ignored: the grace period bounds it.
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	upgrades := make(chan struct{})
	go func() {
		defer close(upgrades)
		for {
			select {
			case <-ctx.Done():
				return
			case <-usr2:
				log.Info("SIGUSR2: upgrading the workers of the supervised mounts", "workerBinary", cfg.WorkerBinary)
				uctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
				if err := s.Upgrade(uctx); err != nil {
					log.Error("upgrade failed", "err", err)
				}
				cancel()
			}
		}
	}()
	err = s.Run(ctx)
	<-upgrades
	return err
}

func newProbe() *cobra.Command {
	return &cobra.Command{
		Use:       contract.ProbeCommand + " [readyz|healthz]",
		Short:     "Exec probe: exit 0 when the sidecar on $" + contract.EnvProbePort + " answers the check (default readyz), 1 otherwise",
		Args:      cobra.MaximumNArgs(1),
		ValidArgs: []string{"readyz", "healthz"},
		RunE: func(cmd *cobra.Command, args []string) error {
			path := contract.PathReady
			if len(args) == 1 {
				switch args[0] {
				case "readyz":
				case "healthz":
					path = contract.PathHealth
				default:
					return fmt.Errorf("probe %q: want readyz or healthz", args[0])
				}
			}
			if err := sidecar.Probe(cmd.Context(), probePort(), path); err != nil {
				return err
			}
			fmt.Fprintln(cmd.OutOrStdout(), "ok")
			return nil
		},
	}
}
