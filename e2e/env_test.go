package e2e

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	admv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"
	"sigs.k8s.io/yaml"

	"github.com/skiff-fs/skiff/webhook/inject"
	"github.com/skiff-fs/skiff/webhook/server"
)

const sidecarImage = "ghcr.io/skiff-fs/skiff-sidecar:e2e"

// cluster is the control plane shared by the tests of this package.
type cluster struct {
	env  *envtest.Environment
	cfg  *rest.Config
	cs   *kubernetes.Clientset
	cl   client.Client
	stop func()
}

var shared *cluster
var setupErr error

func TestMain(m *testing.M) {
	c, err := start()
	if err != nil {
		setupErr = err
		os.Exit(failAll(m))
	}
	shared = c
	code := m.Run()
	c.stop()
	os.Exit(code)
}

// failAll runs the tests so each one reports the setup error (a missing
// binary is a failure with the command that fixes it, not a skip).
func failAll(m *testing.M) int { return m.Run() }

func need(t *testing.T) *cluster {
	t.Helper()
	if setupErr != nil {
		t.Fatal(setupErr)
	}
	return shared
}

func assets() (string, error) {
	dir := os.Getenv("KUBEBUILDER_ASSETS")
	hint := "build them with: KUBEBUILDER_ASSETS=$(e2e/k8sbin/build.sh) (from the repository root; `make test` does this)"
	if dir == "" {
		return "", fmt.Errorf("KUBEBUILDER_ASSETS is not set: the e2e tests need kube-apiserver, etcd and kube-controller-manager; %s", hint)
	}
	for _, b := range []string{"kube-apiserver", "etcd", "kube-controller-manager"} {
		if st, err := os.Stat(filepath.Join(dir, b)); err != nil || st.Mode()&0o111 == 0 {
			return "", fmt.Errorf("%s not found in KUBEBUILDER_ASSETS=%s; %s", b, dir, hint)
		}
	}
	return dir, nil
}

// render builds a kustomization directory into unstructured objects.
func render(dir string) ([]*unstructured.Unstructured, error) {
	k := krusty.MakeKustomizer(krusty.MakeDefaultOptions())
	rm, err := k.Run(filesys.MakeFsOnDisk(), dir)
	if err != nil {
		return nil, fmt.Errorf("kustomize %s: %w", dir, err)
	}
	var out []*unstructured.Unstructured
	for _, r := range rm.Resources() {
		m, err := r.Map()
		if err != nil {
			return nil, err
		}
		out = append(out, &unstructured.Unstructured{Object: m})
	}
	return out, nil
}

func start() (*cluster, error) {
	dir, err := assets()
	if err != nil {
		return nil, err
	}
	objs, err := render("../manifests")
	if err != nil {
		return nil, err
	}
	var mwc *admv1.MutatingWebhookConfiguration
	var rest []*unstructured.Unstructured
	for _, o := range objs {
		if o.GetKind() != "MutatingWebhookConfiguration" {
			rest = append(rest, o)
			continue
		}
		b, err := yaml.Marshal(o.Object)
		if err != nil {
			return nil, err
		}
		mwc = &admv1.MutatingWebhookConfiguration{}
		if err := yaml.UnmarshalStrict(b, mwc); err != nil {
			return nil, fmt.Errorf("manifests: MutatingWebhookConfiguration: %w", err)
		}
	}
	if mwc == nil {
		return nil, fmt.Errorf("manifests render no MutatingWebhookConfiguration")
	}
	// envtest points service references at its local server as
	// "https://host:port/" + path: drop the path's leading slash.
	for i := range mwc.Webhooks {
		if s := mwc.Webhooks[i].ClientConfig.Service; s != nil && s.Path != nil {
			p := strings.TrimPrefix(*s.Path, "/")
			s.Path = &p
		}
	}
	env := &envtest.Environment{
		BinaryAssetsDirectory: dir,
		WebhookInstallOptions: envtest.WebhookInstallOptions{MutatingWebhooks: []*admv1.MutatingWebhookConfiguration{mwc}},
	}
	t0 := time.Now()
	cfg, err := env.Start()
	if err != nil {
		return nil, fmt.Errorf("start kube-apiserver and etcd: %w", err)
	}
	c := &cluster{env: env, cfg: cfg}
	var stops []func()
	c.stop = func() {
		for i := len(stops) - 1; i >= 0; i-- {
			stops[i]()
		}
		_ = env.Stop()
	}
	fail := func(err error) (*cluster, error) { c.stop(); return nil, err }
	fmt.Fprintf(os.Stderr, "e2e: kube-apiserver and etcd up in %v\n", time.Since(t0).Round(time.Millisecond))
	if c.cs, err = kubernetes.NewForConfig(cfg); err != nil {
		return fail(err)
	}
	if c.cl, err = client.New(cfg, client.Options{}); err != nil {
		return fail(err)
	}
	ctx := context.Background()
	// Every other object of the manifests, through the API server's validation.
	for _, o := range rest {
		if err := c.cl.Create(ctx, o); err != nil {
			return fail(fmt.Errorf("manifests: create %s %s: %w", o.GetKind(), o.GetName(), err))
		}
	}
	stopKCM, err := startControllerManager(env, dir)
	if err != nil {
		return fail(err)
	}
	stops = append(stops, stopKCM)

	// The real webhook server, on envtest's serving certificate.
	wo := env.WebhookInstallOptions
	icfg := inject.DefaultConfig(sidecarImage)
	sctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	health := freeAddr()
	logFile, _ := os.Create(filepath.Join(os.TempDir(), "skiff-e2e-webhook.log"))
	go func() {
		done <- server.Run(sctx, cfg, server.Config{
			Inject:      icfg,
			Host:        wo.LocalServingHost,
			Port:        wo.LocalServingPort,
			CertDir:     wo.LocalServingCertDir,
			Certs:       server.CertsExternal,
			MetricsAddr: "0",
			HealthAddr:  health,
			Logger:      slog.New(slog.NewTextHandler(logWriter(logFile), nil)),
		})
	}()
	stops = append(stops, func() {
		cancel()
		if err := <-done; err != nil {
			fmt.Fprintf(os.Stderr, "e2e: webhook server: %v\n", err)
		}
		if logFile != nil {
			logFile.Close()
		}
	})
	if err := waitReady(health, 30*time.Second); err != nil {
		return fail(err)
	}
	return c, nil
}

