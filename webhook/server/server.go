package server

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/go-logr/logr"
	"github.com/open-policy-agent/cert-controller/pkg/rotator"
	"github.com/prometheus/client_golang/prometheus"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	"sigs.k8s.io/controller-runtime/pkg/manager"
	ctrlmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"
	"sigs.k8s.io/controller-runtime/pkg/webhook"
	ctrladmission "sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	"github.com/skiff-fs/skiff/webhook/admission"
	"github.com/skiff-fs/skiff/webhook/inject"
)

// Certificate sources.
const (
	CertsSelf     = "self"
	CertsExternal = "external"
)

// Config of the webhook server. Zero fields take the documented default.
type Config struct {
	// Inject is the injection configuration.
	Inject inject.Config
	// Host and Port the webhook listens on; default all interfaces, 9443.
	Host string
	Port int
	// CertDir holds tls.crt and tls.key (required).
	CertDir string
	// Certs is CertsSelf (default) or CertsExternal.
	Certs string
	// Namespace of the certificate Secret (required with CertsSelf).
	Namespace string
	// SecretName of the certificate Secret; default "skiff-webhook-cert".
	SecretName string
	// ServiceName of the webhook Service, for the certificate's DNS names;
	// default "skiff-webhook".
	ServiceName string
	// ExtraDNSNames are added to the self-generated certificate.
	ExtraDNSNames []string
	// WebhookConfigName is the MutatingWebhookConfiguration whose CA bundle
	// is kept current; default "skiff-webhook".
	WebhookConfigName string
	// MetricsAddr serves /metrics; default ":8080"; "0" disables.
	MetricsAddr string
	// HealthAddr serves /healthz and /readyz; default ":8081".
	HealthAddr string
	// MaxRequestBytes bounds request bodies; default
	// admission.DefaultMaxRequestBytes.
	MaxRequestBytes int64
	// Logger receives all logs (required).
	Logger *slog.Logger
}

// Validate fills in defaults and checks the configuration.
func (c *Config) Validate() error {
	if c.Logger == nil {
		return errors.New("server: no logger")
	}
	if err := c.Inject.Validate(); err != nil {
		return err
	}
	if c.Port == 0 {
		c.Port = 9443
	}
	if c.CertDir == "" {
		return errors.New("server: no certificate directory")
	}
	if c.Certs == "" {
		c.Certs = CertsSelf
	}
	if c.SecretName == "" {
		c.SecretName = "skiff-webhook-cert"
	}
	if c.ServiceName == "" {
		c.ServiceName = "skiff-webhook"
	}
	if c.WebhookConfigName == "" {
		c.WebhookConfigName = "skiff-webhook"
	}
	if c.MetricsAddr == "" {
		c.MetricsAddr = ":8080"
	}
	if c.HealthAddr == "" {
		c.HealthAddr = ":8081"
	}
	if c.MaxRequestBytes == 0 {
		c.MaxRequestBytes = admission.DefaultMaxRequestBytes
	}
	switch c.Certs {
	case CertsExternal:
	case CertsSelf:
		if c.Namespace == "" {
			return errors.New("server: self-managed certificates need the namespace of their Secret")
		}
	default:
		return fmt.Errorf("server: certificates %q: want %q or %q", c.Certs, CertsSelf, CertsExternal)
	}
	return nil
}

type counter struct{ vec *prometheus.CounterVec }

func (c counter) Record(outcome string) { c.vec.WithLabelValues(outcome).Inc() }

var admissions = prometheus.NewCounterVec(prometheus.CounterOpts{
	Name: "skiff_webhook_admissions_total",
	Help: "Pod admission requests handled by the skiff webhook, by outcome.",
}, []string{"outcome"})

func init() {
	// controller-runtime's registry is process-wide; register once.
	ctrlmetrics.Registry.MustRegister(admissions)
}

