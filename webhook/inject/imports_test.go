package inject_test

import (
	"go/parser"
	"go/token"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// TestImports holds the dependency rule of DESIGN.md §2: webhook/inject
// imports only k8s.io/api, k8s.io/apimachinery and sidecar/contract
// (besides the standard library).
func TestImports(t *testing.T) {
	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	allowed := []string{"k8s.io/api/", "k8s.io/apimachinery/", "github.com/skiff-fs/skiff/sidecar/contract"}
	for _, f := range files {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		af, err := parser.ParseFile(token.NewFileSet(), f, nil, parser.ImportsOnly)
		if err != nil {
			t.Fatal(err)
		}
		for _, imp := range af.Imports {
			p, _ := strconv.Unquote(imp.Path.Value)
			first := strings.Split(p, "/")[0]
			if !strings.Contains(first, ".") {
				continue // standard library
			}
			ok := false
			for _, a := range allowed {
				ok = ok || strings.HasPrefix(p, a) || p == strings.TrimSuffix(a, "/")
			}
			if !ok {
				t.Errorf("%s imports %s, outside the allowed set %v", f, p, allowed)
			}
		}
	}
}
