package stores

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/url"
	"strings"

	"github.com/skiff-fs/skiff/fsclient/object"
	"github.com/skiff-fs/skiff/fsclient/object/dir"
	"github.com/skiff-fs/skiff/fsclient/object/gcs"
)

// Forms lists the accepted bucket URL forms, for messages.
const Forms = "gs://BUCKET[/PREFIX], file:///DIR or a directory path"

// Option adjusts how Open connects. Options apply in order, later ones
// overriding earlier ones; options that do not apply to the URL's scheme
// are ignored.
type Option func(*options)

type options struct {
	gcs gcs.Config
}

// WithCredentialsFile makes gs:// stores authenticate with the Google
// credentials JSON file at path (e.g. google-credentials.json from a
// Secret) instead of Application Default Credentials.
func WithCredentialsFile(path string) Option {
	return func(o *options) { o.gcs.CredentialsFile = path }
}

// WithRestricted makes gs:// stores accept only the credentials
// gcs.CheckCredentials allows (gcs.Config.Restricted), for privileged
// callers whose credentials file comes from a pod author.
func WithRestricted() Option {
	return func(o *options) { o.gcs.Restricted = true }
}

// WithGCSConfig sets every field of the gcs.Config used for gs:// URLs
// except Bucket and Prefix, which come from the URL.
func WithGCSConfig(cfg gcs.Config) Option {
	return func(o *options) { o.gcs = cfg }
}

// Open returns the store bucketURL names. See the package documentation
// for the forms accepted.
func Open(ctx context.Context, bucketURL string, opts ...Option) (object.Store, error) {
	var o options
	for _, opt := range opts {
		opt(&o)
	}
	loc, err := Parse(bucketURL)
	if err != nil {
		return nil, err
	}
	switch loc.Scheme {
	case "gs":
		cfg := o.gcs
		cfg.Bucket, cfg.Prefix = loc.Bucket, loc.Prefix
		return gcs.New(ctx, cfg)
	default:
		return dir.New(loc.Dir)
	}
}

// Close closes s if it is an io.Closer.
func Close(s object.Store) error {
	if c, ok := s.(io.Closer); ok {
		return c.Close()
	}
	return nil
}

// Location is a parsed bucket URL.
type Location struct {
	// Scheme is "gs" or "file".
	Scheme string
	// Bucket and Prefix are set for "gs". Prefix is "" or ends with '/'.
	Bucket, Prefix string
	// Dir is the directory for "file", as given (possibly relative).
	Dir string
}

// String returns the canonical URL: "gs://BUCKET/PREFIX" or
// "file://DIR".
func (l Location) String() string {
	if l.Scheme == "gs" {
		return "gs://" + l.Bucket + "/" + l.Prefix
	}
	return "file://" + l.Dir
}

// Parse parses a bucket URL without connecting to anything.
func Parse(bucketURL string) (Location, error) {
	bad := func(format string, args ...any) (Location, error) {
		return Location{}, fmt.Errorf("bucket URL %q: %s (use %s)", bucketURL, fmt.Sprintf(format, args...), Forms)
	}
	if strings.TrimSpace(bucketURL) == "" {
		return Location{}, fmt.Errorf("no bucket URL given (use %s)", Forms)
	}
	scheme, _, hasScheme := strings.Cut(bucketURL, "://")
	if !hasScheme {
		// "gs:bucket" or "file:/x" are typos, not relative paths.
		for _, s := range []string{"gs:", "file:"} {
			if strings.HasPrefix(bucketURL, s) {
				return bad("%q must be followed by //", s)
			}
		}
		return Location{Scheme: "file", Dir: bucketURL}, nil
	}
	u, err := url.Parse(bucketURL)
	if err != nil {
		return bad("%v", errors.Unwrap(err))
	}
	switch strings.ToLower(scheme) {
	case "gs":
		if u.User != nil || u.Port() != "" || u.RawQuery != "" || u.Fragment != "" {
			return bad("a gs:// URL has only a bucket and a prefix")
		}
		if u.Host == "" {
			return bad("no bucket name after gs://")
		}
		prefix := strings.TrimPrefix(u.Path, "/")
		if prefix != "" {
			prefix = strings.TrimSuffix(prefix, "/")
			for seg := range strings.SplitSeq(prefix, "/") {
				if seg == "" || seg == "." || seg == ".." {
					return bad("prefix %q has an empty, \".\" or \"..\" segment", prefix)
				}
			}
			prefix += "/"
		}
		if err := gcs.CheckBucketName(u.Host); err != nil {
			return bad("%v", err)
		}
		return Location{Scheme: "gs", Bucket: u.Host, Prefix: prefix}, nil
	case "file":
		if u.Host != "" && u.Host != "localhost" {
			return bad("a file:// URL takes an absolute path, as in file:///data/skiff; write a relative directory as a plain path")
		}
		if u.RawQuery != "" || u.Fragment != "" {
			return bad("a file:// URL has only a path")
		}
		if u.Path == "" {
			return bad("no directory after file://")
		}
		return Location{Scheme: "file", Dir: u.Path}, nil
	default:
		return bad("unsupported scheme %q", scheme)
	}
}
