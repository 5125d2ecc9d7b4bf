package gcs

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"net/http"
	"os"
	"strings"
	"time"
	"unicode/utf8"

	"cloud.google.com/go/storage"
	"github.com/googleapis/gax-go/v2"
	"google.golang.org/api/googleapi"
	"google.golang.org/api/iterator"
	"google.golang.org/api/option"

	"github.com/skiff-fs/skiff/fsclient/object"
)

// Defaults for Config fields left zero.
const (
	// DefaultChunkSize is one 256 KiB unit more than skiff's default 4 MiB
	// block, so that such a block goes up in one request: a Writer whose
	// ChunkSize equals the object's size makes a three-request resumable
	// upload.
	DefaultChunkSize      = 4<<20 + 256<<10
	DefaultInitialBackoff = 200 * time.Millisecond
	DefaultMaxBackoff     = 15 * time.Second
	DefaultMaxAttempts    = 10
)

// Config says which bucket to use and how. Zero fields take the documented
// defaults.
type Config struct {
	// Bucket is the bucket name. Required.
	Bucket string
	// Prefix is prepended verbatim to every key, e.g. "vol1/". Default "".
	Prefix string
	// CredentialsFile is the path of a Google credentials JSON file, such
	// as a service account key mounted from a Secret as
	// google-credentials.json. Default: Application Default Credentials
	// (the pod's workload identity on GKE).
	CredentialsFile string
	// Restricted applies CheckCredentials to CredentialsFile before using
	// it: for privileged processes (the sidecar, the CSI plugin) whose
	// credentials file comes from a pod author's Secret. Default false
	// (every credentials type the auth library knows).
	Restricted bool
	// Endpoint overrides the JSON API endpoint, e.g.
	// "https://storage.googleapis.com/storage/v1/" or a Private Service
	// Connect address. Default: the public endpoint, or the emulator named
	// by STORAGE_EMULATOR_HOST.
	Endpoint string
	// ChunkSize is the largest request of an upload; it bounds the memory a
	// Put buffers. Objects smaller than ChunkSize go up in one request,
	// larger ones as a resumable upload in ChunkSize pieces. Rounded up to
	// a multiple of 256 KiB. Default 4.25 MiB (DefaultChunkSize).
	ChunkSize int
	// InitialBackoff is the first retry delay, doubled after each failure
	// up to MaxBackoff. Defaults 200ms and 15s.
	InitialBackoff, MaxBackoff time.Duration
	// MaxAttempts bounds the attempts of one operation (first try
	// included). Default 10.
	MaxAttempts int
}

// ErrNoBucket is wrapped by the error New returns when the bucket does not
// exist.
var ErrNoBucket = errors.New("gcs bucket does not exist")

type noBucketError struct{ bucket string }

func (e *noBucketError) Error() string {
	return fmt.Sprintf("gcs bucket %q does not exist (create it, or fix --bucket)", e.bucket)
}

func (e *noBucketError) Unwrap() error { return ErrNoBucket }

// Store is an object.Store over a GCS bucket.
type Store struct {
	client    *storage.Client
	bucket    *storage.BucketHandle
	name      string // bucket name
	prefix    string
	chunkSize int
	backoff   gax.Backoff // for single-request uploads, which Put retries itself
	attempts  int
}

var (
	_ object.Store = (*Store)(nil)
	_ io.Closer    = (*Store)(nil)
)

const chunkUnit = 256 << 10 // storage.Writer rounds ChunkSize to this

