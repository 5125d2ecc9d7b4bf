package inject

import (
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"

	"github.com/skiff-fs/skiff/sidecar/contract"
)

// Platform returns the pod's platform profile: its skiff.io/platform
// annotation, else the configured default.
func Platform(pod *corev1.Pod, cfg Config) string {
	if p, ok := pod.Annotations[contract.AnnotationPlatform]; ok {
		return strings.TrimSpace(p)
	}
	return cfg.DefaultPlatform
}

// checkPlatform refuses pods whose platform cannot run a privileged FUSE
// sidecar, instead of admitting a pod that would never start.
func checkPlatform(pod *corev1.Pod, cfg Config, specs []Spec) error {
	names := make([]string, len(specs))
	for i, s := range specs {
		names[i] = s.Name
	}
	vols := strings.Join(names, ", ")
	switch p := Platform(pod, cfg); p {
	case contract.PlatformDefault:
		return nil
	case contract.PlatformFargate:
		return denyf("pod uses skiff volume(s) %s, but platform profile %q (EKS Fargate) cannot serve them: the skiff sidecar needs a privileged container to mount FUSE, which Fargate forbids, and Fargate runs no DaemonSets for the skiff CSI node plugin. Run the pod on an EC2 node group (make your Fargate profile's selectors not match it) and use the skiff CSI driver there, or, if the pod does not run on Fargate, annotate it %s=%s", vols, p, contract.AnnotationPlatform, contract.PlatformDefault)
	case contract.PlatformAutopilot:
		return denyf("pod uses skiff volume(s) %s, but platform profile %q (GKE Autopilot) cannot serve them: Autopilot rejects privileged containers, which the skiff sidecar needs to mount FUSE, unless the workload is on an allowlist. Run the pod on a GKE Standard node pool with the skiff CSI driver, or, if your cluster allowlists the skiff sidecar image, annotate the pod %s=%s", vols, p, contract.AnnotationPlatform, contract.PlatformDefault)
	default:
		if !slices.Contains(contract.Platforms, p) {
			return denyf("annotation %s=%q names no known platform profile; use one of %s", contract.AnnotationPlatform, p, strings.Join(contract.Platforms, ", "))
		}
		return nil
	}
}
