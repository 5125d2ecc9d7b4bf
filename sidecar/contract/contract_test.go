package contract

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestVolumesRoundTrip(t *testing.T) {
	in := []Volume{
		{Name: "data", MountPath: MountPath("data"), SecretDir: SecretDir("data")},
		{Name: "models", MountPath: MountPath("models"), SecretDir: SecretDir("models"), Subdir: "llama/7b", ReadOnly: true, Options: []string{"cache-size=1024", "ro"}},
	}
	s, err := MarshalVolumes(in)
	if err != nil {
		t.Fatal(err)
	}
	want := `[{"name":"data","mountPath":"/skiff/data","secretDir":"/etc/skiff/secrets/data"},` +
		`{"name":"models","mountPath":"/skiff/models","secretDir":"/etc/skiff/secrets/models","subdir":"llama/7b","readOnly":true,"options":["cache-size=1024","ro"]}]`
	if s != want {
		t.Fatalf("MarshalVolumes:\n got %s\nwant %s", s, want)
	}
	out, err := ParseVolumes(s)
	if err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff(in, out); d != "" {
		t.Fatalf("round trip (-want +got):\n%s", d)
	}
}

func TestParseVolumesErrors(t *testing.T) {
	for name, in := range map[string]string{
		"empty":          ``,
		"not a list":     `{"name":"a"}`,
		"null":           `null`,
		"trailing":       `[] []`,
		"unknown field":  `[{"name":"a","mountPath":"/skiff/a","secretDir":"/s","extra":1}]`,
		"bad name":       `[{"name":"A_b","mountPath":"/skiff/a","secretDir":"/s"}]`,
		"relative mount": `[{"name":"a","mountPath":"skiff/a","secretDir":"/s"}]`,
		"escaping sub":   `[{"name":"a","mountPath":"/skiff/a","secretDir":"/s","subdir":"../x"}]`,
		"absolute sub":   `[{"name":"a","mountPath":"/skiff/a","secretDir":"/s","subdir":"/x"}]`,
		"bad option":     `[{"name":"a","mountPath":"/skiff/a","secretDir":"/s","options":["a b"]}]`,
		"duplicate":      `[{"name":"a","mountPath":"/skiff/a","secretDir":"/s"},{"name":"a","mountPath":"/skiff/b","secretDir":"/s"}]`,
		"same path":      `[{"name":"a","mountPath":"/skiff/a","secretDir":"/s"},{"name":"b","mountPath":"/skiff/a","secretDir":"/s"}]`,
	} {
		t.Run(name, func(t *testing.T) {
			if vs, err := ParseVolumes(in); err == nil {
				t.Fatalf("ParseVolumes(%q) = %+v, want an error", in, vs)
			} else if !strings.Contains(err.Error(), EnvVolumes) {
				t.Fatalf("error %q does not name %s", err, EnvVolumes)
			}
		})
	}
}

func TestNames(t *testing.T) {
	if got := PodVolumeName("data"); got != "skiff-data" {
		t.Errorf("PodVolumeName = %q", got)
	}
	if got := SecretVolumeName("data"); got != "skiff-secret-data" {
		t.Errorf("SecretVolumeName = %q", got)
	}
	if got := MountPath("data"); got != "/skiff/data" {
		t.Errorf("MountPath = %q", got)
	}
	if got := SecretDir("data"); got != "/etc/skiff/secrets/data" {
		t.Errorf("SecretDir = %q", got)
	}
	long := strings.Repeat("a", 60)
	a, b := SecretVolumeName(long), SecretVolumeName(long+"b")
	for _, n := range []string{a, b, PodVolumeName(long + "bcd"), SubPathVolume(long, "x/y")} {
		if err := ValidName(n); err != nil {
			t.Errorf("derived name: %v", err)
		}
	}
	if a == b {
		t.Errorf("two long names collide: %s", a)
	}
	if SubPathVolume("v", "a") == SubPathVolume("v", "b") {
		t.Error("sub-path volumes collide")
	}
	if d := cmp.Diff([]string{"a", "b=c"}, ParseOptions(" a,, b=c ,")); d != "" {
		t.Error(d)
	}
}

func FuzzParseVolumes(f *testing.F) {
	f.Add(`[{"name":"a","mountPath":"/skiff/a","secretDir":"/etc/skiff/secrets/a","subdir":"x","readOnly":true,"options":["o"]}]`)
	f.Add(`[]`)
	f.Add(`[{"name":"a"}] x`)
	f.Fuzz(func(t *testing.T, s string) {
		vs, err := ParseVolumes(s)
		if err != nil {
			return
		}
		// Whatever parses must marshal and parse back to the same.
		out, err := MarshalVolumes(vs)
		if err != nil {
			t.Fatalf("parsed %q but cannot marshal: %v", s, err)
		}
		again, err := ParseVolumes(out)
		if err != nil {
			t.Fatalf("re-parse %q: %v", out, err)
		}
		if d := cmp.Diff(vs, again); d != "" {
			t.Fatalf("round trip (-first +second):\n%s", d)
		}
	})
}
