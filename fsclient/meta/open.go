package meta

import (
	"context"
	"fmt"
	"strings"

	"github.com/skiff-fs/skiff/fsclient/meta/bolt"
	"github.com/skiff-fs/skiff/fsclient/meta/kv"
	"github.com/skiff-fs/skiff/fsclient/meta/redis"
)

// Open opens the volume named by a META_URL: redis://, rediss:// and
// redis+sentinel:// for Redis, bolt://PATH for the embedded engine. The
// returned Meta owns the engine: Close closes it.
func Open(ctx context.Context, url string, opts Options) (*Meta, error) {
	scheme, _, ok := strings.Cut(url, "://")
	if !ok {
		return nil, fmt.Errorf("META_URL %q has no scheme: use redis://host:port/db, rediss://..., redis+sentinel://... or bolt:///path/to/volume.db", redactURL(url))
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

// redactURL hides user information in a URL for messages.
func redactURL(s string) string {
	scheme, rest, ok := strings.Cut(s, "://")
	if !ok {
		if i := strings.LastIndex(s, "@"); i >= 0 {
			return "***@" + s[i+1:]
		}
		return s
	}
	host := rest
	if i := strings.IndexAny(rest, "/?"); i >= 0 {
		host = rest[:i]
	}
	if i := strings.LastIndex(host, "@"); i >= 0 {
		rest = "***" + rest[i:]
	}
	return scheme + "://" + rest
}
