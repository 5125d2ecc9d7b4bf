package inject

import (
	"errors"
	"fmt"
	"slices"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"

	"github.com/skiff-fs/skiff/sidecar/contract"
)

// Config is what the webhook operator chooses. The zero value of each field
// but Image means its documented default; call Validate (or Inject, which
// calls it) before use.
type Config struct {
	// Image of the sidecar (required).
	Image string
	// ImagePullPolicy of the sidecar; default IfNotPresent.
	ImagePullPolicy corev1.PullPolicy
	// Command of the sidecar; default ["skiff-sidecar"].
	Command []string
	// ProbePort is the sidecar's probe port; default contract.DefaultProbePort.
	// When a container of the pod declares that port, the next free one is
	// used.
	ProbePort int32
	// DefaultPlatform is the platform profile of pods without the
	// skiff.io/platform annotation; default contract.PlatformDefault.
	DefaultPlatform string
	// Requests and Limits of the sidecar; defaults: requests cpu 250m and
	// memory 512Mi, limits memory 2Gi (no CPU limit, to avoid throttling the
	// data path). Pod annotations skiff.io/sidecar-* override each value.
	Requests corev1.ResourceList
	Limits   corev1.ResourceList
	// GoMemLimitPercent of the sidecar's memory limit becomes GOMEMLIMIT;
	// default 90.
	GoMemLimitPercent int
	// CacheSize is the size limit of the cache emptyDir (or the storage
	// request of CacheVolumeClaimTemplate); default 10Gi. The pod annotation
	// skiff.io/cache-size overrides it.
	CacheSize resource.Quantity
	// CacheVolumeClaimTemplate, when set, makes the cache a generic
	// ephemeral volume from this template instead of an emptyDir (e.g. a
	// local NVMe storage class).
	CacheVolumeClaimTemplate *corev1.PersistentVolumeClaimTemplate
	// StartupTimeoutSeconds bounds how long the startup probe waits for
	// every volume to be mounted; default 300.
	StartupTimeoutSeconds int32
	// MinTerminationGracePeriodSeconds is the least grace period an injected
	// pod gets, so the sidecar can flush writes; default 60.
	MinTerminationGracePeriodSeconds int64
	// AfterSidecars names native sidecars (init containers with
	// restartPolicy Always) that must start before skiff, e.g. a service
	// mesh proxy the FUSE client's traffic goes through; default
	// ["istio-proxy"]. Set to an empty non-nil slice for none.
	AfterSidecars []string
}

// DefaultConfig returns the defaults with the given image.
func DefaultConfig(image string) Config {
	c := Config{Image: image}
	_ = c.Validate()
	return c
}

// Validate fills in defaults and checks the configuration.
func (c *Config) Validate() error {
	if c.Image == "" {
		return errors.New("inject: no sidecar image configured")
	}
	if c.ImagePullPolicy == "" {
		c.ImagePullPolicy = corev1.PullIfNotPresent
	}
	if len(c.Command) == 0 {
		c.Command = []string{"skiff-sidecar"}
	}
	if c.ProbePort == 0 {
		c.ProbePort = contract.DefaultProbePort
	}
	if c.ProbePort < 1 || c.ProbePort > 65535 {
		return fmt.Errorf("inject: probe port %d out of range", c.ProbePort)
	}
	if c.DefaultPlatform == "" {
		c.DefaultPlatform = contract.PlatformDefault
	}
	if !slices.Contains(contract.Platforms, c.DefaultPlatform) {
		return fmt.Errorf("inject: unknown default platform %q (known: %v)", c.DefaultPlatform, contract.Platforms)
	}
	if c.Requests == nil {
		c.Requests = corev1.ResourceList{
			corev1.ResourceCPU:    resource.MustParse("250m"),
			corev1.ResourceMemory: resource.MustParse("512Mi"),
		}
	}
	if c.Limits == nil {
		c.Limits = corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("2Gi")}
	}
	if c.GoMemLimitPercent == 0 {
		c.GoMemLimitPercent = 90
	}
	if c.GoMemLimitPercent < 1 || c.GoMemLimitPercent > 100 {
		return fmt.Errorf("inject: GOMEMLIMIT percent %d not in 1..100", c.GoMemLimitPercent)
	}
	if c.CacheSize.IsZero() {
		c.CacheSize = resource.MustParse("10Gi")
	}
	if c.StartupTimeoutSeconds == 0 {
		c.StartupTimeoutSeconds = 300
	}
	if c.StartupTimeoutSeconds < 1 {
		return fmt.Errorf("inject: startup timeout %ds must be positive", c.StartupTimeoutSeconds)
	}
	if c.MinTerminationGracePeriodSeconds == 0 {
		c.MinTerminationGracePeriodSeconds = 60
	}
	if c.AfterSidecars == nil {
		c.AfterSidecars = []string{"istio-proxy"}
	}
	return nil
}