func logWriter(f *os.File) io.Writer {
	if f == nil {
		return io.Discard
	}
	return f
}

func freeAddr() string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	defer l.Close()
	return l.Addr().String()
}

func waitReady(addr string, d time.Duration) error {
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		if ok := get("http://"+addr+"/readyz") == 200; ok {
			return nil
		}
		time.Sleep(100 * time.Millisecond)
	}
	return fmt.Errorf("webhook not ready at %s/readyz after %v", addr, d)
}

// startControllerManager runs the real kube-controller-manager with the
// controllers that turn Deployments and Jobs into pods.
func startControllerManager(env *envtest.Environment, dir string) (func(), error) {
	user, err := env.AddUser(envtest.User{Name: "kube-controller-manager", Groups: []string{"system:masters"}}, nil)
	if err != nil {
		return nil, err
	}
	kc, err := user.KubeConfig()
	if err != nil {
		return nil, err
	}
	tmp, err := os.MkdirTemp("", "skiff-e2e-kcm-")
	if err != nil {
		return nil, err
	}
	kubeconfig := filepath.Join(tmp, "kubeconfig")
	if err := os.WriteFile(kubeconfig, kc, 0o600); err != nil {
		return nil, err
	}
	var logs bytes.Buffer
	cmd := exec.Command(filepath.Join(dir, "kube-controller-manager"),
		"--kubeconfig="+kubeconfig,
		"--controllers=deployment-controller,replicaset-controller,job-controller,statefulset-controller",
		"--leader-elect=false",
		"--secure-port=0",
		"--concurrent-deployment-syncs=2",
		"--v=1",
	)
	logFile, err := os.Create(filepath.Join(tmp, "kcm.log"))
	if err != nil {
		return nil, err
	}
	cmd.Stdout, cmd.Stderr = io.MultiWriter(logFile, &limited{&logs, 16 << 10}), io.MultiWriter(logFile, &limited{&logs, 16 << 10})
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start kube-controller-manager: %w", err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	select {
	case err := <-exited:
		return nil, fmt.Errorf("kube-controller-manager exited at start: %v\n%s", err, logs.String())
	case <-time.After(time.Second):
	}
	return func() {
		_ = cmd.Process.Kill()
		<-exited
		logFile.Close()
		os.RemoveAll(tmp)
	}, nil
}

type limited struct {
	b *bytes.Buffer
	n int
}

func (l *limited) Write(p []byte) (int, error) {
	if l.b.Len() < l.n {
		l.b.Write(p[:min(len(p), l.n-l.b.Len())])
	}
	return len(p), nil
}

// namespace creates a namespace with the given labels, deleted at cleanup.
func (c *cluster) namespace(t *testing.T, name string, labels map[string]string) string {
	t.Helper()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels}}
	if _, err := c.cs.CoreV1().Namespaces().Create(context.Background(), ns, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
	return name
}
