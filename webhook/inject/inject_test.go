package inject_test

import (
	"bufio"
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/yaml"

	"github.com/skiff-fs/skiff/sidecar/contract"
	"github.com/skiff-fs/skiff/webhook/inject"
)

var update = flag.Bool("update", false, "rewrite testdata/*.out.yaml from the current output")

const testImage = "ghcr.io/skiff-fs/skiff-sidecar:test"

// configs holds the cases that need a non-default Config.
var configs = map[string]func(*inject.Config){
	"platform-default-fargate-webhook": func(c *inject.Config) { c.DefaultPlatform = contract.PlatformFargate },
	"platform-fargate-webhook-default": func(c *inject.Config) { c.DefaultPlatform = contract.PlatformFargate },
	"cache-ephemeral": func(c *inject.Config) {
		sc := "local-nvme"
		c.CacheVolumeClaimTemplate = &corev1.PersistentVolumeClaimTemplate{Spec: corev1.PersistentVolumeClaimSpec{
			AccessModes:      []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
			StorageClassName: &sc,
		}}
	},
	"no-after-sidecars": func(c *inject.Config) { c.AfterSidecars = []string{} },
}

// Case is one golden input: a Pod followed by the PVCs, PVs and
// StorageClasses its claims resolve to.
type Case struct {
	Pod    *corev1.Pod
	Claims inject.Claims
}

// LoadCase reads a golden input file.
func LoadCase(tb testing.TB, file string) Case {
	tb.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		tb.Fatal(err)
	}
	r := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(b)))
	var c Case
	var pvcs []*corev1.PersistentVolumeClaim
	pvs := map[string]*corev1.PersistentVolume{}
	classes := map[string]string{}
	for {
		doc, err := r.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			tb.Fatalf("%s: %v", file, err)
		}
		var meta struct{ Kind string }
		if err := yaml.Unmarshal(doc, &meta); err != nil {
			tb.Fatalf("%s: %v", file, err)
		}
		switch meta.Kind {
		case "":
			continue
		case "Pod":
			c.Pod = &corev1.Pod{}
			mustStrict(tb, doc, c.Pod)
		case "PersistentVolumeClaim":
			pvc := &corev1.PersistentVolumeClaim{}
			mustStrict(tb, doc, pvc)
			pvcs = append(pvcs, pvc)
		case "PersistentVolume":
			pv := &corev1.PersistentVolume{}
			mustStrict(tb, doc, pv)
			pvs[pv.Name] = pv
		case "StorageClass":
			sc := &storagev1.StorageClass{}
			mustStrict(tb, doc, sc)
			classes[sc.Name] = sc.Provisioner
		default:
			tb.Fatalf("%s: unexpected kind %q", file, meta.Kind)
		}
	}
	if c.Pod == nil {
		tb.Fatalf("%s: no Pod", file)
	}
	c.Claims = inject.Claims{}
	for _, name := range inject.ClaimNames(c.Pod) {
		cl := inject.Claim{}
		for _, pvc := range pvcs {
			if pvc.Name == name {
				cl.PVC = pvc
				cl.PV = pvs[pvc.Spec.VolumeName]
				if pvc.Spec.StorageClassName != nil {
					cl.Provisioner = classes[*pvc.Spec.StorageClassName]
				}
			}
		}
		c.Claims[name] = cl
	}
	return c
}

func mustStrict(tb testing.TB, doc []byte, into any) {
	tb.Helper()
	if err := yaml.UnmarshalStrict(doc, into); err != nil {
		tb.Fatalf("decode: %v\n%s", err, doc)
	}
}

// Render is the golden form of an Inject result.
func Render(tb testing.TB, pod *corev1.Pod, changed bool, err error) []byte {
	tb.Helper()
	if d, ok := inject.IsDenied(err); ok {
		b, _ := yaml.Marshal(map[string]string{"denied": d.Reason})
		return b
	}
	if err != nil {
		tb.Fatalf("internal error: %v", err)
	}
	b, err := yaml.Marshal(pod)
	if err != nil {
		tb.Fatal(err)
	}
	return append([]byte(fmt.Sprintf("# changed: %v\n", changed)), b...)
}

