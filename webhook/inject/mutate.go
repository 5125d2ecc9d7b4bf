package inject

import (
	"fmt"
	"path"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/skiff-fs/skiff/sidecar/contract"
)

// Inject resolves the pod's skiff volumes and mutates the pod. It returns
// a deep copy of the pod, whether anything changed, and a *DeniedError when
// the pod must be refused. claims must hold every name of ClaimNames(pod)
// that may be a skiff claim (the webhook looks them all up; offline tools
// may pass what they know).
func Inject(pod *corev1.Pod, claims Claims, cfg Config) (*corev1.Pod, bool, error) {
	if err := cfg.Validate(); err != nil {
		return nil, false, err
	}
	out := pod.DeepCopy()
	if Injected(pod) || pod.Labels[contract.LabelInject] == contract.InjectOptOut {
		return out, false, nil
	}
	specs, err := Resolve(pod, claims)
	if err != nil || len(specs) == 0 {
		return out, false, err
	}
	if err := checkPlatform(pod, cfg, specs); err != nil {
		return nil, false, err
	}
	if err := mutate(out, specs, cfg); err != nil {
		return nil, false, err
	}
	return out, true, nil
}

// Mutate injects the sidecar for already resolved specs. Like Inject it
// leaves an injected or opted-out pod (or empty specs) unchanged.
func Mutate(pod *corev1.Pod, specs []Spec, cfg Config) (*corev1.Pod, bool, error) {
	if err := cfg.Validate(); err != nil {
		return nil, false, err
	}
	out := pod.DeepCopy()
	if Injected(pod) || pod.Labels[contract.LabelInject] == contract.InjectOptOut || len(specs) == 0 {
		return out, false, nil
	}
	if err := checkPlatform(pod, cfg, specs); err != nil {
		return nil, false, err
	}
	if err := mutate(out, specs, cfg); err != nil {
		return nil, false, err
	}
	return out, true, nil
}

// Injected reports whether the pod already carries the skiff sidecar.
func Injected(pod *corev1.Pod) bool {
	for _, c := range pod.Spec.InitContainers {
		if c.Name == contract.SidecarName {
			return true
		}
	}
	for _, c := range pod.Spec.Containers {
		if c.Name == contract.SidecarName {
			return true
		}
	}
	return false
}

// sidecarVolume is one entry of SKIFF_VOLUMES with the pod volume carrying it.
type sidecarVolume struct {
	vol       contract.Volume
	podVolume string
	consumers int // container mounts of it
	readOnly  int // of which read-only
}

type mutation struct {
	pod   *corev1.Pod
	cfg   Config
	specs map[string]*Spec
	// sidecar volumes in order, by name
	order []string
	vols  map[string]*sidecarVolume
	// names of pod volumes that exist or are added, to refuse clashes
	names map[string]bool
	added []corev1.Volume
}

