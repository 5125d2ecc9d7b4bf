package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/yaml"

	"github.com/skiff-fs/skiff/sidecar/contract"
)

var enabled = map[string]string{contract.LabelInject: contract.InjectNamespace}

func skiffPod(name string, labels map[string]string) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels},
		Spec: corev1.PodSpec{
			Containers: []corev1.Container{{Name: "app", Image: "busybox", VolumeMounts: []corev1.VolumeMount{{Name: "data", MountPath: "/data"}}}},
			Volumes: []corev1.Volume{{Name: "data", VolumeSource: corev1.VolumeSource{CSI: &corev1.CSIVolumeSource{
				Driver: contract.DriverName, VolumeAttributes: map[string]string{contract.AttrSecretName: "skiff-data"},
			}}}},
		},
	}
}

func sidecarOf(pod *corev1.Pod) *corev1.Container {
	for i := range pod.Spec.InitContainers {
		if pod.Spec.InitContainers[i].Name == contract.SidecarName {
			return &pod.Spec.InitContainers[i]
		}
	}
	return nil
}

// assertInjected checks the stored pod carries a working injection.
func assertInjected(t *testing.T, pod *corev1.Pod) {
	t.Helper()
	sc := sidecarOf(pod)
	if sc == nil {
		t.Fatalf("pod %s/%s has no %s: init containers %v", pod.Namespace, pod.Name, contract.SidecarName, names(pod.Spec.InitContainers))
	}
	if sc.RestartPolicy == nil || *sc.RestartPolicy != corev1.ContainerRestartPolicyAlways {
		t.Errorf("sidecar restartPolicy %v", sc.RestartPolicy)
	}
	if sc.StartupProbe == nil || sc.StartupProbe.HTTPGet == nil || sc.StartupProbe.HTTPGet.Path != contract.PathReady {
		t.Errorf("sidecar startup probe %+v", sc.StartupProbe)
	}
	for _, c := range pod.Spec.Containers {
		for _, m := range c.VolumeMounts {
			if strings.HasPrefix(m.Name, contract.VolumePrefix) && !strings.HasPrefix(m.Name, contract.VolumePrefix+"secret-") && m.Name != contract.CacheVolumeName {
				if m.MountPropagation == nil || *m.MountPropagation != corev1.MountPropagationHostToContainer {
					t.Errorf("container %s mount %s propagation %v", c.Name, m.Name, m.MountPropagation)
				}
			}
		}
	}
	for _, v := range pod.Spec.Volumes {
		if v.CSI != nil && v.CSI.Driver == contract.DriverName {
			t.Errorf("skiff CSI volume %s left in the pod", v.Name)
		}
	}
}

func names(cs []corev1.Container) []string {
	var out []string
	for _, c := range cs {
		out = append(out, c.Name)
	}
	return out
}

// TestSelection: namespace label, pod label, opt-out and no selection,
// through the manifests' selectors and the real API server.
func TestSelection(t *testing.T) {
	c := need(t)
	ctx := context.Background()
	nsOn := c.namespace(t, "sel-enabled", enabled)
	nsOff := c.namespace(t, "sel-plain", nil)
	for _, tc := range []struct {
		ns, name string
		labels   map[string]string
		want     bool
	}{
		{nsOn, "ns-selected", nil, true},
		{nsOn, "opted-out", map[string]string{contract.LabelInject: contract.InjectOptOut}, false},
		{nsOff, "pod-selected", map[string]string{contract.LabelInject: contract.InjectPod}, true},
		{nsOff, "not-selected", nil, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pod, err := c.cs.CoreV1().Pods(tc.ns).Create(ctx, skiffPod(tc.name, tc.labels), metav1.CreateOptions{})
			if err != nil {
				t.Fatal(err)
			}
			if tc.want {
				assertInjected(t, pod)
			} else if sidecarOf(pod) != nil {
				t.Fatalf("pod %s injected", tc.name)
			}
		})
	}
}

// TestDryRun: a dry-run create returns the mutation and stores nothing.
func TestDryRun(t *testing.T) {
	c := need(t)
	ctx := context.Background()
	ns := c.namespace(t, "dry-run", enabled)
	pod, err := c.cs.CoreV1().Pods(ns).Create(ctx, skiffPod("dry", nil), metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}})
	if err != nil {
		t.Fatal(err)
	}
	assertInjected(t, pod)
	if _, err := c.cs.CoreV1().Pods(ns).Get(ctx, "dry", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Fatalf("dry-run pod stored: %v", err)
	}
}

