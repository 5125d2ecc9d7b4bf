package sidecar

import (
	"errors"
	"fmt"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/skiff-fs/skiff/internal/redact"
	"github.com/skiff-fs/skiff/sidecar/contract"
)

// Mode says how each volume's file system is served.
type Mode string

const (
	// ModeDirect serves every volume in the sidecar process itself
	// (like `skiff mount`). A crash of the sidecar leaves dead mounts
	// that the next start detaches and mounts again.
	ModeDirect Mode = "direct"
	// ModeSupervised runs one `skiff mount --supervise` per volume: a
	// small supervisor holds /dev/fuse and restarts the worker that
	// serves the volume when it dies (package fsclient/fuse/supervisor).
	ModeSupervised Mode = "supervised"
)

// Config is the sidecar's configuration. main builds it from flags and
// the environment (SKIFF_VOLUMES, SKIFF_PROBE_PORT, GOMEMLIMIT); New
// validates it and fills in the defaults documented on each field.
type Config struct {
	// Volumes are the volumes to mount (contract.ParseVolumes of
	// SKIFF_VOLUMES). Required, at least one.
	Volumes []contract.Volume
	// ProbeAddr is the listen address of /readyz, /healthz and /metrics.
	// Default ":9567" (contract.DefaultProbePort).
	ProbeAddr string
	// CacheDir holds the block cache, one sub-directory per volume
	// (CacheDir/<volume name>, then the volume's uuid). Default
	// contract.CacheDir. CacheSize 0 means 10 GiB per volume; negative
	// turns the disk cache off.
	CacheDir  string
	CacheSize int64
	// BufferSize is the memory for written data not yet uploaded, for all
	// volumes together: each volume gets an equal share. CacheMem is the
	// memory tier of the block caches, again for all volumes together.
	// Defaults 300 MiB and 64 MiB. When MemoryLimit is set, the
	// effective values are min(BufferSize, 25% of MemoryLimit) and
	// min(CacheMem, 10% of MemoryLimit): see Budget.
	BufferSize int64
	CacheMem   int64
	// MemoryLimit is the Go runtime's soft memory limit (GOMEMLIMIT, as
	// debug.SetMemoryLimit(-1) reports it); 0 or math.MaxInt64: none.
	MemoryLimit int64
	// UploadConcurrency is the parallel block uploads per volume.
	// Default 20.
	UploadConcurrency int
	// GracePeriod bounds the shutdown: flushing, unmounting and ending
	// the sessions of every volume. Default 25 s (a pod's default grace
	// period is 30 s).
	GracePeriod time.Duration
	// ReadyTimeout bounds the statfs of /readyz. Default 2 s.
	ReadyTimeout time.Duration
	// HealthTimeout: /healthz fails when the mount loop has not run for
	// this long. Default 30 s.
	HealthTimeout time.Duration
	// StageDir holds a staging mount point per volume (see
	// mountStacked) and, in ModeSupervised, each supervisor's status
	// file (<volume>.status) and its worker's metrics socket
	// (<volume>.metrics; the path must fit a unix socket address, 107
	// bytes). Default /run/skiff/stage.
	StageDir string
	// Mode is ModeDirect (default) or ModeSupervised.
	Mode Mode
	// SkiffBinary is the skiff binary ModeSupervised runs. Default:
	// "skiff" beside the sidecar's own executable.
	SkiffBinary string
	// WorkerBinary is the binary each supervisor runs as its worker,
	// read again at every Upgrade: deliver a new skiff binary at this
	// path (by rename, so that no worker starts from a partial file) and
	// call Upgrade (SIGUSR2 to skiff-sidecar). Default: SkiffBinary.
	WorkerBinary string
	// Version is the sidecar's version, recorded in meta sessions.
	Version string
	// Logger receives the sidecar's log. Default: discard.
	Logger *slog.Logger

	// TrustInputs lifts the restrictions on what a volume's Secret may
	// name (volume.Config.Restricted): bolt:// META_URLs, directory
	// buckets, any GCS credentials. The sidecar runs privileged with a
	// pod author's Secret as input, so the default, false, accepts only
	// Redis META_URLs, gs:// buckets and restricted credentials. For
	// tests and development only.
	TrustInputs bool

	// Mounter, if set, replaces the Mounter that Mode selects (tests).
	Mounter Mounter
}

