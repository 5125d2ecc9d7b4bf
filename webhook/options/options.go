package options

import (
	"fmt"
	"strings"

	"github.com/spf13/pflag"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"

	"github.com/skiff-fs/skiff/sidecar/contract"
	"github.com/skiff-fs/skiff/webhook/inject"
)

// DefaultImage is the sidecar image when --sidecar-image is not given.
const DefaultImage = "ghcr.io/skiff-fs/skiff-sidecar:latest"

// Inject holds the flag values of an inject.Config.
type Inject struct {
	image, pullPolicy, platform    string
	cacheSize, cacheStorageClass   string
	afterSidecars                  []string
	probePort, startupTimeout      int32
	memPercent                     int
	minGrace                       int64
	cpuReq, cpuLim, memReq, memLim string
}

// Bind registers the injection flags on fs.
func Bind(fs *pflag.FlagSet) *Inject {
	d := inject.DefaultConfig("x")
	o := &Inject{}
	fs.StringVar(&o.image, "sidecar-image", DefaultImage, "image of the skiff sidecar")
	fs.StringVar(&o.pullPolicy, "sidecar-image-pull-policy", string(d.ImagePullPolicy), "imagePullPolicy of the sidecar")
	fs.StringVar(&o.platform, "default-platform", d.DefaultPlatform, "platform profile of pods without the "+contract.AnnotationPlatform+" annotation: "+strings.Join(contract.Platforms, ", "))
	fs.StringVar(&o.cacheSize, "cache-size", d.CacheSize.String(), "size limit of the sidecar's block cache (pod annotation "+contract.AnnotationCacheSize+" overrides)")
	fs.StringVar(&o.cacheStorageClass, "cache-storage-class", "", "make the cache a generic ephemeral volume of this StorageClass instead of an emptyDir")
	fs.StringSliceVar(&o.afterSidecars, "after-sidecars", d.AfterSidecars, "native sidecars (e.g. a mesh proxy) the skiff sidecar starts after")
	fs.Int32Var(&o.probePort, "probe-port", d.ProbePort, "port of the sidecar's probes (the next free one if a container declares it)")
	fs.Int32Var(&o.startupTimeout, "startup-timeout", d.StartupTimeoutSeconds, "seconds the startup probe waits for every volume to mount")
	fs.IntVar(&o.memPercent, "gomemlimit-percent", d.GoMemLimitPercent, "GOMEMLIMIT of the sidecar as a percentage of its memory limit")
	fs.Int64Var(&o.minGrace, "min-termination-grace-period", d.MinTerminationGracePeriodSeconds, "least terminationGracePeriodSeconds of an injected pod, to flush writes")
	q := func(l corev1.ResourceList, n corev1.ResourceName) string {
		if v, ok := l[n]; ok {
			return v.String()
		}
		return ""
	}
	fs.StringVar(&o.cpuReq, "sidecar-cpu-request", q(d.Requests, corev1.ResourceCPU), "sidecar CPU request (\"\" for none)")
	fs.StringVar(&o.cpuLim, "sidecar-cpu-limit", q(d.Limits, corev1.ResourceCPU), "sidecar CPU limit (\"\" for none)")
	fs.StringVar(&o.memReq, "sidecar-memory-request", q(d.Requests, corev1.ResourceMemory), "sidecar memory request (\"\" for none)")
	fs.StringVar(&o.memLim, "sidecar-memory-limit", q(d.Limits, corev1.ResourceMemory), "sidecar memory limit (\"\" for none)")
	return o
}

// Config turns the flag values into a validated inject.Config.
func (o *Inject) Config() (inject.Config, error) {
	c := inject.Config{
		Image:                            o.image,
		ImagePullPolicy:                  corev1.PullPolicy(o.pullPolicy),
		DefaultPlatform:                  o.platform,
		ProbePort:                        o.probePort,
		StartupTimeoutSeconds:            o.startupTimeout,
		GoMemLimitPercent:                o.memPercent,
		MinTerminationGracePeriodSeconds: o.minGrace,
		AfterSidecars:                    append([]string{}, o.afterSidecars...),
		Requests:                         corev1.ResourceList{},
		Limits:                           corev1.ResourceList{},
	}
	switch c.ImagePullPolicy {
	case corev1.PullAlways, corev1.PullIfNotPresent, corev1.PullNever:
	default:
		return c, fmt.Errorf("--sidecar-image-pull-policy %q: want Always, IfNotPresent or Never", o.pullPolicy)
	}
	for _, r := range []struct {
		flag, val string
		list      corev1.ResourceList
		name      corev1.ResourceName
	}{
		{"sidecar-cpu-request", o.cpuReq, c.Requests, corev1.ResourceCPU},
		{"sidecar-cpu-limit", o.cpuLim, c.Limits, corev1.ResourceCPU},
		{"sidecar-memory-request", o.memReq, c.Requests, corev1.ResourceMemory},
		{"sidecar-memory-limit", o.memLim, c.Limits, corev1.ResourceMemory},
	} {
		if r.val == "" {
			continue
		}
		v, err := resource.ParseQuantity(r.val)
		if err != nil {
			return c, fmt.Errorf("--%s %q: %v", r.flag, r.val, err)
		}
		r.list[r.name] = v
	}
	size, err := resource.ParseQuantity(o.cacheSize)
	if err != nil || size.Sign() <= 0 {
		return c, fmt.Errorf("--cache-size %q: want a positive quantity such as 10Gi", o.cacheSize)
	}
	c.CacheSize = size
	if o.cacheStorageClass != "" {
		sc := o.cacheStorageClass
		c.CacheVolumeClaimTemplate = &corev1.PersistentVolumeClaimTemplate{Spec: corev1.PersistentVolumeClaimSpec{
			AccessModes:      []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
			StorageClassName: &sc,
		}}
	}
	if err := c.Validate(); err != nil {
		return c, err
	}
	return c, nil
}