// goldenCase is one webhook/inject golden input: the pod and the objects
// its claims resolve to.
type goldenCase struct {
	pod  *corev1.Pod
	objs [][]byte
}

func readGolden(t *testing.T, file string) goldenCase {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	r := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(b)))
	var gc goldenCase
	for {
		doc, err := r.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		var tm metav1.TypeMeta
		if err := yaml.Unmarshal(doc, &tm); err != nil {
			t.Fatal(err)
		}
		switch tm.Kind {
		case "Pod":
			gc.pod = &corev1.Pod{}
			if err := yaml.UnmarshalStrict(doc, gc.pod); err != nil {
				t.Fatal(err)
			}
		case "":
		default:
			gc.objs = append(gc.objs, doc)
		}
	}
	return gc
}

// configured are golden cases made with a non-default webhook
// configuration; the e2e webhook runs with the defaults.
var configured = map[string]bool{
	"platform-default-fargate-webhook": true,
	"platform-fargate-webhook-default": true,
	"cache-ephemeral":                  true,
	"no-after-sidecars":                true,
}

// TestGoldenThroughAPIServer creates every golden pod through the real API
// server: injected pods must pass its validation and match the golden
// output in what skiff wrote; denials must reach the client with the
// golden reason; untouched pods stay untouched.
func TestGoldenThroughAPIServer(t *testing.T) {
	c := need(t)
	ctx := context.Background()
	files, err := filepath.Glob("../webhook/inject/testdata/*.in.yaml")
	if err != nil || len(files) < 20 {
		t.Fatalf("golden inputs: %d %v", len(files), err)
	}
	for i, in := range files {
		name := strings.TrimSuffix(filepath.Base(in), ".in.yaml")
		if configured[name] {
			continue
		}
		t.Run(name, func(t *testing.T) {
			gc := readGolden(t, in)
			want := readGolden(t, strings.TrimSuffix(in, ".in.yaml")+".out.yaml")
			outRaw, _ := os.ReadFile(strings.TrimSuffix(in, ".in.yaml") + ".out.yaml")
			var denied struct{ Denied string }
			_ = yaml.Unmarshal(outRaw, &denied)

			// Each case in a namespace of its own: the golden namespace
			// ("ml") is replaced, secrets stay referenced by name.
			ns := c.namespace(t, fmt.Sprintf("golden-%d", i), enabled)
			renamed := map[string]string{}
			for _, doc := range gc.objs {
				c.createObject(t, ns, doc, renamed)
			}
			pod := gc.pod.DeepCopy()
			pod.Namespace = ""
			got, err := c.cs.CoreV1().Pods(ns).Create(ctx, pod, metav1.CreateOptions{})
			if denied.Denied != "" {
				if err == nil || !apierrors.IsForbidden(err) {
					t.Fatalf("want denial %q, got err=%v", denied.Denied, err)
				}
				reason := strings.ReplaceAll(denied.Denied, `"ml"`, fmt.Sprintf("%q", ns))
				for from, to := range renamed {
					reason = strings.ReplaceAll(reason, fmt.Sprintf("%q", from), fmt.Sprintf("%q", to))
				}
				if !strings.Contains(err.Error(), reason) {
					t.Fatalf("the client got:\n  %v\nwant the reason:\n  %s", err, reason)
				}
				return
			}
			if err != nil {
				t.Fatalf("API server refused the pod: %v", err)
			}
			if want.pod == nil {
				t.Fatal("golden output has no pod")
			}
			if sidecarOf(want.pod) == nil {
				if sidecarOf(got) != nil && sidecarOf(gc.pod) == nil {
					t.Fatal("pod injected, golden says unchanged")
				}
				return
			}
			assertInjected(t, got)
			if d := cmp.Diff(skiffView(want.pod), skiffView(got)); d != "" {
				t.Fatalf("stored pod differs from the golden output (-golden +stored):\n%s", d)
			}
		})
	}
}

