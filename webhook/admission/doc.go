// Package admission is the skiff mutating admission handler: it decodes the
// AdmissionReview's pod, looks up the PersistentVolumeClaims (and their
// PersistentVolumes and StorageClasses) the pod references with read-only
// GETs, calls inject.Inject, and answers with a JSON patch.
//
// Guarantees:
//   - Responses: a body that is not a pod is Errored(400); a policy refusal
//     (inject.DeniedError) is Denied with the reason; a failed lookup or any
//     other internal failure is Errored(500). Nothing else is returned.
//   - No side effects: the handler only reads from the API server, so
//     dry-run requests are as safe as real ones.
//   - The patch touches only what the injection changed: it is the diff
//     between the decoded pod and the mutated pod, both serialized from the
//     same Go types, so fields this build does not know (from a newer API
//     server) are never removed.
//   - A pod the webhook already injected gets an empty response (no patch),
//     so reinvocation is harmless.
//   - Request bodies above MaxRequestBytes are refused before decoding
//     (LimitBody).
package admission
