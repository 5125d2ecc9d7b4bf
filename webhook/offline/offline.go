package offline

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"

	corev1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/yaml"

	"github.com/skiff-fs/skiff/sidecar/contract"
	"github.com/skiff-fs/skiff/webhook/admission"
	"github.com/skiff-fs/skiff/webhook/inject"
)

// Options configure Transform.
type Options struct {
	// Config is the injection configuration (as the webhook's flags).
	Config inject.Config
	// Namespace is assumed for objects without metadata.namespace;
	// default "default".
	Namespace string
	// NamespaceEnabled treats every namespace as labelled
	// skiff.io/inject=enabled; otherwise only pods (templates) labelled
	// skiff.io/inject=true are selected.
	NamespaceEnabled bool
	// Objects are the PersistentVolumeClaims, PersistentVolumes and
	// StorageClasses that resolve claim references (see ReadObjects).
	Objects Objects
}

// Objects resolve PersistentVolumeClaim references offline.
type Objects struct {
	PVCs    []*corev1.PersistentVolumeClaim
	PVs     map[string]*corev1.PersistentVolume
	Classes map[string]string // StorageClass name → provisioner
}

// templatePaths locate the pod template in each workload kind.
var templatePaths = map[string][]string{
	"Pod":         nil,
	"Deployment":  {"spec", "template"},
	"StatefulSet": {"spec", "template"},
	"DaemonSet":   {"spec", "template"},
	"ReplicaSet":  {"spec", "template"},
	"Job":         {"spec", "template"},
	"CronJob":     {"spec", "jobTemplate", "spec", "template"},
}

// Transform reads multi-document YAML from r and writes it to w with every
// selected pod (template) injected.
func Transform(r io.Reader, w io.Writer, opts Options) error {
	if err := opts.Config.Validate(); err != nil {
		return err
	}
	if opts.Namespace == "" {
		opts.Namespace = "default"
	}
	yr := utilyaml.NewYAMLReader(bufio.NewReader(r))
	first := true
	for i := 0; ; i++ {
		doc, err := yr.Read()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("read document %d: %w", i+1, err)
		}
		out, err := transformDoc(doc, opts)
		if err != nil {
			return fmt.Errorf("document %d: %w", i+1, err)
		}
		if len(bytes.TrimSpace(out)) == 0 {
			continue
		}
		if !first {
			if _, err := io.WriteString(w, "---\n"); err != nil {
				return err
			}
		}
		first = false
		if !bytes.HasSuffix(out, []byte("\n")) {
			out = append(out, '\n')
		}
		if _, err := w.Write(out); err != nil {
			return err
		}
	}
}

func transformDoc(doc []byte, opts Options) ([]byte, error) {
	js, err := yaml.YAMLToJSON(doc)
	if err != nil {
		return nil, fmt.Errorf("not YAML: %w", err)
	}
	var obj map[string]any
	if err := json.Unmarshal(js, &obj); err != nil || obj == nil {
		return doc, nil // a scalar, list or empty document: not ours
	}
	kind, _ := obj["kind"].(string)
	apiVersion, _ := obj["apiVersion"].(string)
	tpath, ok := templatePaths[kind]
	if !ok || (kind == "Pod" && apiVersion != "v1") {
		return doc, nil
	}
	meta, _ := obj["metadata"].(map[string]any)
	name, _ := meta["name"].(string)
	ns, _ := meta["namespace"].(string)
	if ns == "" {
		ns = opts.Namespace
	}
	what := kind + "/" + name
	tmpl := obj
	for _, k := range tpath {
		next, ok := tmpl[k].(map[string]any)
		if !ok {
			return nil, fmt.Errorf("%s: no %s", what, strings.Join(tpath, "."))
		}
		tmpl = next
	}
	tjs, err := json.Marshal(tmpl)
	if err != nil {
		return nil, err
	}
	pod := &corev1.Pod{}
	if err := json.Unmarshal(tjs, pod); err != nil {
		return nil, fmt.Errorf("%s: pod template: %w", what, err)
	}
	nsLabels := map[string]string{}
	if opts.NamespaceEnabled {
		nsLabels[contract.LabelInject] = contract.InjectNamespace
	}
	if !inject.Selected(pod.Labels, nsLabels) {
		return doc, nil
	}
	if pod.Namespace == "" {
		pod.Namespace = ns
	}
	claims, err := opts.Objects.claims(pod, what)
	if err != nil {
		return nil, err
	}
	out, changed, err := inject.Inject(pod, claims, opts.Config)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	if !changed {
		return doc, nil
	}
	_, patched, err := admission.Patch(tjs, pod, out)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	var newTmpl map[string]any
	if err := json.Unmarshal(patched, &newTmpl); err != nil {
		return nil, err
	}
	if len(tpath) == 0 {
		obj = newTmpl
	} else {
		parent := obj
		for _, k := range tpath[:len(tpath)-1] {
			parent = parent[k].(map[string]any)
		}
		parent[tpath[len(tpath)-1]] = newTmpl
	}
	return yaml.Marshal(obj)
}

