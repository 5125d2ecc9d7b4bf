// Command skiff-csi is skiff's CSI plugin (driver csi.skiff.io) for
// clusters that have nodes (DESIGN.md §1, issue #7). One binary, three
// roles:
//
//	skiff-csi --endpoint unix:///csi/csi.sock --nodeid $NODE --mode node \
//	    --mounter-socket /run/skiff-csi/mounter.sock      # csi-node (stateless)
//	skiff-csi --endpoint unix:///csi/csi.sock --mode controller   # provisioning
//	skiff-csi mounter --socket /run/skiff-csi/mounter.sock \
//	    --skiff /usr/local/bin/skiff --handoff-dir DIR    # one client per volume
//	skiff-csi probe --socket /run/skiff-csi/mounter.sock  # its readiness probe
//
// csi-node serves the CSI Identity and Node services and asks the mounter
// (package csi/mounter) to stage and unstage volumes; the mounter keeps a
// skiff client process per staged volume, so csi-node can be restarted or
// upgraded without touching a mount. With --handoff-dir a new mounter
// (a new version of the DaemonSet, started beside the old pod) takes every
// mount over from the old one without unmounting. See packages csi/driver
// and csi/mounter.
package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/skiff-fs/skiff/csi/driver"
	"github.com/skiff-fs/skiff/csi/mounter"
	"github.com/skiff-fs/skiff/sidecar/contract"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

// Default socket of the mounter, in a directory shared by the node
// plugin's two containers.
const defaultMounterSocket = "/run/skiff-csi/mounter.sock"

func main() {
	if err := newRoot().Execute(); err != nil {
		fmt.Fprintf(os.Stderr, "skiff-csi: %v\n", err)
		os.Exit(1)
	}
}

func logger(verbose bool) *slog.Logger {
	lvl := slog.LevelInfo
	if verbose {
		lvl = slog.LevelDebug
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: lvl}))
}

// signalContext ends at SIGTERM or SIGINT.
func signalContext() (context.Context, context.CancelFunc) {
	return signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
}

func newRoot() *cobra.Command {
	var (
		endpoint, nodeID, mode, mounterSocket, name string
		verbose, trust                              bool
	)
	cmd := &cobra.Command{
		Use:           "skiff-csi --endpoint unix://PATH [--nodeid NODE] [--mode node|controller|all]",
		Short:         "The CSI plugin of skiff volumes (csi.skiff.io)",
		Version:       version,
		SilenceUsage:  true,
		SilenceErrors: true,
		Args:          cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg := driver.Config{Name: name, Version: version, NodeID: nodeID, MounterSocket: mounterSocket, Logger: logger(verbose), TrustInputs: trust}
			switch mode {
			case "node":
				cfg.Node = true
			case "controller":
				cfg.Controller = true
			case "all":
				cfg.Node, cfg.Controller = true, true
			default:
				return fmt.Errorf("--mode %q: want node, controller or all", mode)
			}
			d, err := driver.New(cfg)
			if err != nil {
				return err
			}
			l, err := driver.Listen(endpoint)
			if err != nil {
				return err
			}
			ctx, cancel := signalContext()
			defer cancel()
			return d.Serve(ctx, l)
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&endpoint, "endpoint", "unix:///csi/csi.sock", "CSI endpoint (unix://PATH)")
	fl.StringVar(&nodeID, "nodeid", "", "this node's id (the Kubernetes node name); required with --mode node or all")
	fl.StringVar(&mode, "mode", "node", "services to serve: node (Identity+Node), controller (Identity+Controller) or all")
	fl.StringVar(&mounterSocket, "mounter-socket", defaultMounterSocket, "unix socket of skiff-csi mounter")
	fl.StringVar(&name, "driver-name", contract.DriverName, "CSI driver name")
	fl.BoolVarP(&verbose, "verbose", "v", false, "log every call (secrets stripped)")
	fl.BoolVar(&trust, "trust-inputs", false, "open volumes without the restrictions on what a Secret may name (bolt://, directory buckets, any GCS credentials): tests and development only")
	cmd.AddCommand(newMounter(), newProbe())
	return cmd
}

