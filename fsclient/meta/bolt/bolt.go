package bolt

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	bbolt "go.etcd.io/bbolt"
	bberrors "go.etcd.io/bbolt/errors"

	"github.com/skiff-fs/skiff/fsclient/meta/kv"
)

// Scheme is the META_URL scheme of this engine.
const Scheme = "bolt://"

var (
	bucketKV   = []byte("kv")
	bucketHash = []byte("h")
)

// Options tune Open. The zero value is the production default.
type Options struct {
	// LockTimeout is how long Open waits for another process to release
	// the file before failing with kv.ErrLocked. Default 1s.
	LockTimeout time.Duration
	// NoSync skips fdatasync after each commit: faster, but a machine
	// crash may lose recent commits (never corrupts the file). Default
	// false (durable). Meant for tests and scratch volumes.
	NoSync bool
	// ReadOnly opens the file read-only (shared lock; Update fails). The
	// file must exist. Default false.
	ReadOnly bool
	// FileMode is the permission of a newly created file. Default 0600.
	FileMode os.FileMode
}

// Engine is the bbolt kv.Engine. Create it with Open.
type Engine struct {
	db   *bbolt.DB
	path string
}

var _ kv.Engine = (*Engine)(nil)

// Open opens (creating it and its parent directory if missing) the bbolt
// file at path. path may also be given as a META_URL "bolt://PATH".
func Open(path string, opts Options) (kv.Engine, error) {
	return open(path, opts)
}