// minVolumeBuffer is the smallest write buffer a volume gets: the
// largest block size a volume can have (a volume needs room for one
// whole block).
const minVolumeBuffer = 16 << 20

func (c *Config) validate() error {
	if len(c.Volumes) == 0 {
		return fmt.Errorf("no volumes to mount: %s is empty", contract.EnvVolumes)
	}
	for _, v := range c.Volumes {
		if err := v.Validate(); err != nil {
			return err
		}
	}
	if c.ProbeAddr == "" {
		c.ProbeAddr = ":" + strconv.Itoa(contract.DefaultProbePort)
	}
	if c.CacheDir == "" {
		c.CacheDir = contract.CacheDir
	}
	if c.CacheSize == 0 {
		c.CacheSize = 10 << 30
	}
	if c.BufferSize == 0 {
		c.BufferSize = 300 << 20
	}
	if c.BufferSize < 0 {
		return fmt.Errorf("buffer size %d is negative", c.BufferSize)
	}
	if c.CacheMem == 0 {
		c.CacheMem = 64 << 20
	}
	if c.MemoryLimit == math.MaxInt64 || c.MemoryLimit < 0 {
		c.MemoryLimit = 0
	}
	if c.UploadConcurrency == 0 {
		c.UploadConcurrency = 20
	}
	if c.UploadConcurrency < 0 {
		return fmt.Errorf("upload concurrency %d is negative", c.UploadConcurrency)
	}
	if c.GracePeriod <= 0 {
		c.GracePeriod = 25 * time.Second
	}
	if c.StageDir == "" {
		c.StageDir = "/run/skiff/stage"
	}
	if c.ReadyTimeout <= 0 {
		c.ReadyTimeout = 2 * time.Second
	}
	if c.HealthTimeout <= 0 {
		c.HealthTimeout = 30 * time.Second
	}
	switch c.Mode {
	case "":
		c.Mode = ModeDirect
	case ModeDirect, ModeSupervised:
	default:
		return fmt.Errorf("mount mode %q: want %q or %q", c.Mode, ModeDirect, ModeSupervised)
	}
	if c.Mode == ModeSupervised && c.SkiffBinary == "" {
		exe, err := os.Executable()
		if err != nil {
			return fmt.Errorf("find the skiff binary: %w", err)
		}
		c.SkiffBinary = filepath.Join(filepath.Dir(exe), "skiff")
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return nil
}

// Budget is how the sidecar's memory is shared out.
type Budget struct {
	// MemoryLimit is GOMEMLIMIT (0: none).
	MemoryLimit int64
	// Buffer and CacheMem are the totals over all volumes; PerVolume*
	// are each volume's share.
	Buffer, CacheMem                   int64
	PerVolumeBuffer, PerVolumeCacheMem int64
}

// Total is the memory the budget hands out: write buffers plus cache
// memory tiers.
func (b Budget) Total() int64 { return b.Buffer + b.CacheMem }

// budget computes the memory budget of a validated config.
func (c *Config) budget() Budget {
	b := Budget{MemoryLimit: c.MemoryLimit, Buffer: c.BufferSize, CacheMem: max(c.CacheMem, 0)}
	if c.MemoryLimit > 0 {
		b.Buffer = min(b.Buffer, c.MemoryLimit/4)
		b.CacheMem = min(b.CacheMem, c.MemoryLimit/10)
	}
	n := int64(len(c.Volumes))
	b.PerVolumeBuffer = max(b.Buffer/n, minVolumeBuffer)
	b.Buffer = b.PerVolumeBuffer * n
	b.PerVolumeCacheMem = b.CacheMem / n
	b.CacheMem = b.PerVolumeCacheMem * n
	return b
}

// Spec is everything needed to mount one volume: the contract entry, its
// secrets (read from SecretDir) and the options resolved.
type Spec struct {
	contract.Volume
	// MetaURL is the volume's metadata URL (the metaurl Secret key). It
	// may hold a password: never log it (Spec's LogValue leaves it out),
	// never put it on a command line (MetaURLFile is the file it was
	// read from).
	MetaURL     string
	MetaURLFile string
	// PassphraseFile and CredentialsFile are the paths of the optional
	// passphrase and google-credentials.json keys ("" when absent);
	// Passphrase is the passphrase read.
	PassphraseFile  string
	Passphrase      []byte
	CredentialsFile string
	// CacheDir is the volume's cache directory ("" = no disk cache).
	CacheDir  string
	CacheSize int64
	CacheMem  int64 // 0: no memory tier
	// BufferSize is the volume's share of the write buffer budget.
	BufferSize        int64
	UploadConcurrency int
	// FlushAfter is chunk.Config.FlushAfter (option flush-after=D);
	// 0 is its default.
	FlushAfter time.Duration
	// Options resolved from Volume.Options.
	AttrTimeout, EntryTimeout, DirEntryTimeout time.Duration
	AllowOther                                 bool
	CacheWrites                                bool
	Passthrough                                bool // file images read by the kernel (direct mode)
	Debug                                      bool
	// Ignored lists the options the sidecar does not know.
	Ignored []string
}

// LogValue describes the spec without its secrets.
func (s *Spec) LogValue() slog.Value {
	return slog.GroupValue(
		slog.String("volume", s.Name),
		slog.String("mountPath", s.MountPath),
		slog.String("meta", redact.URL(s.MetaURL)),
		slog.Bool("readOnly", s.ReadOnly),
		slog.String("subdir", s.Subdir),
		slog.Bool("encrypted", len(s.Passphrase) > 0),
		slog.Int64("buffer", s.BufferSize),
	)
}

// readSecret reads key of dir; missing optional keys give "", nil.
func readSecret(dir, key string, required bool) (path string, val []byte, err error) {
	path = filepath.Join(dir, key)
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) && !required {
		return "", nil, nil
	}
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return "", nil, fmt.Errorf("the volume's Secret has no key %q (looked for %s)", key, path)
		}
		return "", nil, fmt.Errorf("read %s: %w", path, err)
	}
	// A trailing newline (echo > file, kubectl create secret --from-file)
	// is not part of the secret.
	val = []byte(strings.TrimRight(string(b), "\r\n"))
	if len(val) == 0 && required {
		return "", nil, fmt.Errorf("key %q of the volume's Secret (%s) is empty", key, path)
	}
	return path, val, nil
}