// claims resolves the pod's claim references from the given objects; a
// claim they do not hold is an error (offline, nothing can be looked up).
func (o Objects) claims(pod *corev1.Pod, what string) (inject.Claims, error) {
	names := inject.ClaimNames(pod)
	claims := make(inject.Claims, len(names))
	for _, n := range names {
		var c inject.Claim
		for _, pvc := range o.PVCs {
			if pvc.Name == n && (pvc.Namespace == "" || pvc.Namespace == pod.Namespace) {
				c.PVC = pvc
			}
		}
		if c.PVC == nil {
			return nil, fmt.Errorf("%s references PersistentVolumeClaim %q: offline injection cannot look it up; pass --pv FILE holding the claim and its PersistentVolume", what, n)
		}
		c.PV = o.PVs[c.PVC.Spec.VolumeName]
		if c.PV == nil {
			for _, pv := range o.PVs {
				if ref := pv.Spec.ClaimRef; ref != nil && ref.Name == n && ref.Namespace == pod.Namespace {
					c.PV = pv
				}
			}
		}
		if c.PVC.Spec.StorageClassName != nil {
			c.Provisioner = o.Classes[*c.PVC.Spec.StorageClassName]
		}
		claims[n] = c
	}
	return claims, nil
}

// ReadObjects reads PersistentVolumeClaims, PersistentVolumes and
// StorageClasses from multi-document YAML (other kinds are ignored).
func ReadObjects(r io.Reader) (Objects, error) {
	o := Objects{PVs: map[string]*corev1.PersistentVolume{}, Classes: map[string]string{}}
	yr := utilyaml.NewYAMLReader(bufio.NewReader(r))
	for {
		doc, err := yr.Read()
		if errors.Is(err, io.EOF) {
			return o, nil
		}
		if err != nil {
			return o, err
		}
		var tm struct{ Kind string }
		if err := yaml.Unmarshal(doc, &tm); err != nil {
			return o, err
		}
		switch tm.Kind {
		case "PersistentVolumeClaim":
			pvc := &corev1.PersistentVolumeClaim{}
			if err := yaml.Unmarshal(doc, pvc); err != nil {
				return o, fmt.Errorf("PersistentVolumeClaim: %w", err)
			}
			o.PVCs = append(o.PVCs, pvc)
		case "PersistentVolume":
			pv := &corev1.PersistentVolume{}
			if err := yaml.Unmarshal(doc, pv); err != nil {
				return o, fmt.Errorf("PersistentVolume: %w", err)
			}
			o.PVs[pv.Name] = pv
		case "StorageClass":
			sc := &storagev1.StorageClass{}
			if err := yaml.Unmarshal(doc, sc); err != nil {
				return o, fmt.Errorf("StorageClass: %w", err)
			}
			o.Classes[sc.Name] = sc.Provisioner
		}
	}
}
