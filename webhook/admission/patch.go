package admission

import (
	"encoding/json"
	"fmt"
	"maps"
	"reflect"
	"slices"
	"strconv"
	"strings"

	jsonpatchapply "github.com/evanphx/json-patch/v5"
	"gomodules.xyz/jsonpatch/v2"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
)

// Patch returns the JSON patch that turns raw (the pod as received, which
// decodes to from) into to, and raw with the patch applied.
//
// The operations come from comparing from and to as serialized by the same
// Go types, so fields of raw that these types do not know are never touched.
// Lists of named elements (containers, volumes, mounts) are compared by
// name: an inserted element is one "add" at its index (the sidecar into
// initContainers), a replaced one is one "replace", so the operations
// apply to raw even where it omits empty fields that the Go types write.
// The result is checked: applying the patch to raw must decode to to.
func Patch(raw []byte, from, to *corev1.Pod) ([]jsonpatch.JsonPatchOperation, []byte, error) {
	a, err := toGeneric(from)
	if err != nil {
		return nil, nil, err
	}
	b, err := toGeneric(to)
	if err != nil {
		return nil, nil, err
	}
	var ops []jsonpatch.JsonPatchOperation
	diff(&ops, "", a, b)
	if len(ops) == 0 {
		return nil, raw, nil
	}
	pj, err := json.Marshal(ops)
	if err != nil {
		return nil, nil, fmt.Errorf("skiff: encode patch: %w", err)
	}
	p, err := jsonpatchapply.DecodePatch(pj)
	if err != nil {
		return nil, nil, fmt.Errorf("skiff: decode patch: %w", err)
	}
	patched, err := p.Apply(raw)
	if err != nil {
		return nil, nil, fmt.Errorf("skiff: patch does not apply to the pod: %w", err)
	}
	check := &corev1.Pod{}
	if err := json.Unmarshal(patched, check); err != nil {
		return nil, nil, fmt.Errorf("skiff: patched pod does not decode: %w", err)
	}
	// The namespace may come from the request rather than the object.
	if check.Namespace == "" {
		check.Namespace = to.Namespace
	}
	if !equality.Semantic.DeepEqual(check, to) {
		return nil, nil, fmt.Errorf("skiff: internal error: the patch does not reproduce the injected pod")
	}
	return ops, patched, nil
}

func toGeneric(pod *corev1.Pod) (any, error) {
	b, err := json.Marshal(pod)
	if err != nil {
		return nil, fmt.Errorf("skiff: encode pod: %w", err)
	}
	var v any
	if err := json.Unmarshal(b, &v); err != nil {
		return nil, fmt.Errorf("skiff: decode pod: %w", err)
	}
	return v, nil
}

func pointer(path, key string) string {
	return path + "/" + strings.NewReplacer("~", "~0", "/", "~1").Replace(key)
}

func diff(ops *[]jsonpatch.JsonPatchOperation, path string, a, b any) {
	switch av := a.(type) {
	case map[string]any:
		bv, ok := b.(map[string]any)
		if !ok {
			break
		}
		for _, k := range sortedKeys(av) {
			if _, ok := bv[k]; !ok {
				*ops = append(*ops, jsonpatch.NewOperation("remove", pointer(path, k), nil))
			}
		}
		for _, k := range sortedKeys(bv) {
			if old, ok := av[k]; ok {
				diff(ops, pointer(path, k), old, bv[k])
			} else {
				*ops = append(*ops, jsonpatch.NewOperation("add", pointer(path, k), bv[k]))
			}
		}
		return
	case []any:
		bv, ok := b.([]any)
		if !ok {
			break
		}
		if diffList(ops, path, av, bv) {
			return
		}
	default:
		if reflect.DeepEqual(a, b) {
			return
		}
	}
	if reflect.DeepEqual(a, b) {
		return
	}
	*ops = append(*ops, jsonpatch.NewOperation("replace", path, b))
}

// diffList diffs two lists element by element when b is a with elements
// inserted (matched by "name" for named elements, by position otherwise);
// it reports false when the whole list must be replaced.
func diffList(ops *[]jsonpatch.JsonPatchOperation, path string, a, b []any) bool {
	if len(b) < len(a) {
		return false
	}
	if len(a) == len(b) {
		for i := range a {
			if name(a[i]) != name(b[i]) {
				*ops = append(*ops, jsonpatch.NewOperation("replace", path+"/"+strconv.Itoa(i), b[i]))
				continue
			}
			diff(ops, path+"/"+strconv.Itoa(i), a[i], b[i])
		}
		return true
	}
	// Insertions: a's names must appear in b in order.
	j := 0
	var local []jsonpatch.JsonPatchOperation
	for i := range b {
		if j < len(a) && name(a[j]) != "" && name(a[j]) == name(b[i]) {
			diff(&local, path+"/"+strconv.Itoa(i), a[j], b[i])
			j++
			continue
		}
		if name(b[i]) == "" {
			return false
		}
		local = append(local, jsonpatch.NewOperation("add", path+"/"+strconv.Itoa(i), b[i]))
	}
	if j != len(a) {
		return false
	}
	*ops = append(*ops, local...)
	return true
}

func name(v any) string {
	if m, ok := v.(map[string]any); ok {
		if s, ok := m["name"].(string); ok {
			return s
		}
	}
	return ""
}

func sortedKeys(m map[string]any) []string {
	return slices.Sorted(maps.Keys(m))
}
