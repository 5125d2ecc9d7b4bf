package admission_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
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

	skadm "github.com/skiff-fs/skiff/webhook/admission"
	"github.com/skiff-fs/skiff/webhook/inject"
)

// failingReader stands for an API server that cannot be reached: every
// lookup fails. (Lookups against a real API server are tested in e2e/.)
type failingReader struct{ calls int }

func (r *failingReader) Get(context.Context, client.ObjectKey, client.Object, ...client.GetOption) error {
	r.calls++
	return errors.New("connection refused")
}

func (r *failingReader) List(context.Context, client.ObjectList, ...client.ListOption) error {
	r.calls++
	return errors.New("connection refused")
}

func newHandler(t *testing.T, r client.Reader) *skadm.Handler {
	t.Helper()
	h, err := skadm.New(inject.DefaultConfig("skiff:test"), r, slog.New(slog.NewTextHandler(io.Discard, nil)), nil)
	if err != nil {
		t.Fatal(err)
	}
	return h
}

const podJSON = `{"apiVersion":"v1","kind":"Pod","metadata":{"generateName":"job-","labels":{"skiff.io/inject":"true"}},
"spec":{"futureField":{"keep":"me"},"initContainers":[{"name":"prep","image":"busybox","futureContainerField":1}],"containers":[{"name":"app","image":"busybox","futureContainerField":2,"volumeMounts":[{"name":"data","mountPath":"/data"}]}],
"volumes":[{"name":"data","csi":{"driver":"csi.skiff.io","volumeAttributes":{"secretName":"s"}}}]}}`

func request(raw string) admission.Request {
	return admission.Request{AdmissionRequest: admissionv1.AdmissionRequest{
		UID:       "1",
		Kind:      metav1.GroupVersionKind{Version: "v1", Kind: "Pod"},
		Resource:  metav1.GroupVersionResource{Version: "v1", Resource: "pods"},
		Namespace: "ml",
		Operation: admissionv1.Create,
		Object:    runtime.RawExtension{Raw: []byte(raw)},
	}}
}

// apply applies the response's patch to raw.
func apply(t *testing.T, raw string, resp admission.Response) []byte {
	t.Helper()
	pj, err := json.Marshal(resp.Patches)
	if err != nil {
		t.Fatal(err)
	}
	p, err := jsonpatch.DecodePatch(pj)
	if err != nil {
		t.Fatal(err)
	}
	out, err := p.Apply([]byte(raw))
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func TestInjectPatch(t *testing.T) {
	r := &failingReader{}
	h := newHandler(t, r)
	resp := h.Handle(context.Background(), request(podJSON))
	if !resp.Allowed || len(resp.Patches) == 0 {
		t.Fatalf("want an allowed patch, got %+v", resp.AdmissionResponse)
	}
	if r.calls != 0 {
		t.Fatalf("%d API calls for a pod without claims", r.calls)
	}
	patched := apply(t, podJSON, resp)
	// The field this build does not know survives.
	var generic map[string]any
	if err := json.Unmarshal(patched, &generic); err != nil {
		t.Fatal(err)
	}
	spec := generic["spec"].(map[string]any)
	if d := cmp.Diff(map[string]any{"keep": "me"}, spec["futureField"]); d != "" {
		t.Fatalf("unknown field lost:\n%s", d)
	}
	inits, apps := spec["initContainers"].([]any), spec["containers"].([]any)
	if len(inits) != 2 || inits[0].(map[string]any)["name"] != "skiff-sidecar" || inits[1].(map[string]any)["futureContainerField"] != 1.0 || apps[0].(map[string]any)["futureContainerField"] != 2.0 {
		t.Fatalf("unknown container fields lost or sidecar misplaced: %v / %v", inits, apps)
	}
	// The patched pod is inject.Inject's result (namespace aside: the
	// patch never adds it, the API server does).
	var in, got corev1.Pod
	if err := json.Unmarshal([]byte(podJSON), &in); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(patched, &got); err != nil {
		t.Fatal(err)
	}
	in.Namespace = "ml"
	want, changed, err := inject.Inject(&in, nil, inject.DefaultConfig("skiff:test"))
	if err != nil || !changed {
		t.Fatal(changed, err)
	}
	want.Namespace = ""
	if d := cmp.Diff(want, &got); d != "" {
		t.Fatalf("patched pod differs from Inject (-want +got):\n%s", d)
	}
	// Reinvocation on the patched pod: no patch.
	again := h.Handle(context.Background(), request(string(patched)))
	if !again.Allowed || len(again.Patches) != 0 {
		t.Fatalf("second call: %+v %v", again.AdmissionResponse, again.Patches)
	}
}

func TestResponses(t *testing.T) {
	fargate := strings.Replace(podJSON, `"labels"`, `"annotations":{"skiff.io/platform":"fargate"},"labels"`, 1)
	withClaim := `{"metadata":{"name":"p"},"spec":{"containers":[{"name":"a","image":"x"}],"volumes":[{"name":"v","persistentVolumeClaim":{"claimName":"c"}}]}}`
	optedOut := strings.Replace(withClaim, `"name":"p"`, `"name":"p","labels":{"skiff.io/inject":"false"}`, 1)
	for _, tc := range []struct {
		name    string
		req     admission.Request
		allowed bool
		code    int32
		reason  string
	}{
		{"malformed", request(`{"spec":`), false, http.StatusBadRequest, "decode pod"},
		{"wrong type", request(`{"spec":{"containers":"no"}}`), false, http.StatusBadRequest, "decode pod"},
		{"empty", request(``), false, http.StatusBadRequest, "no pod"},
		{"denied profile", request(fargate), false, http.StatusForbidden, "EKS Fargate"},
		{"lookup fails", request(withClaim), false, http.StatusInternalServerError, "connection refused"},
		{"opted out needs no lookup", request(optedOut), true, http.StatusOK, ""},
		{"not a pod", func() admission.Request {
			r := request(`{}`)
			r.Kind.Kind = "Service"
			return r
		}(), true, http.StatusOK, "only pod creation"},
		{"update", func() admission.Request {
			r := request(podJSON)
			r.Operation = admissionv1.Update
			return r
		}(), true, http.StatusOK, "only pod creation"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp := newHandler(t, &failingReader{}).Handle(context.Background(), tc.req)
			if resp.Allowed != tc.allowed || len(resp.Patches) != 0 {
				t.Fatalf("allowed=%v patches=%d, want allowed=%v and no patch", resp.Allowed, len(resp.Patches), tc.allowed)
			}
			code := int32(http.StatusOK)
			msg := ""
			if resp.Result != nil {
				code, msg = resp.Result.Code, resp.Result.Message
			}
			if code != tc.code || !strings.Contains(msg, tc.reason) {
				t.Fatalf("code %d message %q, want %d containing %q", code, msg, tc.code, tc.reason)
			}
		})
	}
}