// specs resolves every volume of a validated config.
func (c *Config) specs() ([]*Spec, error) {
	b := c.budget()
	var out []*Spec
	for _, v := range c.Volumes {
		s := &Spec{
			Volume:            v,
			BufferSize:        b.PerVolumeBuffer,
			CacheMem:          b.PerVolumeCacheMem,
			UploadConcurrency: c.UploadConcurrency,
			AttrTimeout:       time.Second,
			EntryTimeout:      time.Second,
			DirEntryTimeout:   time.Second,
			AllowOther:        true, // DESIGN §6: apps run as other uids
			Passthrough:       true, // as skiff mount's default
		}
		if c.CacheSize > 0 {
			s.CacheDir, s.CacheSize = filepath.Join(c.CacheDir, v.Name), c.CacheSize
		}
		file, url, err := readSecret(v.SecretDir, contract.SecretKeyMetaURL, true)
		if err != nil {
			return nil, fmt.Errorf("volume %s: %w", v.Name, err)
		}
		s.MetaURL, s.MetaURLFile = string(url), file
		if s.PassphraseFile, s.Passphrase, err = readSecret(v.SecretDir, contract.SecretKeyPassphrase, false); err != nil {
			return nil, fmt.Errorf("volume %s: %w", v.Name, err)
		}
		if len(s.Passphrase) == 0 {
			s.PassphraseFile = ""
		}
		if s.CredentialsFile, _, err = readSecret(v.SecretDir, contract.SecretKeyGoogleCredentials, false); err != nil {
			return nil, fmt.Errorf("volume %s: %w", v.Name, err)
		}
		if err := s.applyOptions(v.Options); err != nil {
			return nil, fmt.Errorf("volume %s: %w", v.Name, err)
		}
		out = append(out, s)
	}
	return out, nil
}

