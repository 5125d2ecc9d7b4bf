package admission

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"

	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	"github.com/skiff-fs/skiff/sidecar/contract"
	"github.com/skiff-fs/skiff/webhook/inject"
)

// Path is where the handler is served.
const Path = "/mutate-pod"

// DefaultMaxRequestBytes bounds an AdmissionReview body: a pod is at most
// ~1.5 MiB in etcd and the review may carry it twice.
const DefaultMaxRequestBytes = 4 << 20

// Handler mutates pods. Create it with New.
type Handler struct {
	cfg    inject.Config
	reader client.Reader
	log    *slog.Logger
	stats  Recorder
}

// Recorder counts admission outcomes (for metrics); may be nil.
type Recorder interface {
	Record(outcome string)
}

// Outcomes passed to Recorder.
const (
	OutcomeInjected  = "injected"
	OutcomeUnchanged = "unchanged"
	OutcomeDenied    = "denied"
	OutcomeBad       = "bad_request"
	OutcomeError     = "error"
)

// New validates cfg and returns a handler reading claims through reader
// (an uncached API reader is enough: it needs only get on
// persistentvolumeclaims, persistentvolumes and storageclasses).
func New(cfg inject.Config, reader client.Reader, log *slog.Logger, stats Recorder) (*Handler, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if reader == nil {
		return nil, errors.New("admission: no API reader")
	}
	if log == nil {
		return nil, errors.New("admission: no logger")
	}
	return &Handler{cfg: cfg, reader: reader, log: log, stats: stats}, nil
}

func (h *Handler) record(outcome string) {
	if h.stats != nil {
		h.stats.Record(outcome)
	}
}

// Handle implements admission.Handler.
func (h *Handler) Handle(ctx context.Context, req admission.Request) admission.Response {
	log := h.log.With("uid", req.UID, "namespace", req.Namespace, "name", req.Name, "operation", req.Operation, "dryRun", req.DryRun != nil && *req.DryRun)
	if req.Kind.Group != "" || req.Kind.Kind != "Pod" || req.Operation != admissionv1.Create || req.SubResource != "" {
		return admission.Allowed("skiff: only pod creation is mutated")
	}
	if len(req.Object.Raw) == 0 {
		h.record(OutcomeBad)
		return admission.Errored(http.StatusBadRequest, errors.New("skiff: admission request carries no pod"))
	}
	pod := &corev1.Pod{}
	if err := json.Unmarshal(req.Object.Raw, pod); err != nil {
		h.record(OutcomeBad)
		return admission.Errored(http.StatusBadRequest, fmt.Errorf("skiff: decode pod: %w", err))
	}
	if pod.Namespace == "" {
		pod.Namespace = req.Namespace // pods from controllers carry none
	}
	if pod.Name != "" {
		log = log.With("pod", pod.Name)
	} else {
		log = log.With("generateName", pod.GenerateName)
	}
	resp, outcome := h.mutate(ctx, req.Object.Raw, pod, log)
	h.record(outcome)
	return resp
}

func (h *Handler) mutate(ctx context.Context, raw []byte, pod *corev1.Pod, log *slog.Logger) (admission.Response, string) {
	var claims inject.Claims
	if !inject.Injected(pod) && pod.Labels[contract.LabelInject] != contract.InjectOptOut {
		var err error
		if claims, err = LookupClaims(ctx, h.reader, pod); err != nil {
			log.Error("claim lookup failed", "err", err)
			return admission.Errored(http.StatusInternalServerError, err), OutcomeError
		}
	}
	out, changed, err := inject.Inject(pod, claims, h.cfg)
	if d, ok := inject.IsDenied(err); ok {
		log.Info("denied", "reason", d.Reason)
		return admission.Denied(d.Reason), OutcomeDenied
	}
	if err != nil {
		log.Error("inject failed", "err", err)
		return admission.Errored(http.StatusInternalServerError, err), OutcomeError
	}
	if !changed {
		return admission.Allowed(""), OutcomeUnchanged
	}
	patch, _, err := Patch(raw, pod, out)
	if err != nil {
		log.Error("patch failed", "err", err)
		return admission.Errored(http.StatusInternalServerError, err), OutcomeError
	}
	log.Info("injected", "operations", len(patch))
	return admission.Patched("", patch...), OutcomeInjected
}

// LookupClaims gets what inject.Resolve needs for each claim the pod
// references: the claim, its bound volume and, when unbound, its
// StorageClass's provisioner. Missing objects are recorded as such; other
// API errors are returned.
func LookupClaims(ctx context.Context, r client.Reader, pod *corev1.Pod) (inject.Claims, error) {
	names := inject.ClaimNames(pod)
	claims := make(inject.Claims, len(names))
	for _, name := range names {
		var c inject.Claim
		pvc := &corev1.PersistentVolumeClaim{}
		err := r.Get(ctx, types.NamespacedName{Namespace: pod.Namespace, Name: name}, pvc)
		switch {
		case apierrors.IsNotFound(err):
			claims[name] = c
			continue
		case err != nil:
			return nil, fmt.Errorf("skiff: get PersistentVolumeClaim %s/%s: %w", pod.Namespace, name, err)
		}
		c.PVC = pvc
		// A claim that names its volume is bound, or pre-bound and about
		// to be: the volume decides, unless it is claimed by another.
		if pvc.Spec.VolumeName != "" {
			pv := &corev1.PersistentVolume{}
			err := r.Get(ctx, types.NamespacedName{Name: pvc.Spec.VolumeName}, pv)
			switch {
			case apierrors.IsNotFound(err):
			case err != nil:
				return nil, fmt.Errorf("skiff: get PersistentVolume %s: %w", pvc.Spec.VolumeName, err)
			case pv.Spec.ClaimRef != nil && (pv.Spec.ClaimRef.Namespace != pvc.Namespace || pv.Spec.ClaimRef.Name != pvc.Name):
			default:
				c.PV = pv
			}
		}
		if c.PV == nil && pvc.Spec.StorageClassName != nil && *pvc.Spec.StorageClassName != "" {
			sc := &storagev1.StorageClass{}
			err := r.Get(ctx, types.NamespacedName{Name: *pvc.Spec.StorageClassName}, sc)
			switch {
			case apierrors.IsNotFound(err):
			case err != nil:
				return nil, fmt.Errorf("skiff: get StorageClass %s: %w", *pvc.Spec.StorageClassName, err)
			default:
				c.Provisioner = sc.Provisioner
			}
		}
		claims[name] = c
	}
	return claims, nil
}

// LimitBody refuses request bodies larger than max bytes with 413 before
// they reach the admission handler (which would otherwise read up to
// controller-runtime's 7 MiB).
func LimitBody(next http.Handler, max int64) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.ContentLength > max {
			http.Error(w, fmt.Sprintf("request body of %d bytes exceeds the limit of %d", r.ContentLength, max), http.StatusRequestEntityTooLarge)
			return
		}
		r.Body = http.MaxBytesReader(w, r.Body, max)
		next.ServeHTTP(w, r)
	})
}
