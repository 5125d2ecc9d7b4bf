// Command skiff is the skiff file system client: format, mount, umount,
// status, info, gc and fsck, and inject (the webhook's mutation, offline).
package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := newRoot().ExecuteContext(ctx); err != nil {
		fmt.Fprintf(os.Stderr, "skiff: %v\n", err)
		os.Exit(1)
	}
}

// globals are the flags every sub-command shares.
type globals struct {
	verbose        bool
	passphraseFile string
	credentials    string
}

func (g *globals) logger() *slog.Logger {
	level := slog.LevelWarn
	if g.verbose {
		level = slog.LevelDebug
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
}

// passphrase reads the volume passphrase from --passphrase-file or the
// SKIFF_PASSPHRASE environment variable (never from a flag value, which
// would show in the process list).
func (g *globals) passphrase() ([]byte, error) {
	if g.passphraseFile != "" {
		b, err := os.ReadFile(g.passphraseFile)
		if err != nil {
			return nil, fmt.Errorf("read --passphrase-file: %w", err)
		}
		// A trailing newline from `echo > file` is not part of the secret.
		for len(b) > 0 && (b[len(b)-1] == '\n' || b[len(b)-1] == '\r') {
			b = b[:len(b)-1]
		}
		if len(b) == 0 {
			return nil, fmt.Errorf("--passphrase-file %s is empty", g.passphraseFile)
		}
		return b, nil
	}
	if p := os.Getenv("SKIFF_PASSPHRASE"); p != "" {
		return []byte(p), nil
	}
	return nil, nil
}

func newRoot() *cobra.Command {
	g := &globals{}
	root := &cobra.Command{
		Use:           "skiff",
		Short:         "skiff: a shared POSIX file system over Redis and object storage",
		Version:       version,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	pf := root.PersistentFlags()
	pf.BoolVarP(&g.verbose, "verbose", "v", false, "log debug messages")
	pf.StringVar(&g.passphraseFile, "passphrase-file", "", "file holding the encryption passphrase (default: $SKIFF_PASSPHRASE)")
	pf.StringVar(&g.credentials, "google-credentials", "", "GCS service-account key file (default: the environment's identity)")
	root.AddCommand(
		newFormat(g),
		newStatus(g),
		newInfo(g),
		newGC(g),
		newFsck(g),
		newMount(g),
		newUmount(g),
		newInject(g),
		newWorker(g),
		newWarmup(g),
		newBench(g), newObjbench(g),
	)
	return root
}
