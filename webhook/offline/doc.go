// Package offline applies the skiff injection to Kubernetes manifests
// without a cluster, for GitOps: `skiff inject -f FILE`.
//
// Guarantees:
//   - The mutation is the webhook's: the same inject.Inject on the pod (or
//     pod template) and the same patch construction as the admission
//     handler, applied to the document's own JSON, so fields this build does
//     not know are kept.
//   - Documents that are not a Pod, Deployment, StatefulSet, DaemonSet,
//     ReplicaSet, Job or CronJob, and workloads that are not selected (pod
//     label skiff.io/inject=true, or Options.NamespaceEnabled), opted out, or
//     reference no skiff volume, are written back byte for byte.
//   - A refusal (*inject.DeniedError) or a PersistentVolumeClaim that the
//     given objects do not resolve is an error naming the document; nothing
//     is guessed.
package offline
