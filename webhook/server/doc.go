// Package server runs the skiff admission webhook: a controller-runtime
// manager with the webhook server (TLS, the pod mutation at
// admission.Path), /healthz and /readyz on the health address, and
// /metrics (controller-runtime's webhook metrics plus
// skiff_webhook_admissions_total by outcome).
//
// Certificates come from one of two places:
//   - CertsSelf: open-policy-agent/cert-controller generates a CA and a
//     serving certificate into a Secret, rotates them before they expire,
//     and patches the CA bundle into the MutatingWebhookConfiguration; a
//     small sync copies the Secret's tls.crt/tls.key into CertDir (no wait
//     for the kubelet to refresh a mounted Secret). The webhook server starts
//     only once the certificate is in place and the CA bundle injected, so
//     /readyz fails until then.
//   - CertsExternal: the files in CertDir are provided (cert-manager, or a
//     test), and reloaded by controller-runtime when they change.
//
// Guarantees: Run returns only when ctx is cancelled or a component fails,
// and every goroutine it starts has ended by then.
package server