// New connects to the bucket cfg names and checks that it exists. The
// caller closes the Store.
func New(ctx context.Context, cfg Config) (*Store, error) {
	if err := CheckBucketName(cfg.Bucket); err != nil {
		return nil, err
	}
	if strings.ContainsAny(cfg.Prefix, "\r\n") || !utf8.ValidString(cfg.Prefix) {
		return nil, fmt.Errorf("gcs prefix %q: must be valid UTF-8 without line breaks", cfg.Prefix)
	}
	if cfg.ChunkSize < 0 || cfg.MaxAttempts < 0 || cfg.InitialBackoff < 0 || cfg.MaxBackoff < 0 {
		return nil, errors.New("gcs config: ChunkSize, MaxAttempts and backoffs must not be negative")
	}
	if cfg.ChunkSize == 0 {
		cfg.ChunkSize = DefaultChunkSize
	}
	cfg.ChunkSize = (cfg.ChunkSize + chunkUnit - 1) / chunkUnit * chunkUnit
	if cfg.InitialBackoff == 0 {
		cfg.InitialBackoff = DefaultInitialBackoff
	}
	if cfg.MaxBackoff == 0 {
		cfg.MaxBackoff = DefaultMaxBackoff
	}
	if cfg.MaxAttempts == 0 {
		cfg.MaxAttempts = DefaultMaxAttempts
	}

	opts := []option.ClientOption{option.WithUserAgent("skiff")}
	if cfg.CredentialsFile != "" {
		opt, err := credentialsOption(cfg.CredentialsFile, cfg.Restricted)
		if err != nil {
			return nil, err
		}
		opts = append(opts, opt)
	}
	if cfg.Endpoint != "" {
		opts = append(opts, option.WithEndpoint(cfg.Endpoint))
	}
	client, err := storage.NewClient(ctx, opts...)
	if err != nil {
		return nil, fmt.Errorf("gcs client for bucket %q: %w", cfg.Bucket, err)
	}
	client.SetRetry(
		storage.WithPolicy(storage.RetryAlways),
		storage.WithBackoff(gax.Backoff{Initial: cfg.InitialBackoff, Max: cfg.MaxBackoff, Multiplier: 2}),
		storage.WithMaxAttempts(cfg.MaxAttempts),
		storage.WithErrorFunc(storage.ShouldRetry),
	)
	s := &Store{
		client:    client,
		bucket:    client.Bucket(cfg.Bucket),
		name:      cfg.Bucket,
		prefix:    cfg.Prefix,
		chunkSize: cfg.ChunkSize,
		backoff:   gax.Backoff{Initial: cfg.InitialBackoff, Max: cfg.MaxBackoff, Multiplier: 2},
		attempts:  cfg.MaxAttempts,
	}
	if err := s.checkBucket(ctx); err != nil {
		client.Close()
		return nil, err
	}
	return s, nil
}

// CheckBucketName applies GCS's bucket naming rules, so that a typo gets a
// clear message instead of an HTTP 400.
func CheckBucketName(name string) error {
	if name == "" {
		return errors.New("gcs: no bucket name given")
	}
	ok := len(name) >= 3 && len(name) <= 222 && (len(name) <= 63 || strings.Contains(name, "."))
	for i := 0; ok && i < len(name); i++ {
		c := name[i]
		ok = c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.'
	}
	if ok {
		first, last := name[0], name[len(name)-1]
		ok = (first >= 'a' && first <= 'z' || first >= '0' && first <= '9') &&
			(last >= 'a' && last <= 'z' || last >= '0' && last <= '9')
	}
	if !ok {
		return fmt.Errorf("gcs bucket name %q is invalid: use 3-63 lowercase letters, digits, '-', '_' and '.' (up to 222 with dots), starting and ending with a letter or digit", name)
	}
	return nil
}

// credentialsOption reads the "type" of a credentials file so that the
// auth library can check the file is of the type it claims.
func credentialsOption(path string, restricted bool) (option.ClientOption, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("gcs credentials: %w", err)
	}
	if restricted {
		if err := CheckCredentials(data); err != nil {
			return nil, fmt.Errorf("gcs credentials %s: %w", path, err)
		}
	}
	var f struct {
		Type string `json:"type"`
	}
	if err := json.Unmarshal(data, &f); err != nil {
		return nil, fmt.Errorf("gcs credentials %s: not a JSON credentials file: %w", path, err)
	}
	var t option.CredentialsType
	switch f.Type {
	case "service_account":
		t = option.ServiceAccount
	case "authorized_user":
		t = option.AuthorizedUser
	case "external_account":
		t = option.ExternalAccount
	case "impersonated_service_account":
		t = option.ImpersonatedServiceAccount
	default:
		return nil, fmt.Errorf("gcs credentials %s: unsupported type %q (want service_account, authorized_user, external_account or impersonated_service_account)", path, f.Type)
	}
	return option.WithAuthCredentialsJSON(t, data), nil
}

