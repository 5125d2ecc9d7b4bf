package e2e

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	admv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"github.com/skiff-fs/skiff/webhook/inject"
	"github.com/skiff-fs/skiff/webhook/server"
)

// TestSelfManagedCertificates runs a second webhook server with
// self-managed certificates (cert-controller) against the real API server:
// it must fill the certificate Secret, inject the CA bundle into its
// MutatingWebhookConfiguration, only then report ready, and serve
// admissions that the API server trusts.
func TestSelfManagedCertificates(t *testing.T) {
	c := need(t)
	ctx := context.Background()
	const sysNS, cfgName, secret = "selfcert-system", "skiff-webhook-selfcert", "skiff-webhook-cert"
	c.namespace(t, sysNS, nil)
	if _, err := c.cs.CoreV1().Secrets(sysNS).Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: secret}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	port := freePort(t)
	url := "https://localhost:" + strconv.Itoa(port) + "/mutate-pod"
	mwc := &admv1.MutatingWebhookConfiguration{
		ObjectMeta: metav1.ObjectMeta{Name: cfgName},
		Webhooks: []admv1.MutatingWebhook{{
			Name:                    "selfcert.inject.skiff.io",
			AdmissionReviewVersions: []string{"v1"},
			ClientConfig:            admv1.WebhookClientConfig{URL: &url},
			Rules: []admv1.RuleWithOperations{{
				Operations: []admv1.OperationType{admv1.Create},
				Rule:       admv1.Rule{APIGroups: []string{""}, APIVersions: []string{"v1"}, Resources: []string{"pods"}},
			}},
			NamespaceSelector:  &metav1.LabelSelector{MatchLabels: map[string]string{"e2e-selfcert": "true"}},
			FailurePolicy:      ptr.To(admv1.Fail),
			SideEffects:        ptr.To(admv1.SideEffectClassNone),
			ReinvocationPolicy: ptr.To(admv1.IfNeededReinvocationPolicy),
			TimeoutSeconds:     ptr.To[int32](5),
		}},
	}
	if _, err := c.cs.AdmissionregistrationV1().MutatingWebhookConfigurations().Create(ctx, mwc, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = c.cs.AdmissionregistrationV1().MutatingWebhookConfigurations().Delete(context.Background(), cfgName, metav1.DeleteOptions{})
	})

	health, metrics := freeAddr(), freeAddr()
	logFile, err := os.Create(filepath.Join(t.TempDir(), "webhook.log"))
	if err != nil {
		t.Fatal(err)
	}
	sctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() {
		done <- server.Run(sctx, c.cfg, server.Config{
			Inject:            inject.DefaultConfig(sidecarImage),
			Host:              "127.0.0.1",
			Port:              port,
			CertDir:           t.TempDir(),
			Certs:             server.CertsSelf,
			Namespace:         sysNS,
			SecretName:        secret,
			WebhookConfigName: cfgName,
			ExtraDNSNames:     []string{"localhost"},
			MetricsAddr:       metrics,
			HealthAddr:        health,
			Logger:            slog.New(slog.NewTextHandler(logFile, nil)),
		})
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("server: %v", err)
		}
	})
	if err := waitReady(health, 90*time.Second); err != nil {
		log, _ := os.ReadFile(logFile.Name())
		t.Fatalf("%v\nserver log:\n%s", err, log)
	}
	s, err := c.cs.CoreV1().Secrets(sysNS).Get(ctx, secret, metav1.GetOptions{})
	if err != nil || len(s.Data["tls.crt"]) == 0 || len(s.Data["ca.crt"]) == 0 {
		t.Fatalf("certificate Secret not filled: %v %v", err, keys(s))
	}
	got, err := c.cs.AdmissionregistrationV1().MutatingWebhookConfigurations().Get(ctx, cfgName, metav1.GetOptions{})
	if err != nil || len(got.Webhooks[0].ClientConfig.CABundle) == 0 {
		t.Fatalf("CA bundle not injected: %v", err)
	}

	ns := c.namespace(t, "selfcert-apps", map[string]string{"e2e-selfcert": "true"})
	deadline := time.Now().Add(30 * time.Second)
	for {
		pod, err := c.cs.CoreV1().Pods(ns).Create(ctx, skiffPod("p", nil), metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}})
		if err == nil && sidecarOf(pod) != nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no injection through the self-certified webhook: %v", err)
		}
		time.Sleep(200 * time.Millisecond)
	}
	resp, err := http.Get("http://" + metrics + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if !strings.Contains(string(body), `skiff_webhook_admissions_total{outcome="injected"}`) || !strings.Contains(string(body), "controller_runtime_webhook_requests_total") {
		t.Fatalf("/metrics lacks the admission counters:\n%.2000s", body)
	}
	if code := get("http://" + health + "/healthz"); code != http.StatusOK {
		t.Fatalf("/healthz: %d", code)
	}
}

func keys(s *corev1.Secret) []string {
	if s == nil {
		return nil
	}
	var out []string
	for k := range s.Data {
		out = append(out, k)
	}
	return out
}

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}