// skiffView is what the webhook writes, without the API server's defaults.
func skiffView(p *corev1.Pod) map[string]any {
	v := map[string]any{}
	for _, c := range append(append([]corev1.Container{}, p.Spec.InitContainers...), p.Spec.Containers...) {
		var mounts []string
		for _, m := range c.VolumeMounts {
			prop := ""
			if m.MountPropagation != nil {
				prop = string(*m.MountPropagation)
			}
			mounts = append(mounts, fmt.Sprintf("%s@%s ro=%v sub=%q %s", m.Name, m.MountPath, m.ReadOnly, m.SubPath, prop))
		}
		v["container "+c.Name] = mounts
		if c.Name == contract.SidecarName {
			var env []string
			for _, e := range c.Env {
				env = append(env, e.Name+"="+e.Value)
			}
			v["sidecar env"] = env
			v["sidecar resources"] = c.Resources.String()
			v["sidecar security"] = c.SecurityContext.String()
		}
	}
	v["init order"] = names(p.Spec.InitContainers)
	var vols []string
	for _, vol := range p.Spec.Volumes {
		if !strings.HasPrefix(vol.Name, contract.VolumePrefix) {
			vols = append(vols, vol.Name) // not skiff's: the API server defaults it
			continue
		}
		b, _ := json.Marshal(vol.VolumeSource)
		vols = append(vols, vol.Name+" "+string(b))
	}
	v["volumes"] = vols
	v["grace"] = p.Spec.TerminationGracePeriodSeconds
	return v
}