// Run serves until ctx is cancelled.
func Run(ctx context.Context, restCfg *rest.Config, cfg Config) error {
	if err := cfg.Validate(); err != nil {
		return err
	}
	log := cfg.Logger
	scheme := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(scheme); err != nil {
		return err
	}
	mgr, err := manager.New(restCfg, manager.Options{
		Scheme:                 scheme,
		Logger:                 logr.FromSlogHandler(log.Handler()),
		Metrics:                metricsserver.Options{BindAddress: cfg.MetricsAddr},
		HealthProbeBindAddress: cfg.HealthAddr,
		// The webhook server is added below (with self-managed
		// certificates, once they are in place), never through
		// mgr.GetWebhookServer.
	})
	if err != nil {
		return fmt.Errorf("server: manager: %w", err)
	}
	h, err := admission.New(cfg.Inject, mgr.GetAPIReader(), log, counter{admissions})
	if err != nil {
		return err
	}
	ws := webhook.NewServer(webhook.Options{Host: cfg.Host, Port: cfg.Port, CertDir: cfg.CertDir})
	ws.Register(admission.Path, admission.LimitBody(&ctrladmission.Webhook{Handler: h, RecoverPanic: ptr(true)}, cfg.MaxRequestBytes))
	if err := mgr.AddHealthzCheck("ping", healthz.Ping); err != nil {
		return err
	}
	if err := mgr.AddReadyzCheck("webhook", ws.StartedChecker()); err != nil {
		return err
	}

	if cfg.Certs == CertsExternal {
		if err := mgr.Add(ws); err != nil {
			return err
		}
		log.Info("starting", "port", cfg.Port, "certs", cfg.Certs, "certDir", cfg.CertDir)
		return mgr.Start(ctx)
	}

	if err := os.MkdirAll(cfg.CertDir, 0o700); err != nil {
		return fmt.Errorf("server: cert dir: %w", err)
	}
	key := types.NamespacedName{Namespace: cfg.Namespace, Name: cfg.SecretName}
	ready := make(chan struct{})
	svc := cfg.ServiceName + "." + cfg.Namespace + ".svc"
	rot := &rotator.CertRotator{
		SecretKey:      key,
		CertDir:        cfg.CertDir,
		CAName:         "skiff-webhook-ca",
		CAOrganization: "skiff",
		DNSName:        svc,
		ExtraDNSNames:  append([]string{cfg.ServiceName, cfg.ServiceName + "." + cfg.Namespace, svc + ".cluster.local"}, cfg.ExtraDNSNames...),
		IsReady:        ready,
		Webhooks:       []rotator.WebhookInfo{{Name: cfg.WebhookConfigName, Type: rotator.Mutating}},
		FieldOwner:     "skiff-webhook",
	}
	if err := rotator.AddRotator(mgr, rot); err != nil {
		return fmt.Errorf("server: certificate rotator: %w", err)
	}
	if err := mgr.Add(&secretSync{reader: mgr.GetAPIReader(), key: key, dir: cfg.CertDir, log: log}); err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	errc := make(chan error, 1)
	go func() {
		select {
		case <-ready:
			log.Info("certificate ready and CA bundle injected; serving", "port", cfg.Port)
			errc <- mgr.Add(ws)
		case <-ctx.Done():
			errc <- nil
		}
	}()
	log.Info("starting", "port", cfg.Port, "certs", cfg.Certs, "secret", key.String())
	err = mgr.Start(ctx)
	cancel()
	if aerr := <-errc; err == nil && aerr != nil {
		err = fmt.Errorf("server: add webhook server: %w", aerr)
	}
	return err
}

func ptr[T any](v T) *T { return &v }

// secretSync copies the serving certificate from its Secret into the
// certificate directory, where controller-runtime's certificate watcher
// picks it up.
type secretSync struct {
	reader client.Reader
	key    types.NamespacedName
	dir    string
	log    *slog.Logger
}

// NeedLeaderElection: every replica serves, so every replica syncs.
func (s *secretSync) NeedLeaderElection() bool { return false }

func (s *secretSync) Start(ctx context.Context) error {
	t := time.NewTicker(2 * time.Second)
	defer t.Stop()
	for {
		if err := s.sync(ctx); err != nil {
			s.log.Warn("sync certificate", "secret", s.key.String(), "err", err)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

func (s *secretSync) sync(ctx context.Context) error {
	sec := &corev1.Secret{}
	if err := s.reader.Get(ctx, s.key, sec); err != nil {
		return err
	}
	for _, name := range []string{"ca.crt", "tls.key", "tls.crt"} { // tls.crt last: the rotator waits for it
		data, ok := sec.Data[name]
		if !ok || len(data) == 0 {
			continue
		}
		p := filepath.Join(s.dir, name)
		if old, err := os.ReadFile(p); err == nil && bytes.Equal(old, data) {
			continue
		}
		tmp := p + ".tmp"
		if err := os.WriteFile(tmp, data, 0o600); err != nil {
			return err
		}
		if err := os.Rename(tmp, p); err != nil {
			return err
		}
		s.log.Info("certificate file updated", "file", p)
	}
	return nil
}
