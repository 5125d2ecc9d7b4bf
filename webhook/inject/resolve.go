package inject

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"path"
	"slices"
	"sort"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"

	"github.com/skiff-fs/skiff/sidecar/contract"
)

// Source says how a pod references a skiff volume.
type Source string

const (
	SourceCSI        Source = "csi"        // inline CSI volume of driver csi.skiff.io
	SourcePVC        Source = "pvc"        // PVC bound to a csi.skiff.io PV
	SourceAnnotation Source = "annotation" // entry of the skiff.io/volumes annotation
)

// Spec is one skiff volume of a pod, whichever way it was referenced.
type Spec struct {
	// Name is the volume's name in the pod: the pod volume's name for CSI
	// and PVC references, the entry's name for annotation references.
	Name       string
	Source     Source
	SecretName string
	Subdir     string
	ReadOnly   bool
	Options    []string
	// MountPath and Containers are set for annotation references only:
	// where to mount the volume and in which containers (default: the first
	// app container).
	MountPath  string
	Containers []string
}

// Claim is what the caller found for a PersistentVolumeClaim the pod
// references (see ClaimNames).
type Claim struct {
	// PVC is the claim, nil when it does not exist.
	PVC *corev1.PersistentVolumeClaim
	// PV is the volume it is bound to, nil when unbound (or not found).
	PV *corev1.PersistentVolume
	// Provisioner of the claim's StorageClass, when the claim is unbound;
	// "" when unknown.
	Provisioner string
}

// Claims maps claim names to what was found for them.
type Claims map[string]Claim

// ClaimNames lists, sorted and without duplicates, the claims the pod's
// volumes reference: what the caller must look up before Resolve.
func ClaimNames(pod *corev1.Pod) []string {
	var names []string
	for _, v := range pod.Spec.Volumes {
		if v.PersistentVolumeClaim != nil && !slices.Contains(names, v.PersistentVolumeClaim.ClaimName) {
			names = append(names, v.PersistentVolumeClaim.ClaimName)
		}
	}
	sort.Strings(names)
	return names
}

// Selected reports whether a pod with these labels, in a namespace with
// these labels, is selected for injection: the pod label skiff.io/inject
// "true" selects it and "false" opts it out; otherwise the namespace label
// skiff.io/inject "enabled" selects it. (The webhook configuration applies
// the same rule with its selectors; offline tools call this.)
func Selected(podLabels, namespaceLabels map[string]string) bool {
	switch podLabels[contract.LabelInject] {
	case contract.InjectOptOut:
		return false
	case contract.InjectPod:
		return true
	}
	return namespaceLabels[contract.LabelInject] == contract.InjectNamespace
}

// Resolve finds the pod's skiff volumes, in pod volume order followed by
// annotation order. claims must hold every name of ClaimNames(pod). A
// reference that cannot work is denied (*DeniedError) with the reason.
func Resolve(pod *corev1.Pod, claims Claims) ([]Spec, error) {
	var specs []Spec
	for _, v := range pod.Spec.Volumes {
		switch {
		case v.CSI != nil && v.CSI.Driver == contract.DriverName:
			s, err := ParseAttributes(v.Name, v.CSI.VolumeAttributes)
			if err != nil {
				return nil, denyf("inline CSI volume %q: %v", v.Name, err)
			}
			if s.SecretName == "" && v.CSI.NodePublishSecretRef != nil {
				s.SecretName = v.CSI.NodePublishSecretRef.Name
			}
			if s.SecretName == "" {
				return nil, denyf("inline CSI volume %q: volumeAttributes need %q, the Secret (in the pod's namespace) holding %q", v.Name, contract.AttrSecretName, contract.SecretKeyMetaURL)
			}
			s.Source = SourceCSI
			s.ReadOnly = s.ReadOnly || (v.CSI.ReadOnly != nil && *v.CSI.ReadOnly)
			specs = append(specs, s)
		case v.PersistentVolumeClaim != nil:
			s, ok, err := resolveClaim(pod, v, claims)
			if err != nil {
				return nil, err
			}
			if ok {
				specs = append(specs, s)
			}
		}
	}
	ann, err := ParseAnnotation(pod.Annotations[contract.AnnotationVolumes])
	if err != nil {
		return nil, denyf("annotation %s: %v", contract.AnnotationVolumes, err)
	}
	for _, s := range ann {
		for _, v := range pod.Spec.Volumes {
			if v.Name == s.Name {
				return nil, denyf("annotation %s: volume %q already exists in the pod; give the entry another name", contract.AnnotationVolumes, s.Name)
			}
		}
		specs = append(specs, s)
	}
	return specs, nil
}