func mutate(pod *corev1.Pod, specs []Spec, cfg Config) error {
	m := &mutation{pod: pod, cfg: cfg, specs: map[string]*Spec{}, vols: map[string]*sidecarVolume{}, names: map[string]bool{}}
	for _, v := range pod.Spec.Volumes {
		m.names[v.Name] = true
	}
	res, err := m.resources()
	if err != nil {
		return err
	}
	cache, err := m.cacheVolume()
	if err != nil {
		return err
	}
	for i := range specs {
		s := &specs[i]
		m.specs[s.Name] = s
		if _, err := m.addSidecarVolume(s, s.Name, s.Subdir); err != nil {
			return err
		}
	}
	// Replace CSI and PVC volumes in place by their emptyDirs.
	for i, v := range pod.Spec.Volumes {
		s, ok := m.specs[v.Name]
		if !ok || s.Source == SourceAnnotation {
			continue
		}
		pod.Spec.Volumes[i] = corev1.Volume{Name: contract.PodVolumeName(v.Name), VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}}
		delete(m.names, v.Name)
	}
	for _, name := range m.order {
		sv := m.vols[name]
		if m.specs[name] != nil && m.specs[name].Source != SourceAnnotation {
			if m.names[sv.podVolume] {
				return denyf("volume %q: the pod already has a volume named %q, which skiff needs for it; rename one of them", name, sv.podVolume)
			}
			m.names[sv.podVolume] = true
		}
	}
	// Annotation volumes: add mounts to their containers.
	for _, s := range specs {
		if s.Source != SourceAnnotation {
			continue
		}
		if err := m.addVolume(corev1.Volume{Name: contract.PodVolumeName(s.Name), VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}}); err != nil {
			return err
		}
		targets := s.Containers
		if len(targets) == 0 {
			if len(pod.Spec.Containers) == 0 {
				return denyf("annotation %s: volume %q: the pod has no container to mount it in", contract.AnnotationVolumes, s.Name)
			}
			targets = []string{pod.Spec.Containers[0].Name}
		}
		for _, t := range targets {
			c := m.container(t)
			if c == nil {
				return denyf("annotation %s: volume %q names container %q, which the pod does not have", contract.AnnotationVolumes, s.Name, t)
			}
			for _, vm := range c.VolumeMounts {
				if path.Clean(vm.MountPath) == s.MountPath {
					return denyf("annotation %s: volume %q: container %q already mounts %q at %s", contract.AnnotationVolumes, s.Name, t, vm.Name, s.MountPath)
				}
			}
			c.VolumeMounts = append(c.VolumeMounts, corev1.VolumeMount{Name: s.Name, MountPath: s.MountPath, ReadOnly: s.ReadOnly})
		}
	}
	// Rewrite every mount of a skiff volume, in init then app containers.
	for i := range pod.Spec.InitContainers {
		if err := m.rewriteMounts(&pod.Spec.InitContainers[i]); err != nil {
			return err
		}
	}
	for i := range pod.Spec.Containers {
		if err := m.rewriteMounts(&pod.Spec.Containers[i]); err != nil {
			return err
		}
	}
	// Secret volumes, one per resolved spec, then the cache.
	for _, s := range specs {
		mode := int32(0o400)
		if err := m.addVolume(corev1.Volume{Name: contract.SecretVolumeName(s.Name), VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{SecretName: s.SecretName, DefaultMode: &mode}}}); err != nil {
			return err
		}
	}
	if err := m.addVolume(cache); err != nil {
		return err
	}
	pod.Spec.Volumes = append(pod.Spec.Volumes, m.added...)

	sidecar, err := m.sidecar(specs, res)
	if err != nil {
		return err
	}
	at := m.insertIndex()
	pod.Spec.InitContainers = slices.Insert(pod.Spec.InitContainers, at, sidecar)

	grace := int64(corev1.DefaultTerminationGracePeriodSeconds)
	if pod.Spec.TerminationGracePeriodSeconds != nil {
		grace = *pod.Spec.TerminationGracePeriodSeconds
	}
	if grace < m.cfg.MinTerminationGracePeriodSeconds {
		g := m.cfg.MinTerminationGracePeriodSeconds
		pod.Spec.TerminationGracePeriodSeconds = &g
	}
	return nil
}

func (m *mutation) container(name string) *corev1.Container {
	for i := range m.pod.Spec.Containers {
		if m.pod.Spec.Containers[i].Name == name {
			return &m.pod.Spec.Containers[i]
		}
	}
	for i := range m.pod.Spec.InitContainers {
		if m.pod.Spec.InitContainers[i].Name == name {
			return &m.pod.Spec.InitContainers[i]
		}
	}
	return nil
}

func (m *mutation) addVolume(v corev1.Volume) error {
	if m.names[v.Name] {
		return denyf("the pod already has a volume named %q, which skiff needs; rename it", v.Name)
	}
	m.names[v.Name] = true
	m.added = append(m.added, v)
	return nil
}

// addSidecarVolume registers a file system mount of the sidecar: the
// volume itself, or a sub-path of it served as a mount of its own.
func (m *mutation) addSidecarVolume(s *Spec, name, subdir string) (*sidecarVolume, error) {
	if sv, ok := m.vols[name]; ok {
		return sv, nil
	}
	sv := &sidecarVolume{
		vol: contract.Volume{
			Name:      name,
			MountPath: contract.MountPath(name),
			SecretDir: contract.SecretDir(s.Name),
			Subdir:    subdir,
			ReadOnly:  s.ReadOnly,
			Options:   slices.Clone(s.Options),
		},
		podVolume: contract.PodVolumeName(name),
	}
	if err := sv.vol.Validate(); err != nil {
		return nil, denyf("volume %q: %v", s.Name, err)
	}
	m.vols[name] = sv
	m.order = append(m.order, name)
	return sv, nil
}