func open(path string, opts Options) (*Engine, error) {
	path = strings.TrimPrefix(path, Scheme)
	if path == "" {
		return nil, errors.New("bolt: empty path in META_URL (want bolt:///path/to/volume.db)")
	}
	if opts.LockTimeout <= 0 {
		opts.LockTimeout = time.Second
	}
	if opts.FileMode == 0 {
		opts.FileMode = 0o600
	}
	if abs, err := filepath.Abs(path); err == nil {
		path = abs
	}
	// bbolt initialises a file it finds empty by writing its first pages,
	// and a block device reports size 0: only a regular file, or a path
	// that does not exist yet, may be opened. The descriptor is checked
	// again after open (openRegular), so a path swapped in between is
	// refused too.
	if fi, err := os.Stat(path); err == nil && !fi.Mode().IsRegular() {
		return nil, notRegular(path, fi.Mode())
	}
	if !opts.ReadOnly {
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			return nil, fmt.Errorf("create directory for volume metadata %s: %w", path, err)
		}
	}
	db, err := bbolt.Open(path, opts.FileMode, &bbolt.Options{
		Timeout:  opts.LockTimeout,
		NoSync:   opts.NoSync,
		ReadOnly: opts.ReadOnly,
		OpenFile: openRegular,
	})
	if errors.Is(err, bberrors.ErrTimeout) {
		return nil, &lockedError{path: path}
	}
	var nr *notRegularError
	if errors.As(err, &nr) {
		return nil, nr
	}
	if err != nil {
		return nil, fmt.Errorf("open volume metadata %s: %w", path, err)
	}
	if !opts.ReadOnly {
		err = db.Update(func(btx *bbolt.Tx) error {
			for _, b := range [][]byte{bucketKV, bucketHash} {
				if _, err := btx.CreateBucketIfNotExists(b); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			db.Close()
			return nil, fmt.Errorf("initialise volume metadata %s: %w", path, err)
		}
	}
	return &Engine{db: db, path: path}, nil
}

// openRegular is os.OpenFile that refuses, after opening, anything but a
// regular file (O_NONBLOCK: a FIFO swapped in must not block the open):
// the check on the descriptor itself, which no rename or
// symlink swap after the os.Stat in open can get past.
func openRegular(name string, flag int, perm os.FileMode) (*os.File, error) {
	f, err := os.OpenFile(name, flag|syscall.O_CLOEXEC|syscall.O_NONBLOCK, perm)
	if err != nil {
		return nil, err
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, err
	}
	if !fi.Mode().IsRegular() {
		f.Close()
		return nil, notRegular(name, fi.Mode())
	}
	return f, nil
}

// notRegularError refuses a bolt:// path that is a device, a directory, a
// FIFO or a socket.
type notRegularError struct {
	path string
	kind string
}

func notRegular(path string, m os.FileMode) *notRegularError {
	kind := "not a regular file"
	switch {
	case m&os.ModeDevice != 0:
		kind = "a device"
	case m.IsDir():
		kind = "a directory"
	case m&os.ModeNamedPipe != 0:
		kind = "a FIFO"
	case m&os.ModeSocket != 0:
		kind = "a socket"
	}
	return &notRegularError{path: path, kind: kind}
}

func (e *notRegularError) Error() string {
	return fmt.Sprintf("bolt:// refuses %s: it is %s; give the path of a regular file or of one that does not exist yet", e.path, e.kind)
}

// lockedError is returned when another process holds the file.
type lockedError struct{ path string }

func (e *lockedError) Error() string {
	return fmt.Sprintf("volume metadata %s is in use by another skiff process (is it mounted? unmount it or use that mount)", e.path)
}

func (e *lockedError) Unwrap() error { return kv.ErrLocked }

// Name returns "bolt://" followed by the absolute path of the file.
func (e *Engine) Name() string { return Scheme + e.path }

// Close releases the file and its lock.
func (e *Engine) Close() error { return e.db.Close() }

// Update runs fn in one bbolt read-write transaction.
func (e *Engine) Update(ctx context.Context, fn func(tx kv.Tx) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	return e.db.Update(func(btx *bbolt.Tx) error {
		t := &tx{btx: btx}
		err := fn(t)
		t.btx = nil // a Tx must not be used after fn returns
		if err != nil {
			return err
		}
		if t.err != nil {
			return t.err
		}
		// A cancelled context rolls back rather than committing work the
		// caller has given up on.
		return ctx.Err()
	})
}

// View runs fn in one bbolt read-only transaction (a consistent snapshot).
func (e *Engine) View(ctx context.Context, fn func(tx kv.Tx) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	return e.db.View(func(btx *bbolt.Tx) error {
		t := &tx{btx: btx, readOnly: true}
		err := fn(t)
		t.btx = nil
		if err != nil {
			return err
		}
		return t.err
	})
}

// Incr adds delta to the decimal counter at key in its own transaction.
func (e *Engine) Incr(ctx context.Context, key string, delta int64) (int64, error) {
	var n int64
	err := e.Update(ctx, func(t kv.Tx) error {
		var err error
		n, err = t.IncrBy(key, delta)
		return err
	})
	return n, err
}

// Scan calls fn for each string or hash key starting with prefix, from one
// read-only snapshot, each key once. fn must not call into e (bbolt does
// not allow an Update while this View is open in the same goroutine).
func (e *Engine) Scan(ctx context.Context, prefix string, fn func(key string) bool) error {
	p := []byte(prefix)
	return e.db.View(func(btx *bbolt.Tx) error {
		kvb, hb := btx.Bucket(bucketKV), btx.Bucket(bucketHash)
		var kc, hc *bbolt.Cursor
		var kk, hk []byte
		if kvb != nil {
			kc = kvb.Cursor()
			kk, _ = kc.Seek(p)
		}
		if hb != nil {
			hc = hb.Cursor()
			hk, _ = hc.Seek(p)
		}
		// Merge the two sorted cursors so a key that is both (which
		// Set prevents, but an old file might hold) is reported once.
		for n := 0; ; n++ {
			if n%1024 == 0 {
				if err := ctx.Err(); err != nil {
					return err
				}
			}
			kok := kk != nil && bytes.HasPrefix(kk, p)
			hok := hk != nil && bytes.HasPrefix(hk, p)
			var key []byte
			switch {
			case !kok && !hok:
				return nil
			case kok && (!hok || bytes.Compare(kk, hk) < 0):
				key = kk
				kk, _ = kc.Next()
			case hok && (!kok || bytes.Compare(hk, kk) < 0):
				key = hk
				hk, _ = hc.Next()
			default: // equal
				key = kk
				kk, _ = kc.Next()
				hk, _ = hc.Next()
			}
			if !fn(string(key)) {
				return nil
			}
		}
	})
}

// tx implements kv.Tx over one bbolt transaction. err is the first failed
// write (or a write inside View); it fails the transaction at the end and
// every later read, so fn cannot go on believing a write happened.
type tx struct {
	btx      *bbolt.Tx
	readOnly bool
	err      error
}

var errUsedAfterFn = errors.New("bolt: kv.Tx used after its transaction function returned")

func (t *tx) check() error {
	if t.btx == nil {
		return errUsedAfterFn
	}
	return t.err
}

// fail records the first write error.
func (t *tx) fail(err error) {
	if t.err == nil {
		t.err = err
	}
}

// writable reports whether a write may proceed, recording why not.
func (t *tx) writable(op, key string) bool {
	if t.btx == nil {
		t.fail(errUsedAfterFn)
		return false
	}
	if t.err != nil {
		return false
	}
	if t.readOnly {
		t.fail(fmt.Errorf("bolt: %s %q inside a read-only View transaction", op, key))
		return false
	}
	return true
}

func clone(b []byte) []byte {
	if b == nil {
		return nil
	}
	return append(make([]byte, 0, len(b)), b...)
}

func (t *tx) kv() *bbolt.Bucket { return t.btx.Bucket(bucketKV) }

func (t *tx) hash(key string) *bbolt.Bucket {
	hb := t.btx.Bucket(bucketHash)
	if hb == nil {
		return nil
	}
	return hb.Bucket([]byte(key))
}

func (t *tx) get(key string) []byte {
	b := t.kv()
	if b == nil {
		return nil
	}
	return clone(b.Get([]byte(key)))
}

func (t *tx) Get(key string) ([]byte, error) {
	if err := t.check(); err != nil {
		return nil, err
	}
	return t.get(key), nil
}

func (t *tx) MGet(keys ...string) ([][]byte, error) {
	if err := t.check(); err != nil {
		return nil, err
	}
	out := make([][]byte, len(keys))
	for i, k := range keys {
		out[i] = t.get(k)
	}
	return out, nil
}

func (t *tx) put(op, key string, value []byte) {
	if err := t.deleteHash(key); err != nil {
		t.fail(fmt.Errorf("bolt %s %q: %w", op, key, err))
		return
	}
	// bbolt keeps a reference to value until commit; copy so the caller
	// may reuse its buffer (and nil becomes an empty value).
	if err := t.kv().Put([]byte(key), append([]byte{}, value...)); err != nil {
		t.fail(fmt.Errorf("bolt %s %q: %w", op, key, err))
	}
}

func (t *tx) Set(key string, value []byte) {
	if !t.writable("set", key) {
		return
	}
	t.put("set", key, value)
}

func (t *tx) deleteHash(key string) error {
	hb := t.btx.Bucket(bucketHash)
	if key == "" || hb.Bucket([]byte(key)) == nil {
		return nil
	}
	return hb.DeleteBucket([]byte(key))
}

func (t *tx) Delete(keys ...string) {
	for _, k := range keys {
		if !t.writable("delete", k) {
			return
		}
		if k == "" {
			continue // cannot exist
		}
		if err := t.kv().Delete([]byte(k)); err != nil {
			t.fail(fmt.Errorf("bolt delete %q: %w", k, err))
			return
		}
		if err := t.deleteHash(k); err != nil {
			t.fail(fmt.Errorf("bolt delete hash %q: %w", k, err))
			return
		}
	}
}

func (t *tx) Append(key string, value []byte) {
	if !t.writable("append", key) {
		return
	}
	old := t.kv().Get([]byte(key))
	t.put("append", key, append(clone(old), value...))
}

func (t *tx) IncrBy(key string, delta int64) (int64, error) {
	if err := t.check(); err != nil {
		return 0, err
	}
	if t.readOnly {
		err := fmt.Errorf("bolt: incrby %q inside a read-only View transaction", key)
		t.fail(err)
		return 0, err
	}
	var n int64
	if old := t.kv().Get([]byte(key)); old != nil {
		v, err := strconv.ParseInt(string(old), 10, 64)
		if err != nil {
			return 0, fmt.Errorf("bolt incrby %q: value %q is not a decimal integer", key, old)
		}
		n = v
	}
	if (delta > 0 && n > maxInt64-delta) || (delta < 0 && n < minInt64-delta) {
		return 0, fmt.Errorf("bolt incrby %q: %d%+d overflows int64", key, n, delta)
	}
	n += delta
	t.put("incrby", key, strconv.AppendInt(nil, n, 10))
	if t.err != nil {
		return 0, t.err
	}
	return n, nil
}

const (
	maxInt64 = int64(^uint64(0) >> 1)
	minInt64 = -maxInt64 - 1
)

func (t *tx) HGet(key, field string) ([]byte, error) {
	if err := t.check(); err != nil {
		return nil, err
	}
	h := t.hash(key)
	if h == nil {
		return nil, nil
	}
	return clone(h.Get([]byte(field))), nil
}

func (t *tx) HSet(key, field string, value []byte) {
	if !t.writable("hset", key) {
		return
	}
	if key == "" {
		t.fail(errors.New("bolt hset: empty key"))
		return
	}
	if err := t.kv().Delete([]byte(key)); err != nil {
		t.fail(fmt.Errorf("bolt hset %q: %w", key, err))
		return
	}
	h, err := t.btx.Bucket(bucketHash).CreateBucketIfNotExists([]byte(key))
	if err != nil {
		t.fail(fmt.Errorf("bolt hset %q: %w", key, err))
		return
	}
	if err := h.Put([]byte(field), append([]byte{}, value...)); err != nil {
		t.fail(fmt.Errorf("bolt hset %q %q: %w", key, field, err))
	}
}

func (t *tx) HDel(key string, fields ...string) {
	if !t.writable("hdel", key) {
		return
	}
	h := t.hash(key)
	if h == nil {
		return
	}
	for _, f := range fields {
		if f == "" {
			continue
		}
		if err := h.Delete([]byte(f)); err != nil {
			t.fail(fmt.Errorf("bolt hdel %q %q: %w", key, f, err))
			return
		}
	}
	// Like Redis, a hash with no fields does not exist.
	if k, _ := h.Cursor().First(); k == nil {
		if err := t.deleteHash(key); err != nil {
			t.fail(fmt.Errorf("bolt hdel %q: %w", key, err))
		}
	}
}

func (t *tx) HGetAll(key string) (map[string][]byte, error) {
	if err := t.check(); err != nil {
		return nil, err
	}
	out := map[string][]byte{}
	h := t.hash(key)
	if h == nil {
		return out, nil
	}
	err := h.ForEach(func(k, v []byte) error {
		out[string(k)] = clone(v)
		return nil
	})
	return out, err
}

func (t *tx) HLen(key string) (int64, error) {
	if err := t.check(); err != nil {
		return 0, err
	}
	h := t.hash(key)
	if h == nil {
		return 0, nil
	}
	// Stats() only sees committed pages; count with a cursor so the
	// transaction's own writes are included.
	var n int64
	c := h.Cursor()
	for k, _ := c.First(); k != nil; k, _ = c.Next() {
		n++
	}
	return n, nil
}
