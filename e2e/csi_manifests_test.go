package e2e

import (
	"context"
	"encoding/json"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/skiff-fs/skiff/sidecar/contract"
)

// createAll creates objs in the API server; a Namespace that exists
// already (skiff-system, from manifests/) is fine.
func (c *cluster) createAll(t *testing.T, objs []*unstructured.Unstructured) {
	t.Helper()
	for _, o := range objs {
		err := c.cl.Create(context.Background(), o)
		if apierrors.IsAlreadyExists(err) && o.GetKind() == "Namespace" {
			continue
		}
		if err != nil {
			t.Fatalf("create %s %s/%s: %v", o.GetKind(), o.GetNamespace(), o.GetName(), err)
		}
	}
}

// TestCSIManifests creates manifests/csi and manifests/csi/examples in
// the real API server, reads the objects back and checks what the node
// plugin depends on; the node DaemonSet's pod template is created as a pod
// (dry run), so the API server's pod validation (privileged containers for
// Bidirectional propagation, probes, ports) checks it too, and the
// controller Deployment gets its pods from kube-controller-manager.
func TestCSIManifests(t *testing.T) {
	c := need(t)
	ctx := context.Background()
	objs, err := render("../manifests/csi")
	if err != nil {
		t.Fatal(err)
	}
	examples, err := render("../manifests/csi/examples")
	if err != nil {
		t.Fatal(err)
	}
	kinds := map[string]int{}
	for _, o := range append(append([]*unstructured.Unstructured{}, objs...), examples...) {
		kinds[o.GetKind()]++
	}
	for _, k := range []string{"CSIDriver", "DaemonSet", "Deployment", "ClusterRole", "ClusterRoleBinding", "ServiceAccount", "StorageClass", "PersistentVolume", "PersistentVolumeClaim", "Secret"} {
		if kinds[k] == 0 {
			t.Errorf("manifests/csi and its examples render no %s", k)
		}
	}
	c.createAll(t, objs)
	c.createAll(t, examples)

	drv, err := c.cs.StorageV1().CSIDrivers().Get(ctx, contract.DriverName, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if drv.Spec.AttachRequired == nil || *drv.Spec.AttachRequired {
		t.Errorf("CSIDriver attachRequired %v, want false (no ControllerPublish)", drv.Spec.AttachRequired)
	}
	if drv.Spec.FSGroupPolicy == nil || *drv.Spec.FSGroupPolicy != storagev1.NoneFSGroupPolicy {
		t.Errorf("CSIDriver fsGroupPolicy %v, want None", drv.Spec.FSGroupPolicy)
	}

	ds, err := c.cs.AppsV1().DaemonSets("skiff-system").Get(ctx, "skiff-csi-node", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	checkNodePlugin(t, ds)
	// The pod the DaemonSet controller would create, through pod validation.
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{GenerateName: "skiff-csi-node-", Labels: ds.Spec.Template.Labels}, Spec: ds.Spec.Template.Spec}
	pod.Spec.NodeName = "node-1"
	if _, err := c.cs.CoreV1().Pods("skiff-system").Create(ctx, pod, metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}}); err != nil {
		t.Fatalf("the API server refuses the node plugin's pod: %v", err)
	}

	dep, err := c.cs.AppsV1().Deployments("skiff-system").Get(ctx, "skiff-csi-controller", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if img := containerImage(dep.Spec.Template.Spec.Containers, "csi-provisioner"); !strings.HasPrefix(img, "registry.k8s.io/sig-storage/csi-provisioner:") {
		t.Errorf("controller: external-provisioner image %q", img)
	}
	for _, p := range c.waitPods(t, "skiff-system", "app.kubernetes.io/name=skiff-csi-controller", int(*dep.Spec.Replicas)) {
		if sidecarOf(&p) != nil {
			t.Errorf("controller pod %s injected with a sidecar", p.Name)
		}
	}

	sc, err := c.cs.StorageV1().StorageClasses().Get(ctx, "skiff", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if sc.Provisioner != contract.DriverName || sc.Parameters["csi.storage.k8s.io/provisioner-secret-name"] == "" || sc.Parameters["csi.storage.k8s.io/node-stage-secret-name"] == "" {
		t.Errorf("StorageClass: provisioner %q, parameters %v", sc.Provisioner, sc.Parameters)
	}
	pv, err := c.cs.CoreV1().PersistentVolumes().Get(ctx, "skiff-csi-datasets", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if pv.Spec.CSI == nil || pv.Spec.CSI.Driver != contract.DriverName || pv.Spec.CSI.NodeStageSecretRef == nil ||
		pv.Spec.CSI.VolumeAttributes[contract.AttrSubdir] == "" {
		b, _ := json.Marshal(pv.Spec)
		t.Errorf("static PV: %s", b)
	}
}

func containerImage(cs []corev1.Container, name string) string {
	for _, c := range cs {
		if c.Name == name {
			return c.Image
		}
	}
	return ""
}

// checkNodePlugin: both skiff containers privileged with Bidirectional
// propagation on the kubelet's pods and staging directories, sharing the
// mounter's socket; the registrar referenced with the kubelet's path of
// the CSI socket.
func checkNodePlugin(t *testing.T, ds *appsv1.DaemonSet) {
	t.Helper()
	spec := ds.Spec.Template.Spec
	hostPaths := map[string]string{}
	for _, v := range spec.Volumes {
		if v.HostPath != nil {
			hostPaths[v.Name] = v.HostPath.Path
		}
	}
	for _, name := range []string{"csi-node", "mounter"} {
		var ctr *corev1.Container
		for i := range spec.Containers {
			if spec.Containers[i].Name == name {
				ctr = &spec.Containers[i]
			}
		}
		if ctr == nil {
			t.Errorf("node plugin has no container %s", name)
			continue
		}
		if ctr.SecurityContext == nil || ctr.SecurityContext.Privileged == nil || !*ctr.SecurityContext.Privileged {
			t.Errorf("%s is not privileged", name)
		}
		bidi := map[string]bool{}
		sock := false
		for _, m := range ctr.VolumeMounts {
			if m.MountPropagation != nil && *m.MountPropagation == corev1.MountPropagationBidirectional {
				bidi[hostPaths[m.Name]] = true
			}
			sock = sock || m.MountPath == "/run/skiff-csi"
		}
		for _, p := range []string{"/var/lib/kubelet/pods", "/var/lib/kubelet/plugins/kubernetes.io/csi"} {
			if !bidi[p] {
				t.Errorf("%s: no Bidirectional mount of %s (has %v)", name, p, bidi)
			}
		}
		if !sock {
			t.Errorf("%s does not mount the mounter's socket directory", name)
		}
	}
	reg := ""
	for _, ctr := range spec.Containers {
		if ctr.Name == "node-driver-registrar" {
			reg = ctr.Image + " " + strings.Join(ctr.Args, " ")
		}
	}
	if !strings.HasPrefix(reg, "registry.k8s.io/sig-storage/csi-node-driver-registrar:") ||
		!strings.Contains(reg, "--kubelet-registration-path="+hostPaths["socket-dir"]+"/csi.sock") {
		t.Errorf("node-driver-registrar: %q (socket dir %q)", reg, hostPaths["socket-dir"])
	}
	// An update starts the new pod beside the old one, whose mounter hands
	// its mounts over: surge, never a gap.
	ru := ds.Spec.UpdateStrategy.RollingUpdate
	if ds.Spec.UpdateStrategy.Type != appsv1.RollingUpdateDaemonSetStrategyType || ru == nil ||
		ru.MaxSurge == nil || ru.MaxSurge.IntValue() != 1 || ru.MaxUnavailable == nil || ru.MaxUnavailable.IntValue() != 0 {
		t.Errorf("node plugin update strategy %+v: want RollingUpdate with maxSurge 1, maxUnavailable 0 (the new mounter adopts the old one's mounts)", ds.Spec.UpdateStrategy)
	}
	for _, ctr := range spec.Containers {
		if ctr.Name != "mounter" {
			continue
		}
		dir := ""
		for _, a := range ctr.Args {
			if v, ok := strings.CutPrefix(a, "--handoff-dir="); ok {
				dir = v
			}
		}
		onNode := false
		for _, m := range ctr.VolumeMounts {
			onNode = onNode || (m.MountPath == dir && hostPaths[m.Name] != "")
		}
		if dir == "" || !onNode {
			t.Errorf("mounter: hand-off dir %q is not a hostPath mount (args %v)", dir, ctr.Args)
		}
		if ctr.ReadinessProbe == nil || ctr.ReadinessProbe.Exec == nil {
			t.Error("mounter: no readiness probe (the old pod would be deleted before the new mounter adopted its mounts)")
		}
	}
}
