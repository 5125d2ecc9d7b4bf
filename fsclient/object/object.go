package object

import (
	"context"
	"errors"
	"io"
	"time"
)

// ErrNotFound is returned (wrapped) by every Store when a key does not
// exist. Test with errors.Is(err, object.ErrNotFound).
var ErrNotFound = errors.New("object not found")

// Info describes one stored object.
type Info struct {
	Key     string
	Size    int64
	ModTime time.Time
}

// Store is the object storage interface used by the chunk layer. Objects are
// written whole and never modified in place. Implementations are safe for
// concurrent use.
type Store interface {
	// Get returns a reader over limit bytes of key starting at off. A limit
	// of -1 reads to the end. Reading past the end returns what exists
	// (possibly nothing). A missing key returns an error wrapping
	// ErrNotFound. The caller closes the reader.
	Get(ctx context.Context, key string, off, limit int64) (io.ReadCloser, error)
	// Put stores data under key, replacing any previous object atomically:
	// readers see the old or the new object, never a partial one.
	Put(ctx context.Context, key string, data []byte) error
	// Delete removes key. Deleting a missing key is not an error.
	Delete(ctx context.Context, key string) error
	// Head returns the object's metadata or an error wrapping ErrNotFound.
	Head(ctx context.Context, key string) (Info, error)
	// List returns up to limit objects whose keys start with prefix and sort
	// strictly after startAfter, in lexical key order. limit <= 0 means a
	// store-chosen page size (at least 1000). A short page does not by
	// itself mean the listing is complete; an empty page does.
	List(ctx context.Context, prefix, startAfter string, limit int) ([]Info, error)
	// String names the store for messages, e.g. "gs://bucket/prefix/".
	String() string
}
