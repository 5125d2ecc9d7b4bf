// Package e2e tests the skiff webhook end to end against a real
// kube-apiserver and etcd (driven by controller-runtime's envtest) and a
// real kube-controller-manager, all built from Go modules by
// e2e/k8sbin/build.sh:
//
//	KUBEBUILDER_ASSETS=$(e2e/k8sbin/build.sh) go test ./...   # in e2e/
//
// The webhook is the real server (webhook/server) registered through the
// MutatingWebhookConfiguration rendered from manifests/ with kustomize;
// every other object of manifests/ (RBAC, Deployment, PDB,
// ValidatingAdmissionPolicy, ...) and of manifests/examples is applied to
// the API server, so its validation checks them too. The tests fail (never
// skip) when the binaries are missing.
package e2e