func (m *mutation) rewriteMounts(c *corev1.Container) error {
	for i := range c.VolumeMounts {
		vm := &c.VolumeMounts[i]
		s, ok := m.specs[vm.Name]
		if !ok {
			continue
		}
		if vm.SubPathExpr != "" {
			return denyf("container %q mounts skiff volume %q with subPathExpr, which skiff cannot serve (it is expanded on the node); use %s=%q on the volume or a subPath", c.Name, vm.Name, contract.AttrSubdir, vm.SubPathExpr)
		}
		if vm.MountPropagation != nil && *vm.MountPropagation == corev1.MountPropagationBidirectional {
			return denyf("container %q mounts skiff volume %q with mountPropagation Bidirectional; only the skiff sidecar may, remove it", c.Name, vm.Name)
		}
		sv := m.vols[s.Name]
		if vm.SubPath != "" {
			sub := strings.Trim(path.Clean(vm.SubPath), "/")
			if err := contract.ValidSubdir(sub); err != nil {
				return denyf("container %q: subPath of skiff volume %q: %v", c.Name, vm.Name, err)
			}
			full := sub
			if s.Subdir != "" {
				full = s.Subdir + "/" + sub
			}
			var err error
			if sv, err = m.addSidecarVolume(s, contract.SubPathVolume(s.Name, sub), full); err != nil {
				return err
			}
			if !m.names[sv.podVolume] {
				if err := m.addVolume(corev1.Volume{Name: sv.podVolume, VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}}); err != nil {
					return err
				}
			}
			vm.SubPath = ""
		}
		vm.Name = sv.podVolume
		p := corev1.MountPropagationHostToContainer
		vm.MountPropagation = &p
		sv.consumers++
		if vm.ReadOnly {
			sv.readOnly++
		}
	}
	return nil
}

// insertIndex places the sidecar first among init containers, after any
// configured native sidecar (a mesh proxy it needs), but before the first
// init container that mounts a skiff volume.
func (m *mutation) insertIndex() int {
	at := 0
	for i, c := range m.pod.Spec.InitContainers {
		if slices.Contains(m.cfg.AfterSidecars, c.Name) && c.RestartPolicy != nil && *c.RestartPolicy == corev1.ContainerRestartPolicyAlways {
			at = i + 1
		}
	}
	for i, c := range m.pod.Spec.InitContainers {
		if i >= at {
			break
		}
		for _, vm := range c.VolumeMounts {
			if strings.HasPrefix(vm.Name, contract.VolumePrefix) && m.isSkiffPodVolume(vm.Name) {
				return i
			}
		}
	}
	return at
}

func (m *mutation) isSkiffPodVolume(name string) bool {
	for _, sv := range m.vols {
		if sv.podVolume == name {
			return true
		}
	}
	return false
}

func (m *mutation) probePort() int32 {
	used := map[int32]bool{}
	for _, cs := range [][]corev1.Container{m.pod.Spec.InitContainers, m.pod.Spec.Containers} {
		for _, c := range cs {
			for _, p := range c.Ports {
				used[p.ContainerPort] = true
			}
		}
	}
	port := m.cfg.ProbePort
	for used[port] && port < 65535 {
		port++
	}
	return port
}

func (m *mutation) sidecar(specs []Spec, res corev1.ResourceRequirements) (corev1.Container, error) {
	vols := make([]contract.Volume, 0, len(m.order))
	var mounts []corev1.VolumeMount
	bidi := corev1.MountPropagationBidirectional
	for _, name := range m.order {
		sv := m.vols[name]
		v := sv.vol
		// Mount read-only when every container mounts it read-only: a
		// read-only bind does not make the FUSE mount propagated into it
		// read-only.
		if sv.consumers > 0 && sv.readOnly == sv.consumers {
			v.ReadOnly = true
		}
		vols = append(vols, v)
		mounts = append(mounts, corev1.VolumeMount{Name: sv.podVolume, MountPath: v.MountPath, MountPropagation: &bidi})
	}
	for _, s := range specs {
		mounts = append(mounts, corev1.VolumeMount{Name: contract.SecretVolumeName(s.Name), MountPath: contract.SecretDir(s.Name), ReadOnly: true})
	}
	mounts = append(mounts, corev1.VolumeMount{Name: contract.CacheVolumeName, MountPath: contract.CacheDir})
	env, err := contract.MarshalVolumes(vols)
	if err != nil {
		return corev1.Container{}, fmt.Errorf("inject: %w", err)
	}
	port := m.probePort()
	envs := []corev1.EnvVar{
		{Name: contract.EnvVolumes, Value: env},
		{Name: contract.EnvProbePort, Value: contract.ProbePortString(int(port))},
	}
	if lim, ok := res.Limits[corev1.ResourceMemory]; ok && !lim.IsZero() {
		envs = append(envs, corev1.EnvVar{Name: "GOMEMLIMIT", Value: goMemLimit(lim.Value() / 100 * int64(m.cfg.GoMemLimitPercent))})
	}
	always := corev1.ContainerRestartPolicyAlways
	privileged, root, no, yes := true, int64(0), false, true
	probe := func(p string, period, failures int32) *corev1.Probe {
		return &corev1.Probe{
			ProbeHandler:     corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: p, Port: intstr.FromInt32(port), Scheme: corev1.URISchemeHTTP}},
			PeriodSeconds:    period,
			TimeoutSeconds:   3,
			SuccessThreshold: 1,
			FailureThreshold: failures,
		}
	}
	return corev1.Container{
		Name:            contract.SidecarName,
		Image:           m.cfg.Image,
		ImagePullPolicy: m.cfg.ImagePullPolicy,
		Command:         slices.Clone(m.cfg.Command),
		Env:             envs,
		Ports:           []corev1.ContainerPort{{Name: "skiff-probe", ContainerPort: port, Protocol: corev1.ProtocolTCP}},
		Resources:       res,
		VolumeMounts:    mounts,
		RestartPolicy:   &always,
		// Passes only when every volume is mounted: apps and later init
		// containers start after it.
		StartupProbe:             probe(contract.PathReady, 1, m.cfg.StartupTimeoutSeconds),
		LivenessProbe:            probe(contract.PathHealth, 10, 3),
		TerminationMessagePolicy: corev1.TerminationMessageFallbackToLogsOnError,
		// Set at container level so pod-level runAsNonRoot/runAsUser cannot
		// break the FUSE mount.
		SecurityContext: &corev1.SecurityContext{
			Privileged:               &privileged,
			AllowPrivilegeEscalation: &yes,
			RunAsUser:                &root,
			RunAsGroup:               &root,
			RunAsNonRoot:             &no,
		},
	}, nil
}