// newProbe is the mounter's readiness probe: it answers only once it
// serves, that is after it adopted its predecessor's volumes, so that a
// DaemonSet update (maxSurge) deletes the old pod only then.
func newProbe() *cobra.Command {
	var (
		socket  string
		timeout time.Duration
	)
	cmd := &cobra.Command{
		Use:   "probe [--socket PATH]",
		Short: "Exit 0 when the mounter answers on its socket (a readiness probe)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, cancel := context.WithTimeout(context.Background(), timeout)
			defer cancel()
			vs, err := mounter.NewClient(socket).Volumes(ctx)
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "mounter ready: %d volumes\n", len(vs))
			return nil
		},
	}
	cmd.Flags().StringVar(&socket, "socket", defaultMounterSocket, "unix socket of skiff-csi mounter")
	cmd.Flags().DurationVar(&timeout, "timeout", 5*time.Second, "how long to wait for the answer")
	return cmd
}

func newMounter() *cobra.Command {
	var (
		socket, skiff, stateDir string
		handOffDir              string
		supervise, verbose      bool
		trust                   bool
		startTimeout, stopTime  time.Duration
	)
	cmd := &cobra.Command{
		Use:   "mounter --socket PATH [--skiff PATH]",
		Short: "Run one skiff client process per staged volume, for csi-node (long-lived)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if skiff == "" {
				exe, err := os.Executable()
				if err != nil {
					return err
				}
				skiff = filepath.Join(filepath.Dir(exe), "skiff")
			}
			log := logger(verbose)
			s, err := mounter.New(mounter.Config{
				Skiff: skiff, Supervise: supervise, StateDir: stateDir, HandOffDir: handOffDir,
				StartTimeout: startTimeout, StopTimeout: stopTime, Logger: log, TrustInputs: trust,
			})
			if err != nil {
				return err
			}
			ctx, cancel := signalContext()
			defer cancel()
			// An upgrade: take every mount over from the mounter this
			// one replaces (it runs beside us in the old pod).
			if n, err := s.Adopt(ctx); err != nil {
				return err
			} else if n > 0 {
				log.Info("adopted the previous mounter's volumes", "volumes", n)
			}
			l, err := mounter.Listen(socket)
			if err != nil {
				return err
			}
			log.Info("mounter serving", "socket", socket, "skiff", skiff, "supervise", supervise, "handoff_dir", handOffDir)
			if err := s.Serve(ctx, l); err != nil {
				return err
			}
			select {
			case <-s.Retired():
				// Every mount is the new mounter's. Exiting would
				// make the kubelet start this (old) mounter again,
				// which would adopt them back: wait for the pod's
				// deletion instead, then exit 0.
				log.Info("every volume was handed to the new mounter; idle until this pod is deleted")
				<-ctx.Done()
			default:
			}
			return nil
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&socket, "socket", defaultMounterSocket, "unix socket to serve csi-node on")
	fl.StringVar(&skiff, "skiff", "", "the skiff binary (default: skiff beside this binary)")
	fl.BoolVar(&supervise, "supervise", true, "run skiff mount --supervise (a dead client is restarted on the same FUSE connection); false: plain skiff mount")
	fl.StringVar(&handOffDir, "handoff-dir", "", "directory on the node (hostPath) where the mounter and each volume's supervisor listen for their successor: a new mounter started with the same directory takes every mount over without unmounting (needs --supervise)")
	fl.StringVar(&stateDir, "state-dir", "/run/skiff-csi/state", "directory for the volumes' secret files (use a tmpfs)")
	fl.DurationVar(&startTimeout, "start-timeout", time.Minute, "how long a volume's client may take to mount")
	fl.DurationVar(&stopTime, "stop-timeout", 30*time.Second, "how long a volume's client may take to flush and unmount before it is killed")
	fl.BoolVarP(&verbose, "verbose", "v", false, "debug logging")
	fl.BoolVar(&trust, "trust-inputs", false, "mount volumes without the restrictions on what a Secret may name (bolt://, directory buckets, any GCS credentials): tests and development only")
	return cmd
}
