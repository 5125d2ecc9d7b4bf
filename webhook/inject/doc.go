// Package inject is the pure part of the skiff admission webhook: a pod (and
// the PersistentVolumeClaims it references, fetched by the caller) in, the
// pod with the skiff FUSE sidecar injected out. It does no I/O and imports
// only k8s.io/api, k8s.io/apimachinery and sidecar/contract (DESIGN.md §2),
// so the webhook server and the offline `skiff inject` share it.
//
// Guarantees of Inject (and of Resolve followed by Mutate):
//   - The input pod is never modified; the result is a deep copy.
//   - Idempotent: a pod that already carries the skiff-sidecar container is
//     returned unchanged with changed=false, so reinvocation and a second
//     call yield no patch.
//   - Untouched unless needed: a pod labelled skiff.io/inject=false, or one
//     that references no skiff volume, is returned unchanged. An injected
//     pod differs from its input only in: the skiff volumes (replaced by
//     emptyDirs named skiff-<volume>) and the mounts of them, the added
//     volumes (secret, cache, sub-path emptyDirs), the sidecar in
//     initContainers, and a terminationGracePeriodSeconds raised to the
//     configured minimum.
//   - No Secret is copied: credentials reach the sidecar only through a
//     secret volume referencing the user's Secret by name.
//   - Every refusal is a *DeniedError whose Reason tells the user what to
//     change; any other error is an internal failure.
//   - Deterministic: the same input and Config give byte-identical output
//     (no maps are iterated into the result).
package inject
