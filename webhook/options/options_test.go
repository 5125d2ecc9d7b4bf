package options

import (
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/spf13/pflag"
	"k8s.io/apimachinery/pkg/api/resource"

	"github.com/skiff-fs/skiff/webhook/inject"
)

// The flag defaults are the library defaults: skiff inject and the webhook
// started without flags inject the same pod as inject.DefaultConfig.
func TestDefaultsMatch(t *testing.T) {
	fs := pflag.NewFlagSet("t", pflag.ContinueOnError)
	o := Bind(fs)
	if err := fs.Parse(nil); err != nil {
		t.Fatal(err)
	}
	got, err := o.Config()
	if err != nil {
		t.Fatal(err)
	}
	want := inject.DefaultConfig(DefaultImage)
	if d := cmp.Diff(want, got, cmp.Comparer(func(a, b resource.Quantity) bool { return a.Cmp(b) == 0 })); d != "" {
		t.Fatalf("(-library +flags):\n%s", d)
	}
}

func TestBadFlags(t *testing.T) {
	for _, args := range [][]string{
		{"--cache-size", "lots"},
		{"--sidecar-memory-limit", "x"},
		{"--default-platform", "mars"},
		{"--sidecar-image-pull-policy", "Sometimes"},
		{"--sidecar-image", ""},
	} {
		fs := pflag.NewFlagSet("t", pflag.ContinueOnError)
		o := Bind(fs)
		if err := fs.Parse(args); err != nil {
			t.Fatal(err)
		}
		if _, err := o.Config(); err == nil {
			t.Errorf("%v accepted", args)
		}
	}
}