func TestGolden(t *testing.T) {
	files, err := filepath.Glob("testdata/*.in.yaml")
	if err != nil || len(files) == 0 {
		t.Fatalf("no golden inputs: %v", err)
	}
	for _, in := range files {
		name := strings.TrimSuffix(filepath.Base(in), ".in.yaml")
		t.Run(name, func(t *testing.T) {
			cfg := inject.DefaultConfig(testImage)
			if f := configs[name]; f != nil {
				f(&cfg)
			}
			c := LoadCase(t, in)
			orig := c.Pod.DeepCopy()
			pod, changed, err := inject.Inject(c.Pod, c.Claims, cfg)
			if d := cmp.Diff(orig, c.Pod); d != "" {
				t.Fatalf("Inject modified its input:\n%s", d)
			}
			got := Render(t, pod, changed, err)
			out := strings.TrimSuffix(in, ".in.yaml") + ".out.yaml"
			if *update {
				if err := os.WriteFile(out, got, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, rerr := os.ReadFile(out)
			if rerr != nil {
				t.Fatalf("%v (run go test -update to create it)", rerr)
			}
			if d := cmp.Diff(string(want), string(got)); d != "" {
				t.Fatalf("%s differs (-want +got; review, then go test -update):\n%s", out, d)
			}
			if err != nil {
				return
			}
			if !changed {
				if d := cmp.Diff(orig, pod); d != "" {
					t.Fatalf("unchanged result differs from input:\n%s", d)
				}
				return
			}
			// Idempotent: injecting the result again changes nothing.
			again, changed2, err := inject.Inject(pod, c.Claims, cfg)
			if err != nil || changed2 {
				t.Fatalf("second injection: changed=%v err=%v", changed2, err)
			}
			if d := cmp.Diff(pod, again); d != "" {
				t.Fatalf("second injection changed the pod:\n%s", d)
			}
			checkInvariants(t, orig, pod)
		})
	}
}

// checkInvariants holds for every injected pod, beyond what the golden
// files show.
func checkInvariants(t *testing.T, in, out *corev1.Pod) {
	t.Helper()
	var sc *corev1.Container
	idx := -1
	for i := range out.Spec.InitContainers {
		if out.Spec.InitContainers[i].Name == contract.SidecarName {
			sc, idx = &out.Spec.InitContainers[i], i
		}
	}
	if sc == nil {
		t.Fatal("no sidecar")
	}
	if sc.RestartPolicy == nil || *sc.RestartPolicy != corev1.ContainerRestartPolicyAlways {
		t.Error("sidecar is not a native sidecar")
	}
	if p := sc.SecurityContext; p == nil || p.Privileged == nil || !*p.Privileged || p.RunAsNonRoot == nil || *p.RunAsNonRoot {
		t.Error("sidecar not explicitly privileged root")
	}
	vols, err := contract.ParseVolumes(envOf(sc, contract.EnvVolumes))
	if err != nil {
		t.Fatalf("sidecar env: %v", err)
	}
	sidecarVols := map[string]bool{}
	for _, vm := range sc.VolumeMounts {
		if vm.MountPropagation != nil && *vm.MountPropagation == corev1.MountPropagationBidirectional {
			sidecarVols[vm.Name] = true
		}
	}
	if len(sidecarVols) != len(vols) {
		t.Errorf("%d Bidirectional mounts for %d volumes", len(sidecarVols), len(vols))
	}
	// Every container that mounts a sidecar volume does so HostToContainer,
	// without subPath, and starts after the sidecar.
	for i, c := range append(append([]corev1.Container{}, out.Spec.InitContainers...), out.Spec.Containers...) {
		if c.Name == contract.SidecarName {
			continue
		}
		for _, vm := range c.VolumeMounts {
			if !sidecarVols[vm.Name] {
				continue
			}
			if vm.MountPropagation == nil || *vm.MountPropagation != corev1.MountPropagationHostToContainer || vm.SubPath != "" {
				t.Errorf("container %s mount %s: propagation %v subPath %q", c.Name, vm.Name, vm.MountPropagation, vm.SubPath)
			}
			if i < idx {
				t.Errorf("init container %s uses a skiff volume before the sidecar", c.Name)
			}
		}
	}
	// Nothing copied from a Secret: every secret source is a reference.
	for _, e := range sc.Env {
		if strings.Contains(strings.ToLower(e.Value), "redis://") {
			t.Errorf("env %s carries a meta URL", e.Name)
		}
	}
	// Untouched: metadata and the other parts of the spec.
	if d := cmp.Diff(in.ObjectMeta, out.ObjectMeta); d != "" {
		t.Errorf("metadata changed:\n%s", d)
	}
	a, b := in.Spec.DeepCopy(), out.Spec.DeepCopy()
	a.Volumes, b.Volumes, a.InitContainers, b.InitContainers, a.Containers, b.Containers = nil, nil, nil, nil, nil, nil
	a.TerminationGracePeriodSeconds, b.TerminationGracePeriodSeconds = nil, nil
	if d := cmp.Diff(a, b); d != "" {
		t.Errorf("spec changed beyond volumes and containers:\n%s", d)
	}
}

func envOf(c *corev1.Container, name string) string {
	for _, e := range c.Env {
		if e.Name == name {
			return e.Value
		}
	}
	return ""
}

func TestConfigValidate(t *testing.T) {
	for name, c := range map[string]inject.Config{
		"no image":     {},
		"bad platform": {Image: "x", DefaultPlatform: "mars"},
		"bad port":     {Image: "x", ProbePort: 70000},
		"bad percent":  {Image: "x", GoMemLimitPercent: 101},
	} {
		if err := c.Validate(); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
	c := inject.DefaultConfig("x")
	if c.ProbePort != contract.DefaultProbePort || c.CacheSize.Cmp(resource.MustParse("10Gi")) != 0 || c.DefaultPlatform != contract.PlatformDefault {
		t.Errorf("defaults: %+v", c)
	}
}

func TestSelected(t *testing.T) {
	l := func(v string) map[string]string { return map[string]string{contract.LabelInject: v} }
	for _, tc := range []struct {
		pod, ns map[string]string
		want    bool
	}{
		{nil, nil, false},
		{l("true"), nil, true},
		{l("false"), l("enabled"), false},
		{nil, l("enabled"), true},
		{nil, l("true"), false},
		{l("yes"), nil, false},
	} {
		if got := inject.Selected(tc.pod, tc.ns); got != tc.want {
			t.Errorf("Selected(%v, %v) = %v", tc.pod, tc.ns, got)
		}
	}
}

func TestUnresolvedClaimIsInternal(t *testing.T) {
	pod := &corev1.Pod{Spec: corev1.PodSpec{Volumes: []corev1.Volume{{Name: "v", VolumeSource: corev1.VolumeSource{PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{ClaimName: "c"}}}}}}
	_, _, err := inject.Inject(pod, nil, inject.DefaultConfig(testImage))
	if err == nil {
		t.Fatal("no error")
	}
	if _, denied := inject.IsDenied(err); denied {
		t.Fatalf("a caller bug was reported as a denial: %v", err)
	}
}

func FuzzParseAnnotation(f *testing.F) {
	f.Add(`[{"name":"data","secretName":"s","mountPath":"/data","subdir":"a/b","readOnly":true,"options":"x,y","containers":["app"]}]`)
	f.Add(`[]`)
	f.Add(`[{"name":"a","secretName":"s","mountPath":"/a"},{"name":"a","secretName":"s","mountPath":"/b"}]`)
	f.Fuzz(func(t *testing.T, s string) {
		specs, err := inject.ParseAnnotation(s)
		if err != nil {
			return
		}
		for _, sp := range specs {
			if contract.ValidName(sp.Name) != nil || contract.ValidSubdir(sp.Subdir) != nil || !strings.HasPrefix(sp.MountPath, "/") || sp.SecretName == "" {
				t.Fatalf("accepted an invalid entry %+v from %q", sp, s)
			}
			// Whatever is accepted must make a valid SKIFF_VOLUMES entry.
			v := contract.Volume{Name: sp.Name, MountPath: contract.MountPath(sp.Name), SecretDir: contract.SecretDir(sp.Name), Subdir: sp.Subdir, Options: sp.Options}
			if _, err := contract.MarshalVolumes([]contract.Volume{v}); err != nil {
				t.Fatalf("accepted %q but: %v", s, err)
			}
		}
	})
}

func FuzzParseAttributes(f *testing.F) {
	f.Add("data", "secretName", "s", "subdir", "a/b", "options", "x,y")
	f.Add("data", "readOnly", "true", "x/y", "z", "subdir", "../a")
	f.Fuzz(func(t *testing.T, name, k1, v1, k2, v2, k3, v3 string) {
		sp, err := inject.ParseAttributes(name, map[string]string{k1: v1, k2: v2, k3: v3})
		if err != nil {
			return
		}
		v := contract.Volume{Name: sp.Name, MountPath: contract.MountPath(sp.Name), SecretDir: contract.SecretDir(sp.Name), Subdir: sp.Subdir, Options: sp.Options}
		if _, err := contract.MarshalVolumes([]contract.Volume{v}); err != nil {
			t.Fatalf("accepted %q %q: %v", name, []string{k1, v1, k2, v2, k3, v3}, err)
		}
	})
}
