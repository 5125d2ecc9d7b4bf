package contract

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"path"
	"regexp"
	"strings"
)

// Volume is one entry of SKIFF_VOLUMES: what the sidecar mounts and where.
type Volume struct {
	// Name is the volume's name in the pod (a DNS label).
	Name string `json:"name"`
	// MountPath is where the sidecar mounts it: MountPath(Name).
	MountPath string `json:"mountPath"`
	// SecretDir holds the Secret's keys (SecretKeyMetaURL, ...):
	// SecretDir of the volume the entry comes from.
	SecretDir string `json:"secretDir"`
	// Subdir is a sub-directory of the file system to mount ("" for the
	// root); relative, clean, without "..".
	Subdir string `json:"subdir,omitempty"`
	// ReadOnly mounts the file system read-only.
	ReadOnly bool `json:"readOnly,omitempty"`
	// Options are mount options, passed to the client as they are.
	Options []string `json:"options,omitempty"`
}

var labelRE = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`)

// ValidName reports whether name can name a skiff volume (a DNS label).
func ValidName(name string) error {
	if len(name) == 0 || len(name) > maxLabel || !labelRE.MatchString(name) {
		return fmt.Errorf("volume name %q must be a DNS label (lower-case letters, digits and '-', at most 63 characters)", name)
	}
	return nil
}

// ValidSubdir reports whether s can be a sub-directory of a volume: empty,
// or a relative clean path that does not leave the volume.
func ValidSubdir(s string) error {
	if s == "" {
		return nil
	}
	if strings.HasPrefix(s, "/") || path.Clean(s) != s || s == ".." || strings.HasPrefix(s, "../") || strings.ContainsRune(s, 0) {
		return fmt.Errorf("subdir %q must be a clean relative path inside the volume (no leading '/', no '..')", s)
	}
	return nil
}

// ValidOption reports whether o can be a mount option: non-empty, printable,
// without commas or spaces.
func ValidOption(o string) error {
	if o == "" || strings.ContainsAny(o, ", \t\r\n") || strings.ContainsFunc(o, func(r rune) bool { return r < 0x20 || r == 0x7f }) {
		return fmt.Errorf("mount option %q must be non-empty, without commas, spaces or control characters", o)
	}
	return nil
}

// Validate checks one entry.
func (v Volume) Validate() error {
	if err := ValidName(v.Name); err != nil {
		return err
	}
	if !path.IsAbs(v.MountPath) || path.Clean(v.MountPath) != v.MountPath {
		return fmt.Errorf("volume %s: mountPath %q must be a clean absolute path", v.Name, v.MountPath)
	}
	if !path.IsAbs(v.SecretDir) || path.Clean(v.SecretDir) != v.SecretDir {
		return fmt.Errorf("volume %s: secretDir %q must be a clean absolute path", v.Name, v.SecretDir)
	}
	if err := ValidSubdir(v.Subdir); err != nil {
		return fmt.Errorf("volume %s: %w", v.Name, err)
	}
	for _, o := range v.Options {
		if err := ValidOption(o); err != nil {
			return fmt.Errorf("volume %s: %w", v.Name, err)
		}
	}
	return nil
}

func validateAll(vs []Volume) error {
	names := make(map[string]bool, len(vs))
	paths := make(map[string]bool, len(vs))
	for _, v := range vs {
		if err := v.Validate(); err != nil {
			return err
		}
		if names[v.Name] {
			return fmt.Errorf("volume %s listed twice", v.Name)
		}
		if paths[v.MountPath] {
			return fmt.Errorf("volume %s: mountPath %s used twice", v.Name, v.MountPath)
		}
		names[v.Name], paths[v.MountPath] = true, true
	}
	return nil
}

// MarshalVolumes encodes vs as the value of SKIFF_VOLUMES, after validating
// every entry.
func MarshalVolumes(vs []Volume) (string, error) {
	if err := validateAll(vs); err != nil {
		return "", fmt.Errorf("%s: %w", EnvVolumes, err)
	}
	if vs == nil {
		vs = []Volume{}
	}
	b, err := json.Marshal(vs)
	if err != nil {
		return "", fmt.Errorf("%s: %w", EnvVolumes, err)
	}
	return string(b), nil
}

// ParseVolumes decodes and validates a SKIFF_VOLUMES value. Unknown fields,
// trailing data, duplicate names and invalid entries are errors.
func ParseVolumes(s string) ([]Volume, error) {
	if strings.TrimSpace(s) == "" {
		return nil, fmt.Errorf("%s is empty", EnvVolumes)
	}
	dec := json.NewDecoder(bytes.NewReader([]byte(s)))
	dec.DisallowUnknownFields()
	var vs []Volume
	if err := dec.Decode(&vs); err != nil {
		return nil, fmt.Errorf("%s: %w", EnvVolumes, err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, fmt.Errorf("%s: trailing data after the JSON list", EnvVolumes)
	}
	if vs == nil {
		return nil, errors.New(EnvVolumes + ": not a JSON list")
	}
	if err := validateAll(vs); err != nil {
		return nil, fmt.Errorf("%s: %w", EnvVolumes, err)
	}
	for i := range vs {
		if len(vs[i].Options) == 0 {
			vs[i].Options = nil
		}
	}
	return vs, nil
}