// createObject creates a golden side object (PVC, PV, StorageClass) in ns;
// cluster-scoped ones get a name unique to ns, and references follow.
func (c *cluster) createObject(t *testing.T, ns string, doc []byte, renamed map[string]string) {
	t.Helper()
	ctx := context.Background()
	var tm metav1.TypeMeta
	_ = yaml.Unmarshal(doc, &tm)
	switch tm.Kind {
	case "PersistentVolumeClaim":
		pvc := &corev1.PersistentVolumeClaim{}
		mustYAML(t, doc, pvc)
		pvc.Namespace = ns
		if pvc.Spec.VolumeName != "" {
			pvc.Spec.VolumeName = ns + "-" + pvc.Spec.VolumeName
		}
		if sc := pvc.Spec.StorageClassName; sc != nil && *sc != "" {
			pvc.Spec.StorageClassName = ptr.To(ns + "-" + *sc)
		}
		if _, err := c.cs.CoreV1().PersistentVolumeClaims(ns).Create(ctx, pvc, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	case "PersistentVolume":
		pv := &corev1.PersistentVolume{}
		mustYAML(t, doc, pv)
		renamed[pv.Name] = ns + "-" + pv.Name
		pv.Name = ns + "-" + pv.Name
		if ref := pv.Spec.CSI.NodePublishSecretRef; ref != nil && ref.Namespace == "ml" {
			ref.Namespace = ns
		}
		if _, err := c.cs.CoreV1().PersistentVolumes().Create(ctx, pv, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	case "StorageClass":
		sc := &storagev1.StorageClass{}
		mustYAML(t, doc, sc)
		renamed[sc.Name] = ns + "-" + sc.Name
		sc.Name = ns + "-" + sc.Name
		if _, err := c.cs.StorageV1().StorageClasses().Create(ctx, sc, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	default:
		t.Fatalf("unexpected golden object %s", tm.Kind)
	}
}

func mustYAML(t *testing.T, doc []byte, into any) {
	t.Helper()
	if err := yaml.UnmarshalStrict(doc, into); err != nil {
		t.Fatal(err)
	}
}

// TestWorkloads: pods that the real kube-controller-manager creates for a
// Deployment and a Job (generated names, no namespace in the object) go
// through the webhook; a Deployment on a denied profile reports the reason.
func TestWorkloads(t *testing.T) {
	c := need(t)
	ctx := context.Background()
	ns := c.namespace(t, "workloads", enabled)
	tmpl := func(app string, ann map[string]string) corev1.PodTemplateSpec {
		p := skiffPod("", map[string]string{"app": app})
		return corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: p.Labels, Annotations: ann}, Spec: p.Spec}
	}
	dep := &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: "trainer"},
		Spec: appsv1.DeploymentSpec{
			Replicas: ptr.To[int32](2),
			Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "trainer"}},
			Template: tmpl("trainer", nil),
		},
	}
	if _, err := c.cs.AppsV1().Deployments(ns).Create(ctx, dep, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	jt := tmpl("job", nil)
	jt.Spec.RestartPolicy = corev1.RestartPolicyNever
	job := &batchv1.Job{ObjectMeta: metav1.ObjectMeta{Name: "preprocess"}, Spec: batchv1.JobSpec{Template: jt}}
	if _, err := c.cs.BatchV1().Jobs(ns).Create(ctx, job, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	sts := &appsv1.StatefulSet{
		ObjectMeta: metav1.ObjectMeta{Name: "shards"},
		Spec: appsv1.StatefulSetSpec{
			Replicas: ptr.To[int32](1),
			Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "shards"}},
			Template: tmpl("shards", nil),
		},
	}
	if _, err := c.cs.AppsV1().StatefulSets(ns).Create(ctx, sts, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	for app, n := range map[string]int{"trainer": 2, "job": 1, "shards": 1} {
		pods := c.waitPods(t, ns, "app="+app, n)
		for i := range pods {
			if pods[i].GenerateName == "" && app != "shards" {
				t.Errorf("pod %s has no generated name", pods[i].Name)
			}
			assertInjected(t, &pods[i])
		}
	}

	// Denied profile: the ReplicaSet reports the webhook's reason.
	fg := &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: "on-fargate"},
		Spec: appsv1.DeploymentSpec{
			Replicas: ptr.To[int32](1),
			Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "on-fargate"}},
			Template: tmpl("on-fargate", map[string]string{contract.AnnotationPlatform: contract.PlatformFargate}),
		},
	}
	if _, err := c.cs.AppsV1().Deployments(ns).Create(ctx, fg, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(60 * time.Second)
	for {
		rss, err := c.cs.AppsV1().ReplicaSets(ns).List(ctx, metav1.ListOptions{LabelSelector: "app=on-fargate"})
		if err != nil {
			t.Fatal(err)
		}
		msg := ""
		for _, rs := range rss.Items {
			for _, cond := range rs.Status.Conditions {
				if cond.Type == appsv1.ReplicaSetReplicaFailure {
					msg = cond.Message
				}
			}
		}
		if strings.Contains(msg, "EKS Fargate") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("ReplicaSet of a fargate Deployment reports no denial (last: %q)", msg)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func (c *cluster) waitPods(t *testing.T, ns, selector string, n int) []corev1.Pod {
	t.Helper()
	deadline := time.Now().Add(90 * time.Second)
	for {
		pods, err := c.cs.CoreV1().Pods(ns).List(context.Background(), metav1.ListOptions{LabelSelector: selector})
		if err != nil {
			t.Fatal(err)
		}
		if len(pods.Items) >= n {
			return pods.Items
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d pods %s in %s after 90s (kube-controller-manager running?)", len(pods.Items), n, selector, ns)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// TestExamples applies manifests/examples (Job, Deployment, PVC + pod) and
// checks the pods the controllers create are injected.
func TestExamples(t *testing.T) {
	c := need(t)
	ctx := context.Background()
	objs, err := render("../manifests/examples")
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range objs {
		if err := c.cl.Create(ctx, o); err != nil {
			t.Fatalf("create %s %s: %v", o.GetKind(), o.GetName(), err)
		}
	}
	const ns = "skiff-demo"
	pod, err := c.cs.CoreV1().Pods(ns).Get(ctx, "skiff-demo-pvc", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	assertInjected(t, pod)
	if v := envOf(sidecarOf(pod), contract.EnvVolumes); !strings.Contains(v, `"subdir":"shared"`) {
		t.Errorf("PVC volume attributes not used: %s", v)
	}
	// The webhook's own Deployment (2 replicas) gets pods, not injected.
	for _, p := range c.waitPods(t, "skiff-system", "app.kubernetes.io/name=skiff-webhook", 2) {
		if sidecarOf(&p) != nil {
			t.Errorf("webhook pod %s injected", p.Name)
		}
	}
	for _, sel := range []string{"job-name=skiff-demo-job", "app=skiff-demo-web"} {
		for _, p := range c.waitPods(t, ns, sel, 1) {
			assertInjected(t, &p)
		}
	}
}

func envOf(c *corev1.Container, name string) string {
	if c == nil {
		return ""
	}
	for _, e := range c.Env {
		if e.Name == name {
			return e.Value
		}
	}
	return ""
}

// TestIntegrityPolicy: the manifests' ValidatingAdmissionPolicy refuses a
// pod whose skiff sidecar is not a native sidecar.
func TestIntegrityPolicy(t *testing.T) {
	c := need(t)
	ctx := context.Background()
	ns := c.namespace(t, "integrity", nil)
	bidi := corev1.MountPropagationBidirectional
	broken := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "broken"},
		Spec: corev1.PodSpec{
			InitContainers: []corev1.Container{{
				Name: contract.SidecarName, Image: "x",
				SecurityContext: &corev1.SecurityContext{Privileged: ptr.To(true)},
				VolumeMounts:    []corev1.VolumeMount{{Name: "skiff-data", MountPath: "/skiff/data", MountPropagation: &bidi}},
			}},
			Containers: []corev1.Container{{Name: "app", Image: "x"}},
			Volumes:    []corev1.Volume{{Name: "skiff-data", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}}},
		},
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		_, err := c.cs.CoreV1().Pods(ns).Create(ctx, broken, metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}})
		if err != nil && strings.Contains(err.Error(), "lost restartPolicy: Always") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("policy does not refuse a sidecar without restartPolicy Always: %v", err)
		}
		time.Sleep(200 * time.Millisecond)
	}
	// The same pod as a native sidecar passes.
	broken.Spec.InitContainers[0].RestartPolicy = ptr.To(corev1.ContainerRestartPolicyAlways)
	if _, err := c.cs.CoreV1().Pods(ns).Create(ctx, broken, metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}}); err != nil {
		t.Fatalf("policy refuses a correct pod: %v", err)
	}
}