// checkBucket fails with a clear error if the bucket does not exist or
// cannot be reached. Credentials allowed to read and write objects but not
// bucket metadata (storage.buckets.get) are accepted when listing works.
func (s *Store) checkBucket(ctx context.Context) error {
	_, err := s.bucket.Attrs(ctx)
	if err == nil {
		return nil
	}
	if errors.Is(err, storage.ErrBucketNotExist) {
		return &noBucketError{s.name}
	}
	if code(err) == http.StatusForbidden {
		it := s.bucket.Objects(ctx, &storage.Query{Prefix: s.prefix})
		it.PageInfo().MaxSize = 1
		_, lerr := it.Next()
		switch {
		case lerr == nil || errors.Is(lerr, iterator.Done):
			return nil
		case errors.Is(lerr, storage.ErrBucketNotExist):
			return &noBucketError{s.name}
		}
		return fmt.Errorf("gcs bucket %q: access denied (grant the credentials roles/storage.objectAdmin on the bucket): %w", s.name, lerr)
	}
	return fmt.Errorf("gcs bucket %q: %w", s.name, err)
}

func code(err error) int {
	var e *googleapi.Error
	if errors.As(err, &e) {
		return e.Code
	}
	return 0
}

// String returns "gs://BUCKET/PREFIX".
func (s *Store) String() string { return "gs://" + s.name + "/" + s.prefix }

// Close releases the client's connections.
func (s *Store) Close() error { return s.client.Close() }

func (s *Store) object(key string) (*storage.ObjectHandle, error) {
	name := s.prefix + key
	why := ""
	switch {
	case key == "":
		why = "it is empty"
	case len(name) > 1024:
		why = "with the prefix it is longer than 1024 bytes"
	case !utf8.ValidString(key):
		why = "it is not valid UTF-8"
	case strings.ContainsAny(key, "\r\n"):
		why = "it contains a line break"
	}
	if why != "" {
		return nil, fmt.Errorf("%s: %w %q: %s", s, object.ErrInvalidKey, key, why)
	}
	return s.bucket.Object(name), nil
}

func (s *Store) wrap(op, key string, err error) error {
	if err == nil {
		return nil
	}
	if errors.Is(err, storage.ErrObjectNotExist) {
		return fmt.Errorf("%s %s %q: %w", s, op, key, object.ErrNotFound)
	}
	return fmt.Errorf("%s %s %q: %w", s, op, key, err)
}

// Get implements object.Store.
func (s *Store) Get(ctx context.Context, key string, off, limit int64) (io.ReadCloser, error) {
	o, err := s.object(key)
	if err != nil {
		return nil, err
	}
	if off < 0 || limit < -1 {
		return nil, fmt.Errorf("%s get %q: invalid range off=%d limit=%d", s, key, off, limit)
	}
	if limit == 0 {
		// The library reads the whole object for a zero length; only
		// check that it exists.
		if _, err := o.Attrs(ctx); err != nil {
			return nil, s.wrap("get", key, err)
		}
		return io.NopCloser(bytes.NewReader(nil)), nil
	}
	r, err := o.NewRangeReader(ctx, off, limit)
	if err != nil {
		if code(err) == http.StatusRequestedRangeNotSatisfiable {
			// off is at or past the end of an object that exists.
			return io.NopCloser(bytes.NewReader(nil)), nil
		}
		return nil, s.wrap("get", key, err)
	}
	return r, nil
}

