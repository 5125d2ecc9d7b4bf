package contract

import (
	"crypto/sha256"
	"encoding/hex"
	"path"
	"strconv"
	"strings"
)

// DriverName is the CSI driver name of skiff volumes, in inline CSI volumes,
// PersistentVolumes and StorageClasses.
const DriverName = "csi.skiff.io"

// Opt-in label and its values.
const (
	// LabelInject selects pods for injection: InjectPod on a pod,
	// InjectNamespace on a namespace; InjectOptOut on a pod opts it out.
	LabelInject     = "skiff.io/inject"
	InjectPod       = "true"
	InjectNamespace = "enabled"
	InjectOptOut    = "false"
)

// Pod annotations.
const (
	// AnnotationVolumes holds a JSON list of AnnotationVolume entries, for
	// runtimes whose validation forbids CSI volumes in pod templates.
	AnnotationVolumes = "skiff.io/volumes"
	// AnnotationPlatform names the platform profile: one of Platforms.
	AnnotationPlatform = "skiff.io/platform"
	// AnnotationCacheSize is the size limit of the block cache volume
	// (a resource quantity, e.g. "20Gi").
	AnnotationCacheSize = "skiff.io/cache-size"
	// Sidecar resource overrides (resource quantities).
	AnnotationSidecarCPURequest    = "skiff.io/sidecar-cpu-request"
	AnnotationSidecarCPULimit      = "skiff.io/sidecar-cpu-limit"
	AnnotationSidecarMemoryRequest = "skiff.io/sidecar-memory-request"
	AnnotationSidecarMemoryLimit   = "skiff.io/sidecar-memory-limit"
)

// Platform profiles, the values of AnnotationPlatform.
const (
	// PlatformDefault injects the privileged FUSE sidecar.
	PlatformDefault = "default"
	// PlatformFargate is EKS Fargate: no privileged containers, no
	// DaemonSets. Admission denies with the alternative.
	PlatformFargate = "fargate"
	// PlatformAutopilot is GKE Autopilot: no privileged containers without
	// an allowlist. Admission denies with the alternative.
	PlatformAutopilot = "autopilot"
)

// Platforms lists the known platform profiles.
var Platforms = []string{PlatformDefault, PlatformFargate, PlatformAutopilot}

// Volume attribute keys: the same keys describe a volume in inline CSI
// volumeAttributes, PV volumeAttributes and AnnotationVolumes entries.
const (
	AttrSecretName = "secretName" // required: the volume's Secret, in the pod's namespace
	AttrSubdir     = "subdir"     // optional: a sub-directory of the volume to mount
	AttrReadOnly   = "readOnly"   // optional: "true" mounts read-only
	AttrOptions    = "options"    // optional: comma-separated mount options
)

// Keys of the volume's Secret.
const (
	SecretKeyMetaURL           = "metaurl"                 // required
	SecretKeyPassphrase        = "passphrase"              // encrypted volumes
	SecretKeyGoogleCredentials = "google-credentials.json" // optional; else the pod's identity
)

// The sidecar container.
const (
	// SidecarName is the name of the injected native sidecar container.
	SidecarName = "skiff-sidecar"
	// EnvVolumes carries the volumes to mount, as MarshalVolumes writes them.
	EnvVolumes = "SKIFF_VOLUMES"
	// EnvProbePort carries the probe port when it is not DefaultProbePort.
	EnvProbePort = "SKIFF_PROBE_PORT"
	// DefaultProbePort serves PathReady, PathHealth and PathMetrics.
	DefaultProbePort = 9567
	// PathReady answers 200 only when every volume is mounted and answers
	// statfs within 2 s; PathHealth is liveness; PathMetrics is Prometheus.
	PathReady   = "/readyz"
	PathHealth  = "/healthz"
	PathMetrics = "/metrics"
	// ProbeCommand is the exec-probe equivalent of the HTTP probes:
	// "skiff-sidecar probe".
	ProbeCommand = "probe"
)

// Paths and volume names inside the pod.
const (
	// MountRoot is where the sidecar mounts each volume: MountRoot/<volume>.
	MountRoot = "/skiff"
	// SecretsRoot is where each volume's Secret is mounted read-only in the
	// sidecar: SecretsRoot/<volume>/.
	SecretsRoot = "/etc/skiff/secrets"
	// CacheVolumeName and CacheDir: the block cache volume and its mount.
	CacheVolumeName = "skiff-cache"
	CacheDir        = "/var/cache/skiff"
	// VolumePrefix prefixes the pod volumes the webhook adds.
	VolumePrefix = "skiff-"
)

// MountPath is the sidecar's mount point of the volume: /skiff/<volume>.
func MountPath(volume string) string { return path.Join(MountRoot, volume) }

// SecretDir is the sidecar's mount of the volume's Secret:
// /etc/skiff/secrets/<volume>.
func SecretDir(volume string) string { return path.Join(SecretsRoot, volume) }

// PodVolumeName is the name of the emptyDir that carries the volume from the
// sidecar to the apps: skiff-<volume>.
func PodVolumeName(volume string) string { return dnsLabel(VolumePrefix + volume) }

// SecretVolumeName is the name of the pod volume that mounts the volume's
// Secret into the sidecar: skiff-secret-<volume>.
func SecretVolumeName(volume string) string { return dnsLabel(VolumePrefix + "secret-" + volume) }

// SubPathVolume is the name of the extra skiff volume that serves a
// container's subPath of volume as a mount of its own:
// <volume>-sub-<hash of subPath>.
func SubPathVolume(volume, subPath string) string {
	return dnsLabel(volume + "-sub-" + shortHash(subPath))
}

// ProbePortString is the port formatted for EnvProbePort.
func ProbePortString(port int) string { return strconv.Itoa(port) }

// ParseOptions splits a comma-separated options value into its options,
// dropping empty items and surrounding spaces.
func ParseOptions(s string) []string {
	var out []string
	for _, o := range strings.Split(s, ",") {
		if o = strings.TrimSpace(o); o != "" {
			out = append(out, o)
		}
	}
	return out
}

// maxLabel is the length limit of a DNS label (RFC 1123), which Kubernetes
// applies to volume and container names.
const maxLabel = 63

// dnsLabel returns s, or when s is longer than a DNS label, a prefix of s
// and a hash of all of s, together 63 characters.
func dnsLabel(s string) string {
	if len(s) <= maxLabel {
		return s
	}
	h := shortHash(s)
	p := strings.TrimRight(s[:maxLabel-len(h)-1], "-")
	return p + "-" + h
}

func shortHash(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:4])
}