func resolveClaim(pod *corev1.Pod, v corev1.Volume, claims Claims) (Spec, bool, error) {
	name := v.PersistentVolumeClaim.ClaimName
	c, found := claims[name]
	if !found {
		return Spec{}, false, fmt.Errorf("inject: claim %q was not looked up (caller must resolve ClaimNames)", name)
	}
	if c.PVC == nil {
		return Spec{}, false, denyf("volume %q: PersistentVolumeClaim %q not found in namespace %q; skiff resolves claims when the pod is created, so create the claim first (controllers retry the pod)", v.Name, name, pod.Namespace)
	}
	if c.PV == nil {
		if c.Provisioner == contract.DriverName || isSkiffProvisioned(c.PVC) {
			return Spec{}, false, denyf("volume %q: PersistentVolumeClaim %q is not bound to a PersistentVolume yet; skiff needs the bound %s volume when the pod is created (use a StorageClass with volumeBindingMode Immediate, or wait until the claim is Bound; controllers retry the pod)", v.Name, name, contract.DriverName)
		}
		return Spec{}, false, nil // not a skiff claim
	}
	csi := c.PV.Spec.CSI
	if csi == nil || csi.Driver != contract.DriverName {
		return Spec{}, false, nil
	}
	s, err := ParseAttributes(v.Name, csi.VolumeAttributes)
	if err != nil {
		return Spec{}, false, denyf("volume %q: PersistentVolume %q: %v", v.Name, c.PV.Name, err)
	}
	if ref := csi.NodePublishSecretRef; ref != nil {
		if ref.Namespace != "" && ref.Namespace != pod.Namespace {
			return Spec{}, false, denyf("volume %q: PersistentVolume %q takes its Secret from namespace %q, but the skiff sidecar can only mount Secrets of the pod's namespace %q (skiff never copies Secrets); create the Secret in %q and point the PV at it", v.Name, c.PV.Name, ref.Namespace, pod.Namespace, pod.Namespace)
		}
		if s.SecretName == "" {
			s.SecretName = ref.Name
		}
	}
	if s.SecretName == "" {
		return Spec{}, false, denyf("volume %q: PersistentVolume %q names no Secret: set volumeAttributes.%s or nodePublishSecretRef", v.Name, c.PV.Name, contract.AttrSecretName)
	}
	s.Source = SourcePVC
	s.ReadOnly = s.ReadOnly || v.PersistentVolumeClaim.ReadOnly || csi.ReadOnly
	return s, true, nil
}

func isSkiffProvisioned(pvc *corev1.PersistentVolumeClaim) bool {
	for _, k := range []string{"volume.kubernetes.io/storage-provisioner", "volume.beta.kubernetes.io/storage-provisioner"} {
		if pvc.Annotations[k] == contract.DriverName {
			return true
		}
	}
	return false
}

// ParseAttributes reads a volume's CSI volumeAttributes (inline or PV).
// Unknown keys are errors, except prefixed keys ("x/y") that provisioners
// add; SecretName may be "" (the caller may fall back to a secret ref).
func ParseAttributes(name string, attrs map[string]string) (Spec, error) {
	s := Spec{Name: name}
	if err := contract.ValidName(name); err != nil {
		return s, err
	}
	keys := make([]string, 0, len(attrs))
	for k := range attrs {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		val := attrs[k]
		switch k {
		case contract.AttrSecretName:
			s.SecretName = val
		case contract.AttrSubdir:
			s.Subdir = strings.Trim(val, "/")
		case contract.AttrReadOnly:
			b, err := strconv.ParseBool(val)
			if err != nil {
				return s, fmt.Errorf("%s=%q is not a boolean", k, val)
			}
			s.ReadOnly = b
		case contract.AttrOptions:
			s.Options = contract.ParseOptions(val)
		default:
			if !strings.Contains(k, "/") {
				return s, fmt.Errorf("unknown volume attribute %q (known: %s, %s, %s, %s)", k, contract.AttrSecretName, contract.AttrSubdir, contract.AttrReadOnly, contract.AttrOptions)
			}
		}
	}
	return s, s.validate()
}