func goMemLimit(bytes int64) string {
	if bytes >= 1<<20 {
		return fmt.Sprintf("%dMiB", bytes>>20)
	}
	return fmt.Sprintf("%dB", bytes)
}

var resourceAnnotations = []struct {
	key   string
	limit bool
	name  corev1.ResourceName
}{
	{contract.AnnotationSidecarCPURequest, false, corev1.ResourceCPU},
	{contract.AnnotationSidecarCPULimit, true, corev1.ResourceCPU},
	{contract.AnnotationSidecarMemoryRequest, false, corev1.ResourceMemory},
	{contract.AnnotationSidecarMemoryLimit, true, corev1.ResourceMemory},
}

// resources are the configured ones overridden by pod annotations; "0"
// removes a value.
func (m *mutation) resources() (corev1.ResourceRequirements, error) {
	r := corev1.ResourceRequirements{Requests: m.cfg.Requests.DeepCopy(), Limits: m.cfg.Limits.DeepCopy()}
	for _, a := range resourceAnnotations {
		v, ok := m.pod.Annotations[a.key]
		if !ok {
			continue
		}
		q, err := resource.ParseQuantity(strings.TrimSpace(v))
		if err != nil || q.Sign() < 0 {
			return r, denyf("annotation %s=%q is not a resource quantity (e.g. \"500m\", \"1Gi\")", a.key, v)
		}
		list := r.Requests
		if a.limit {
			list = r.Limits
		}
		if q.IsZero() {
			delete(list, a.name)
		} else {
			list[a.name] = q
		}
	}
	for name, req := range r.Requests {
		if lim, ok := r.Limits[name]; ok && req.Cmp(lim) > 0 {
			return r, denyf("skiff sidecar %s request %s exceeds its limit %s; adjust the skiff.io/sidecar-%s-* annotations", name, req.String(), lim.String(), name)
		}
	}
	if len(r.Requests) == 0 {
		r.Requests = nil
	}
	if len(r.Limits) == 0 {
		r.Limits = nil
	}
	return r, nil
}

func (m *mutation) cacheVolume() (corev1.Volume, error) {
	size := m.cfg.CacheSize
	if v, ok := m.pod.Annotations[contract.AnnotationCacheSize]; ok {
		q, err := resource.ParseQuantity(strings.TrimSpace(v))
		if err != nil || q.Sign() <= 0 {
			return corev1.Volume{}, denyf("annotation %s=%q is not a positive size (e.g. \"20Gi\")", contract.AnnotationCacheSize, v)
		}
		size = q
	}
	if t := m.cfg.CacheVolumeClaimTemplate; t != nil {
		t = t.DeepCopy()
		if t.Spec.Resources.Requests == nil {
			t.Spec.Resources.Requests = corev1.ResourceList{}
		}
		t.Spec.Resources.Requests[corev1.ResourceStorage] = size
		return corev1.Volume{Name: contract.CacheVolumeName, VolumeSource: corev1.VolumeSource{Ephemeral: &corev1.EphemeralVolumeSource{VolumeClaimTemplate: t}}}, nil
	}
	return corev1.Volume{Name: contract.CacheVolumeName, VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{SizeLimit: &size}}}, nil
}
