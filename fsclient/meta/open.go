package meta

import (
	"context"
	"fmt"
	"strings"

	"github.com/skiff-fs/skiff/fsclient/meta/bolt"
	"github.com/skiff-fs/skiff/fsclient/meta/kv"
	"github.com/skiff-fs/skiff/fsclient/meta/redis"
	"github.com/skiff-fs/skiff/internal/redact"
)

// RestrictedSchemes are the META_URL schemes CheckRestricted accepts.
var RestrictedSchemes = []string{"redis", "rediss", "redis+sentinel"}

// CheckRestricted refuses a META_URL that a privileged process (the
// sidecar, the CSI plugin) must not open: anything but a Redis server. An
// embedded bolt:// file would be opened, and written, as root on the
// node's or the pod's file system at a path the Secret's author chose.
func CheckRestricted(url string) error {
	scheme, _, _ := strings.Cut(url, "://")
	for _, s := range RestrictedSchemes {
		if strings.EqualFold(scheme, s) {
			return nil
		}
	}
	return fmt.Errorf("META_URL %s refused: privileged skiff components accept only redis://, rediss:// and redis+sentinel:// (bolt:// and other engines only for trusted inputs)", redact.URL(url))
}

// Open opens the volume named by a META_URL: redis://, rediss:// and
// redis+sentinel:// for Redis, bolt://PATH for the embedded engine. The
// returned Meta owns the engine: Close closes it.
func Open(ctx context.Context, url string, opts Options) (*Meta, error) {
	scheme, _, ok := strings.Cut(url, "://")
	if !ok {
		return nil, fmt.Errorf("META_URL %q has no scheme: use redis://host:port/db, rediss://..., redis+sentinel://... or bolt:///path/to/volume.db", redact.URL(url))
	}
	var e kv.Engine
	var err error
	switch strings.ToLower(scheme) {
	case "redis", "rediss", "redis+sentinel":
		e, err = redis.Open(ctx, url, redis.Options{Logger: opts.Logger, OpTimeout: opts.OpTimeout})
	case "bolt":
		e, err = bolt.Open(url, bolt.Options{ReadOnly: opts.ReadOnly})
	default:
		return nil, fmt.Errorf("META_URL scheme %q is not supported: use redis://, rediss://, redis+sentinel:// or bolt://", scheme)
	}
	if err != nil {
		return nil, err
	}
	m := New(e, opts)
	m.ownEngine = true
	return m, nil
}
