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

// ErrInvalidKey is returned (wrapped) by a Store for a key it cannot store,
// such as an empty key, or for the directory store a key with a ".." or
// empty segment. The message names the key and the rule it breaks.
var ErrInvalidKey = errors.New("invalid object key")

// Info describes one stored object.
type Info struct {
	// Key is the object's key as the caller named it (without any prefix a
	// store or decorator adds).
	Key string
	// Size is the object's length in bytes.
	Size int64
	// ModTime is when the object was last written, as the store reports it.
	ModTime time.Time
}

// Store is the object storage interface used by the chunk layer. Objects are
// written whole and never modified in place. Implementations are safe for
// concurrent use.
//
// Keys are non-empty strings of '/'-separated segments, such as
// "vol/chunks/0/1/1234_0_4096". Keys that every store accepts have no empty,
// "." or ".." segments, no leading or trailing '/', and are valid UTF-8
// without control characters. Errors name the key and the store.
type Store interface {
	// Get returns a reader over limit bytes of key starting at off. A limit
	// of -1 reads to the end. Reading past the end returns what exists
	// (possibly nothing). A missing key returns an error wrapping
	// ErrNotFound. An off below 0 or a limit below -1 is an error. The
	// caller closes the reader; the reader stops with an error once ctx is
	// done.
	Get(ctx context.Context, key string, off, limit int64) (io.ReadCloser, error)
	// Put stores data under key, replacing any previous object atomically:
	// readers see the old or the new object, never a partial one. Put does
	// not keep data after it returns; the caller may reuse the buffer.
	Put(ctx context.Context, key string, data []byte) error
	// Delete removes key. Deleting a missing key is not an error.
	Delete(ctx context.Context, key string) error
	// Head returns the object's metadata or an error wrapping ErrNotFound.
	Head(ctx context.Context, key string) (Info, error)
	// List returns up to limit objects whose keys start with prefix and sort
	// strictly after startAfter, in lexical key order. limit <= 0 means a
	// store-chosen page size (at least 1000). A short page does not by
	// itself mean the listing is complete; an empty page does. To page,
	// pass the last key of one page as startAfter of the next.
	List(ctx context.Context, prefix, startAfter string, limit int) ([]Info, error)
	// String names the store for messages, e.g. "gs://bucket/prefix/".
	String() string
}

// DefaultListLimit is the page size stores use when List is called with
// limit <= 0.
const DefaultListLimit = 1000