// applyOptions resolves the mount options a volume entry carries. Known:
// ro, rw, allow-other, no-allow-other, passthrough, no-passthrough,
// debug, cache-writes,
// flush-after=D (positive: the age at which written data is committed),
// attr-timeout=D, entry-timeout=D, dir-entry-timeout=D (durations, or
// plain seconds), upload-concurrency=N, buffer-size=SIZE and
// cache-size=SIZE (bytes, or with K/M/G suffixes; a plain number of
// cache-size is MiB, as in JuiceFS; both are capped by the budget).
// Unknown options are kept in Ignored and logged, not refused: a typo in
// a pod annotation must not keep the pod from starting.
func (s *Spec) applyOptions(opts []string) error {
	for _, o := range opts {
		k, v, hasVal := strings.Cut(o, "=")
		var err error
		switch k {
		case "ro":
			s.ReadOnly = true
		case "rw":
			// the default; readOnly in the entry wins
		case "allow-other", "allow_other":
			s.AllowOther = true
		case "no-allow-other":
			s.AllowOther = false
		case "passthrough":
			s.Passthrough = true
		case "no-passthrough":
			s.Passthrough = false
		case "debug":
			s.Debug = true
		case "cache-writes":
			s.CacheWrites = true
		case "attr-timeout", "attrcache", "attr_timeout":
			s.AttrTimeout, err = parseDuration(v)
		case "entry-timeout", "entry_timeout":
			s.EntryTimeout, err = parseDuration(v)
		case "dir-entry-timeout", "dir_entry_timeout":
			s.DirEntryTimeout, err = parseDuration(v)
		case "flush-after":
			if s.FlushAfter, err = parseDuration(v); err == nil && s.FlushAfter <= 0 {
				err = errors.New("must be a positive duration")
			}
		case "upload-concurrency":
			var n int
			n, err = strconv.Atoi(v)
			if err == nil && n <= 0 {
				err = errors.New("must be at least 1")
			}
			s.UploadConcurrency = n
		case "buffer-size":
			var n int64
			if n, err = ParseSize(v, 1); err == nil {
				// Within the budget only: the budget is what keeps the
				// container under its memory limit.
				s.BufferSize = max(min(n, s.BufferSize), minVolumeBuffer)
			}
		case "cache-size":
			var n int64
			if n, err = ParseSize(v, 1<<20); err == nil {
				if n == 0 {
					s.CacheDir, s.CacheSize = "", 0
				} else {
					s.CacheSize = n
				}
			}
		default:
			s.Ignored = append(s.Ignored, o)
			continue
		}
		if err == nil && !hasVal && valued[k] {
			err = errors.New("needs a value")
		}
		if err != nil {
			return fmt.Errorf("mount option %q: %w", o, err)
		}
	}
	return nil
}

// valued are the options that need a value.
var valued = map[string]bool{
	"attr-timeout": true, "attrcache": true, "attr_timeout": true,
	"entry-timeout": true, "entry_timeout": true,
	"dir-entry-timeout": true, "dir_entry_timeout": true,
	"upload-concurrency": true, "buffer-size": true, "cache-size": true,
	"flush-after": true,
}

func parseDuration(s string) (time.Duration, error) {
	if f, err := strconv.ParseFloat(s, 64); err == nil && f >= 0 {
		return time.Duration(f * float64(time.Second)), nil
	}
	d, err := time.ParseDuration(s)
	if err == nil && d < 0 {
		err = errors.New("negative")
	}
	return d, err
}

// ParseSize parses a byte size such as 300M, 4Mi, 1G or 1024 (times
// unit when it has no suffix).
func ParseSize(s string, unit int64) (int64, error) {
	t := strings.TrimSuffix(strings.TrimSuffix(strings.ToUpper(strings.TrimSpace(s)), "B"), "I")
	mult := unit
	if n := len(t); n > 0 {
		switch t[n-1] {
		case 'K':
			mult, t = 1<<10, t[:n-1]
		case 'M':
			mult, t = 1<<20, t[:n-1]
		case 'G':
			mult, t = 1<<30, t[:n-1]
		case 'T':
			mult, t = 1<<40, t[:n-1]
		}
	}
	v, err := strconv.ParseInt(t, 10, 64)
	if err != nil || v < 0 || v > math.MaxInt64/mult {
		return 0, fmt.Errorf("%q is not a size (examples: 300M, 1G, 4096)", s)
	}
	return v * mult, nil
}