func (s *Spec) validate() error {
	if s.SecretName != "" && !isDNSSubdomain(s.SecretName) {
		return fmt.Errorf("%s %q is not a valid Secret name", contract.AttrSecretName, s.SecretName)
	}
	if err := contract.ValidSubdir(s.Subdir); err != nil {
		return err
	}
	for _, o := range s.Options {
		if err := contract.ValidOption(o); err != nil {
			return err
		}
	}
	return nil
}

// annotationEntry is one element of the skiff.io/volumes annotation.
type annotationEntry struct {
	Name       string   `json:"name"`
	SecretName string   `json:"secretName"`
	MountPath  string   `json:"mountPath"`
	Subdir     string   `json:"subdir,omitempty"`
	ReadOnly   bool     `json:"readOnly,omitempty"`
	Options    string   `json:"options,omitempty"`
	Containers []string `json:"containers,omitempty"`
}

// ParseAnnotation reads the skiff.io/volumes annotation: a JSON list of
// {"name", "secretName", "mountPath", "subdir", "readOnly", "options",
// "containers"}; name, secretName and mountPath are required. Unknown
// fields, duplicate names or mount paths and trailing data are errors. An
// empty value is no volumes.
func ParseAnnotation(value string) ([]Spec, error) {
	if strings.TrimSpace(value) == "" {
		return nil, nil
	}
	dec := json.NewDecoder(bytes.NewReader([]byte(value)))
	dec.DisallowUnknownFields()
	var entries []annotationEntry
	if err := dec.Decode(&entries); err != nil {
		return nil, fmt.Errorf("not a JSON list of {name, secretName, mountPath, subdir, readOnly, options, containers}: %v", err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, fmt.Errorf("trailing data after the JSON list")
	}
	var specs []Spec
	seen := map[string]bool{}
	paths := map[string]bool{}
	for i, e := range entries {
		if e.Name == "" || e.SecretName == "" || e.MountPath == "" {
			return nil, fmt.Errorf("entry %d: name, secretName and mountPath are required", i)
		}
		if err := contract.ValidName(e.Name); err != nil {
			return nil, fmt.Errorf("entry %d: %v", i, err)
		}
		if seen[e.Name] {
			return nil, fmt.Errorf("entry %d: volume %q listed twice", i, e.Name)
		}
		if !path.IsAbs(e.MountPath) || strings.Contains(e.MountPath, ":") || slices.Contains(strings.Split(e.MountPath, "/"), "..") {
			return nil, fmt.Errorf("entry %d (%s): mountPath %q must be an absolute path without '..' or ':'", i, e.Name, e.MountPath)
		}
		mp := path.Clean(e.MountPath)
		if paths[mp] {
			return nil, fmt.Errorf("entry %d (%s): mountPath %s used twice", i, e.Name, mp)
		}
		for _, c := range e.Containers {
			if c == "" {
				return nil, fmt.Errorf("entry %d (%s): empty container name", i, e.Name)
			}
		}
		seen[e.Name], paths[mp] = true, true
		s := Spec{
			Name:       e.Name,
			Source:     SourceAnnotation,
			SecretName: e.SecretName,
			Subdir:     strings.Trim(e.Subdir, "/"),
			ReadOnly:   e.ReadOnly,
			Options:    contract.ParseOptions(e.Options),
			MountPath:  mp,
			Containers: e.Containers,
		}
		if err := s.validate(); err != nil {
			return nil, fmt.Errorf("entry %d (%s): %v", i, e.Name, err)
		}
		specs = append(specs, s)
	}
	return specs, nil
}

func isDNSSubdomain(s string) bool {
	if len(s) == 0 || len(s) > 253 {
		return false
	}
	for _, part := range strings.Split(s, ".") {
		if contract.ValidName(part) != nil {
			return false
		}
	}
	return true
}
