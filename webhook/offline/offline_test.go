package offline_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	jsonpatch "github.com/evanphx/json-patch/v5"
	"github.com/google/go-cmp/cmp"
	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"
	"sigs.k8s.io/yaml"

	skadm "github.com/skiff-fs/skiff/webhook/admission"
	"github.com/skiff-fs/skiff/webhook/inject"
	"github.com/skiff-fs/skiff/webhook/offline"
)

var update = flag.Bool("update", false, "rewrite testdata/*.out.yaml")

const image = "ghcr.io/skiff-fs/skiff-sidecar:test"

func TestWorkloadsGolden(t *testing.T) {
	pv, err := os.Open("testdata/workloads.pv.yaml")
	if err != nil {
		t.Fatal(err)
	}
	defer pv.Close()
	objs, err := offline.ReadObjects(pv)
	if err != nil {
		t.Fatal(err)
	}
	in, err := os.ReadFile("testdata/workloads.in.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	if err := offline.Transform(bytes.NewReader(in), &out, offline.Options{Config: inject.DefaultConfig(image), Objects: objs}); err != nil {
		t.Fatal(err)
	}
	golden := "testdata/workloads.out.yaml"
	if *update {
		if err := os.WriteFile(golden, out.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff(string(want), out.String()); d != "" {
		t.Fatalf("(-want +got; review, then -update):\n%s", d)
	}
	for _, keep := range []string{"# comments and formatting of untouched documents are kept\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: untouched}", "name: not-selected", "skiff.io/inject: \"false\"}"} {
		if !strings.Contains(out.String(), keep) {
			t.Errorf("output lost %q", keep)
		}
	}
	// Injecting the output again changes nothing.
	var again bytes.Buffer
	if err := offline.Transform(bytes.NewReader(out.Bytes()), &again, offline.Options{Config: inject.DefaultConfig(image), Objects: objs}); err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff(out.String(), again.String()); d != "" {
		t.Fatalf("second run changed the output:\n%s", d)
	}
}

func TestErrors(t *testing.T) {
	cfg := inject.DefaultConfig(image)
	for name, tc := range map[string]struct{ in, want string }{
		"claim offline": {`{"apiVersion":"v1","kind":"Pod","metadata":{"name":"p","labels":{"skiff.io/inject":"true"}},"spec":{"containers":[{"name":"c","image":"x"}],"volumes":[{"name":"v","persistentVolumeClaim":{"claimName":"c"}}]}}`, "pass --pv FILE"},
		"denied":        {"apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\n  labels: {skiff.io/inject: \"true\"}\n  annotations: {skiff.io/platform: autopilot}\nspec:\n  containers: [{name: c, image: x}]\n  volumes: [{name: v, csi: {driver: csi.skiff.io, volumeAttributes: {secretName: s}}}]\n", "Autopilot"},
		"bad yaml":      {"a: [", "document 1"},
		"no template":   {"apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: d, labels: {x: y}}\nspec: {}\n", "no spec.template"},
	} {
		t.Run(name, func(t *testing.T) {
			err := offline.Transform(strings.NewReader(tc.in), io.Discard, offline.Options{Config: cfg})
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want one containing %q", err, tc.want)
			}
		})
	}
}

type noReader struct{}

func (noReader) Get(context.Context, client.ObjectKey, client.Object, ...client.GetOption) error {
	return errors.New("no API server offline")
}
func (noReader) List(context.Context, client.ObjectList, ...client.ListOption) error {
	return errors.New("no API server offline")
}

// TestSameAsWebhook: for every golden pod of webhook/inject that needs no
// claim lookup, `skiff inject` (Transform) writes the pod the webhook's
// patch produces.
func TestSameAsWebhook(t *testing.T) {
	files, err := filepath.Glob("../inject/testdata/*.in.yaml")
	if err != nil || len(files) == 0 {
		t.Fatal("no inputs", err)
	}
	cfg := inject.DefaultConfig(image)
	h, err := skadm.New(cfg, noReader{}, slog.New(slog.NewTextHandler(io.Discard, nil)), nil)
	if err != nil {
		t.Fatal(err)
	}
	compared := 0
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		doc := strings.SplitN(string(b), "\n---", 2)[0]
		var pod corev1.Pod
		if err := yaml.Unmarshal([]byte(doc), &pod); err != nil {
			t.Fatal(err)
		}
		if len(inject.ClaimNames(&pod)) > 0 {
			continue
		}
		t.Run(filepath.Base(f), func(t *testing.T) {
			raw, err := yaml.YAMLToJSON([]byte(doc))
			if err != nil {
				t.Fatal(err)
			}
			req := admission.Request{AdmissionRequest: admissionv1.AdmissionRequest{
				UID: "u", Kind: metav1.GroupVersionKind{Version: "v1", Kind: "Pod"}, Operation: admissionv1.Create,
				Namespace: "default", Object: runtime.RawExtension{Raw: raw},
			}}
			resp := h.Handle(context.Background(), req)
			var out bytes.Buffer
			terr := offline.Transform(strings.NewReader(doc), &out, offline.Options{Config: cfg, NamespaceEnabled: true})
			if !resp.Allowed {
				if terr == nil || resp.Result == nil || !strings.Contains(terr.Error(), resp.Result.Message) {
					t.Fatalf("webhook denied %v, skiff inject: %v", resp.Result, terr)
				}
				return
			}
			if terr != nil {
				t.Fatalf("webhook allowed, skiff inject: %v", terr)
			}
			webhookPod := raw
			if len(resp.Patches) > 0 {
				pj, _ := json.Marshal(resp.Patches)
				p, err := jsonpatch.DecodePatch(pj)
				if err != nil {
					t.Fatal(err)
				}
				if webhookPod, err = p.Apply(raw); err != nil {
					t.Fatal(err)
				}
			}
			cliPod, err := yaml.YAMLToJSON(out.Bytes())
			if err != nil {
				t.Fatal(err)
			}
			var a, c any
			_ = json.Unmarshal(webhookPod, &a)
			_ = json.Unmarshal(cliPod, &c)
			if d := cmp.Diff(a, c); d != "" {
				t.Fatalf("skiff inject differs from the webhook (-webhook +cli):\n%s", d)
			}
			compared++
		})
	}
	if compared < 10 {
		t.Fatalf("compared only %d pods", compared)
	}
}
