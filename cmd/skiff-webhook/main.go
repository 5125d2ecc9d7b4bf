// Command skiff-webhook is the skiff mutating admission webhook: it injects
// the skiff FUSE sidecar into opted-in pods that reference skiff volumes
// (see webhook/server for what it serves and how it gets certificates).
package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/pflag"
	ctrlconfig "sigs.k8s.io/controller-runtime/pkg/client/config"

	"github.com/skiff-fs/skiff/webhook/options"
	"github.com/skiff-fs/skiff/webhook/server"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintf(os.Stderr, "skiff-webhook: %v\n", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	fs := pflag.NewFlagSet("skiff-webhook", pflag.ContinueOnError)
	injectFlags := options.Bind(fs)
	var cfg server.Config
	var level string
	var showVersion bool
	fs.StringVar(&cfg.Host, "host", "", "address the webhook listens on (default all)")
	fs.IntVar(&cfg.Port, "port", 9443, "webhook port")
	fs.StringVar(&cfg.CertDir, "cert-dir", "/tmp/skiff-webhook/certs", "directory of tls.crt and tls.key")
	fs.StringVar(&cfg.Certs, "certs", server.CertsSelf, "certificate source: self (generated, rotated, CA bundle injected) or external (e.g. cert-manager)")
	fs.StringVar(&cfg.Namespace, "namespace", os.Getenv("POD_NAMESPACE"), "namespace of the certificate Secret (default $POD_NAMESPACE)")
	fs.StringVar(&cfg.SecretName, "cert-secret", "skiff-webhook-cert", "Secret holding the generated certificate")
	fs.StringVar(&cfg.ServiceName, "service-name", "skiff-webhook", "Service in front of the webhook (certificate DNS names)")
	fs.StringVar(&cfg.WebhookConfigName, "webhook-config-name", "skiff-webhook", "MutatingWebhookConfiguration to keep the CA bundle of")
	fs.StringVar(&cfg.MetricsAddr, "metrics-addr", ":8080", "address of /metrics (0 disables)")
	fs.StringVar(&cfg.HealthAddr, "health-addr", ":8081", "address of /healthz and /readyz")
	fs.Int64Var(&cfg.MaxRequestBytes, "max-request-bytes", 4<<20, "largest admission request body accepted")
	fs.StringVar(&level, "log-level", "info", "debug, info, warn or error")
	fs.BoolVar(&showVersion, "version", false, "print the version and exit")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if showVersion {
		fmt.Println(version)
		return nil
	}
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(level)); err != nil {
		return fmt.Errorf("--log-level: %w", err)
	}
	cfg.Logger = slog.New(slog.NewJSONHandler(os.Stderr, &slog.HandlerOptions{Level: lv})).With("version", version)
	ic, err := injectFlags.Config()
	if err != nil {
		return err
	}
	cfg.Inject = ic
	if err := cfg.Validate(); err != nil {
		return err
	}
	rest, err := ctrlconfig.GetConfig()
	if err != nil {
		return fmt.Errorf("kubernetes client config: %w", err)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return server.Run(ctx, rest, cfg)
}