// chunkFor returns the Writer chunk size for an object of n bytes: just
// large enough to send it in one request, but at most s.chunkSize.
func (s *Store) chunkFor(n int) int {
	c := (n + 1 + chunkUnit - 1) / chunkUnit * chunkUnit
	return min(c, s.chunkSize)
}

// Put implements object.Store.
//
// An object smaller than the chunk size (every block of skiff's default
// size) goes up in one request with no copy: storage.Writer with ChunkSize
// 0 streams the caller's buffer, so in-flight uploads cost no memory beyond
// the blocks the chunk layer already holds under its budget. The library
// cannot retry such an upload, so Put retries it here with the same policy
// (blocks are immutable and keys unique, so a retry is always safe).
// Larger objects use a resumable upload in chunk-size pieces, retried by
// the library.
func (s *Store) Put(ctx context.Context, key string, data []byte) error {
	o, err := s.object(key)
	if err != nil {
		return err
	}
	if len(data) >= s.chunkSize {
		return s.wrap("put", key, s.upload(ctx, o, data, s.chunkFor(len(data))))
	}
	bo := s.backoff // a copy: gax.Backoff keeps state
	for attempt := 1; ; attempt++ {
		err = s.upload(ctx, o, data, 0)
		if err == nil || attempt >= s.attempts || !storage.ShouldRetry(err) || ctx.Err() != nil {
			return s.wrap("put", key, err)
		}
		if serr := gax.Sleep(ctx, bo.Pause()); serr != nil {
			return s.wrap("put", key, err)
		}
	}
}

// upload writes data to o in one Writer with the given ChunkSize.
func (s *Store) upload(ctx context.Context, o *storage.ObjectHandle, data []byte, chunkSize int) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel() // aborts the upload if Write fails
	w := o.NewWriter(ctx)
	w.ChunkSize = chunkSize
	w.ContentType = "application/octet-stream"
	w.CRC32C = crc32.Checksum(data, crc32.MakeTable(crc32.Castagnoli))
	w.SendCRC32C = true
	if _, err := w.Write(data); err != nil {
		w.Close()
		return err
	}
	return w.Close()
}

// Delete implements object.Store.
func (s *Store) Delete(ctx context.Context, key string) error {
	o, err := s.object(key)
	if err != nil {
		return err
	}
	if err := o.Delete(ctx); err != nil && !errors.Is(err, storage.ErrObjectNotExist) {
		return s.wrap("delete", key, err)
	}
	return nil
}

// Head implements object.Store.
func (s *Store) Head(ctx context.Context, key string) (object.Info, error) {
	o, err := s.object(key)
	if err != nil {
		return object.Info{}, err
	}
	attrs, err := o.Attrs(ctx)
	if err != nil {
		return object.Info{}, s.wrap("head", key, err)
	}
	return object.Info{Key: key, Size: attrs.Size, ModTime: attrs.Updated}, nil
}

// List implements object.Store.
func (s *Store) List(ctx context.Context, prefix, startAfter string, limit int) ([]object.Info, error) {
	if limit <= 0 {
		limit = object.DefaultListLimit
	}
	q := &storage.Query{Prefix: s.prefix + prefix, Projection: storage.ProjectionNoACL}
	if err := q.SetAttrSelection([]string{"Name", "Size", "Updated"}); err != nil {
		return nil, fmt.Errorf("%s list: %w", s, err)
	}
	if startAfter != "" {
		q.StartOffset = s.prefix + startAfter // inclusive; skipped below
	}
	it := s.bucket.Objects(ctx, q)
	it.PageInfo().MaxSize = limit + 1
	var out []object.Info
	for len(out) < limit {
		attrs, err := it.Next()
		if errors.Is(err, iterator.Done) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("%s list prefix %q after %q: %w", s, prefix, startAfter, err)
		}
		key, ok := strings.CutPrefix(attrs.Name, s.prefix)
		if !ok || key <= startAfter {
			continue
		}
		out = append(out, object.Info{Key: key, Size: attrs.Size, ModTime: attrs.Updated})
	}
	return out, nil
}