// TestHTTP drives the handler through controller-runtime's webhook and
// LimitBody as the server does.
func TestHTTP(t *testing.T) {
	wh := &admission.Webhook{Handler: newHandler(t, &failingReader{})}
	srv := httptest.NewServer(skadm.LimitBody(wh, 64<<10))
	defer srv.Close()
	post := func(body []byte) (int, admissionv1.AdmissionReview) {
		resp, err := http.Post(srv.URL, "application/json", bytes.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var rev admissionv1.AdmissionReview
		b, _ := io.ReadAll(resp.Body)
		_ = json.Unmarshal(b, &rev)
		return resp.StatusCode, rev
	}
	review := func(raw string) []byte {
		r := request(raw)
		b, err := json.Marshal(admissionv1.AdmissionReview{
			TypeMeta: metav1.TypeMeta{APIVersion: "admission.k8s.io/v1", Kind: "AdmissionReview"},
			Request:  &r.AdmissionRequest,
		})
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	if code, rev := post(review(podJSON)); code != http.StatusOK || rev.Response == nil || !rev.Response.Allowed || len(rev.Response.Patch) == 0 {
		t.Fatalf("inject over HTTP: %d %+v", code, rev.Response)
	}
	if _, rev := post([]byte(`{"kind":`)); rev.Response == nil || rev.Response.Allowed || rev.Response.Result.Code != http.StatusBadRequest {
		t.Fatalf("malformed review: %+v", rev.Response)
	}
	big := review(strings.Replace(podJSON, `"keep":"me"`, `"keep":"`+strings.Repeat("x", 100<<10)+`"`, 1))
	if code, rev := post(big); code == http.StatusOK && (rev.Response == nil || rev.Response.Allowed) {
		t.Fatalf("oversized body accepted: %d %+v", code, rev.Response)
	}
}

func TestNewValidates(t *testing.T) {
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	if _, err := skadm.New(inject.Config{}, &failingReader{}, log, nil); err == nil {
		t.Error("no image accepted")
	}
	if _, err := skadm.New(inject.DefaultConfig("x"), nil, log, nil); err == nil {
		t.Error("nil reader accepted")
	}
}