// TestGoldenOutputsValid creates every golden output pod (including those
// of non-default configurations) directly, without the webhook: the API
// server's validation and the integrity policy must accept each one.
func TestGoldenOutputsValid(t *testing.T) {
	c := need(t)
	ns := c.namespace(t, "golden-outputs", nil)
	files, err := filepath.Glob("../webhook/inject/testdata/*.out.yaml")
	if err != nil || len(files) < 20 {
		t.Fatalf("golden outputs: %d %v", len(files), err)
	}
	checked := 0
	for _, f := range files {
		gc := readGolden(t, f)
		if gc.pod == nil || sidecarOf(gc.pod) == nil {
			continue
		}
		t.Run(filepath.Base(f), func(t *testing.T) {
			pod := gc.pod.DeepCopy()
			pod.Namespace = ""
			if pod.Labels[contract.LabelInject] == contract.InjectPod {
				delete(pod.Labels, contract.LabelInject) // not through the webhook
			}
			if _, err := c.cs.CoreV1().Pods(ns).Create(context.Background(), pod, metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}}); err != nil {
				t.Fatalf("API server refuses the injected pod: %v", err)
			}
		})
		checked++
	}
	if checked < 14 {
		t.Fatalf("only %d injected golden pods", checked)
	}
}

// TestCertManagerOverlay renders manifests/cert-manager: the webhook runs
// with external certificates from the cert-manager Secret, and cainjector is
// asked to fill the CA bundle. (Needs no cluster.)
func TestCertManagerOverlay(t *testing.T) {
	objs, err := render("../manifests/cert-manager")
	if err != nil {
		t.Fatal(err)
	}
	found := 0
	for _, o := range objs {
		switch o.GetKind() {
		case "Deployment":
			b, _ := json.Marshal(o.Object)
			if !strings.Contains(string(b), `"--certs=external"`) || !strings.Contains(string(b), `"secretName":"skiff-webhook-tls"`) {
				t.Errorf("webhook Deployment not switched to cert-manager: %s", b)
			}
			found++
		case "MutatingWebhookConfiguration":
			if o.GetAnnotations()["cert-manager.io/inject-ca-from"] != "skiff-system/skiff-webhook" {
				t.Errorf("no cainjector annotation: %v", o.GetAnnotations())
			}
			found++
		case "Certificate":
			found++
		}
	}
	if found != 3 {
		t.Fatalf("found %d of Deployment, MutatingWebhookConfiguration, Certificate", found)
	}
}
