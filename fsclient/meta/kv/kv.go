package kv

import (
	"context"
	"errors"
	"time"
)

// ErrConflict is returned by Engine.Update when the transaction kept
// conflicting with concurrent writers after the engine's retry bound.
var ErrConflict = errors.New("transaction conflict: too many concurrent changes, retries exhausted")

// ErrCommitUnknown is returned (wrapped) by Engine.Update when the
// connection broke after the commit was sent, so the engine cannot tell
// whether the transaction was applied. The engine does not retry it: the
// writes are either all there or all absent, and only the caller (who
// knows what fn meant to do) may check and decide. Embedded engines never
// return it.
var ErrCommitUnknown = errors.New("transaction outcome unknown: the connection broke during commit")

// ErrLocked is returned (wrapped) when an embedded engine is held open by
// another process.
var ErrLocked = errors.New("metadata engine is locked by another process")

// Tx is one transaction over one volume's keys. Reads see the transaction's
// own earlier writes. Writes become visible to others only when the
// transaction commits, all together or not at all. Values returned by reads
// belong to the caller (they are copies). A Tx must not be used after the
// function it was passed to returns.
type Tx interface {
	// Get returns the value of key, or nil (and no error) when it is missing.
	Get(key string) ([]byte, error)
	// MGet is Get for several keys at once (one round trip where possible).
	MGet(keys ...string) ([][]byte, error)
	// Set writes key.
	Set(key string, value []byte)
	// Delete removes keys; missing keys are ignored. It removes hashes too.
	Delete(keys ...string)
	// Append appends value to the string at key (creating it).
	Append(key string, value []byte)
	// IncrBy adds delta to the decimal integer at key (missing = 0) and
	// returns the new value.
	IncrBy(key string, delta int64) (int64, error)

	// HGet returns one field of the hash at key, or nil when missing.
	HGet(key, field string) ([]byte, error)
	// HSet sets one field of the hash at key.
	HSet(key, field string, value []byte)
	// HDel removes fields of the hash at key; missing fields are ignored.
	HDel(key string, fields ...string)
	// HGetAll returns every field of the hash at key (empty map when missing).
	HGetAll(key string) (map[string][]byte, error)
	// HLen returns the number of fields in the hash at key.
	HLen(key string) (int64, error)
}

// Engine is a transactional key-value backend that holds one volume.
// Implementations are safe for concurrent use.
type Engine interface {
	// Update runs fn in a read-write transaction and commits it. When a
	// concurrent writer changed a key fn read, the engine discards fn's
	// writes and runs fn again, a bounded number of times, then returns an
	// error wrapping ErrConflict. fn may therefore run more than once and
	// must have no effects outside tx. An error from fn aborts the
	// transaction and is returned as is (an optimistic engine first checks
	// that fn's reads were not stale; if they were, it re-runs fn instead,
	// so an error computed from a torn view never escapes). A broken
	// connection before the commit is sent is retried on a new connection.
	// If the commit's outcome is unknown (the connection broke after the
	// commit was sent), Update returns an error wrapping ErrCommitUnknown
	// and never a half-applied change.
	Update(ctx context.Context, fn func(tx Tx) error) error
	// View runs fn in a read-only transaction over a consistent snapshot
	// where the engine offers one (bbolt); on Redis reads are individually
	// atomic. Writes in View are an error.
	View(ctx context.Context, fn func(tx Tx) error) error
	// Incr atomically adds delta to the counter at key outside any
	// transaction and returns the new value (batched id allocation, usage).
	Incr(ctx context.Context, key string, delta int64) (int64, error)
	// Scan calls fn for every key starting with prefix (hashes included,
	// by their key), in no particular order, outside any transaction; used
	// by fsck/gc and session cleanup. fn returning false stops the scan.
	// Scan is not a snapshot: keys added or removed meanwhile may or may
	// not be reported, and on Redis a key may be reported more than once
	// (SCAN semantics), so fn must tolerate repeats.
	Scan(ctx context.Context, prefix string, fn func(key string) bool) error
	// Name describes the engine for messages, with any password removed,
	// e.g. "redis://host:6379/1" or "bolt:///var/lib/skiff/vol.db".
	Name() string
	// Close releases connections and locks.
	Close() error
	// Now returns the metadata server's current time (Redis TIME; the
	// local clock for an embedded engine). Session heartbeats and their
	// staleness are measured on this one clock, so clients whose local
	// clocks disagree still agree on which session is stale.
	Now(ctx context.Context) (time.Time, error)

	// HScan reads the hash at key in pages, outside any transaction:
	// it returns about count fields from cursor on ("" starts) and the
	// cursor of the next page ("" after the last one). A missing hash is
	// one empty page. Like Scan it is not a snapshot: fields added or
	// removed meanwhile may or may not be reported, and on Redis a field
	// may be reported more than once (HSCAN semantics), so callers that
	// need each field once must remove repeats. A page may hold more
	// than count fields (Redis returns a small hash whole).
	HScan(ctx context.Context, key, cursor string, count int) (fields []Field, next string, err error)
}

// Field is one field of a hash, as HScan returns it.
type Field struct {
	Name  string
	Value []byte
}
