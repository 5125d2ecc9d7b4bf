package redis

import (
	"context"
	"errors"
	"fmt"
	"strconv"

	"github.com/gomodule/redigo/redis"

	"github.com/skiff-fs/skiff/fsclient/meta/kv"
)

// command is one buffered write, keys already prefixed.
type command struct {
	name string
	args []any
}

// strEntry is what the transaction knows about a string key: either the
// whole value (known), or only bytes appended to a value not yet read.
type strEntry struct {
	known  bool
	exists bool
	val    []byte
	suffix []byte // !known: appended to whatever the server holds
}

// field is one written hash field; deleted marks an HDel.
type field struct {
	val     []byte
	deleted bool
}

// hashEntry is the transaction's writes to one hash. cleared means the
// hash was deleted (or overwritten by Set) in this transaction, so the
// server's fields no longer count.
type hashEntry struct {
	cleared bool
	fields  map[string]field
}

// tx is a kv.Tx over one pooled connection. In Update, reads WATCH their
// keys and writes go to cmds (sent at commit) and to the overlay (strs,
// hashes) so later reads see them. In View, reads are plain commands and
// writes are an error.
type tx struct {
	e        *Engine
	c        redis.Conn
	ctx      context.Context
	readOnly bool
	done     bool
	// err is sticky: a broken connection, or a write inside View. Every
	// later call returns it and Update/View act on it after fn.
	err error
	// broken is set (with err) when the connection failed: the engine
	// then re-runs fn on another connection.
	broken bool

	watched map[string]struct{}
	strs    map[string]*strEntry
	hashes  map[string]*hashEntry
	cmds    []command
}

func newTx(e *Engine, c redis.Conn, ctx context.Context, readOnly bool) *tx {
	return &tx{e: e, c: c, ctx: ctx, readOnly: readOnly,
		watched: map[string]struct{}{}, strs: map[string]*strEntry{}, hashes: map[string]*hashEntry{}}
}

var errUsedAfterFn = errors.New("redis: kv.Tx used after its transaction function returned")

func (t *tx) usable() error {
	if t.done {
		return errUsedAfterFn
	}
	return t.err
}

func (t *tx) fail(err error) {
	if t.err == nil {
		t.err = err
	}
}

// writable reports whether a write may be buffered.
func (t *tx) writable(op, key string) bool {
	if err := t.usable(); err != nil {
		t.fail(err)
		return false
	}
	if t.readOnly {
		t.fail(fmt.Errorf("redis: %s %q inside a read-only View transaction", op, key))
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

// fetch runs one read command. In Update it first WATCHes keys (in the
// same round trip). A transport failure is made sticky.
func (t *tx) fetch(keys []string, cmd string, args ...any) (any, error) {
	if err := t.usable(); err != nil {
		return nil, err
	}
	var toWatch []any
	if !t.readOnly {
		for _, k := range keys {
			if _, ok := t.watched[k]; !ok {
				toWatch = append(toWatch, t.e.key(k))
			}
		}
		if len(toWatch) > 0 {
			if err := t.c.Send("WATCH", toWatch...); err != nil {
				t.fail(err)
				t.broken = true
				return nil, err
			}
		}
	}
	r, err := redis.DoContext(t.c, t.ctx, cmd, args...)
	if err != nil {
		if t.ctx.Err() != nil {
			t.fail(t.ctx.Err())
			return nil, t.ctx.Err()
		}
		if isTransient(err) {
			t.fail(err)
			t.broken = true
		}
		return nil, err
	}
	for _, k := range keys {
		t.watched[k] = struct{}{}
	}
	return r, nil
}

func (t *tx) Get(key string) ([]byte, error) {
	se := t.strs[key]
	if se != nil && se.known {
		if err := t.usable(); err != nil {
			return nil, err
		}
		return clone(se.val), nil
	}
	v, err := redis.Bytes(t.fetch([]string{key}, "GET", t.e.key(key)))
	if errors.Is(err, redis.ErrNil) {
		v, err = nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("redis get %q: %w", key, err)
	}
	t.learn(key, v)
	return clone(t.strs[key].val), nil
}

// learn records the server's value of key, under any pending appends.
func (t *tx) learn(key string, v []byte) {
	se := t.strs[key]
	if se == nil {
		t.strs[key] = &strEntry{known: true, exists: v != nil, val: v}
		return
	}
	if se.known {
		return
	}
	se.known, se.exists = true, true
	se.val = append(clone(v), se.suffix...)
	if se.val == nil {
		se.val = []byte{}
	}
	se.suffix = nil
}

func (t *tx) MGet(keys ...string) ([][]byte, error) {
	if err := t.usable(); err != nil {
		return nil, err
	}
	var need []string
	seen := map[string]bool{}
	for _, k := range keys {
		if se := t.strs[k]; (se == nil || !se.known) && !seen[k] {
			seen[k] = true
			need = append(need, k)
		}
	}
	if len(need) > 0 {
		args := make([]any, len(need))
		for i, k := range need {
			args[i] = t.e.key(k)
		}
		vs, err := redis.ByteSlices(t.fetch(need, "MGET", args...))
		if err != nil {
			return nil, fmt.Errorf("redis mget %d keys: %w", len(need), err)
		}
		if len(vs) != len(need) {
			return nil, fmt.Errorf("redis mget: %d values for %d keys", len(vs), len(need))
		}
		for i, k := range need {
			t.learn(k, vs[i])
		}
	}
	out := make([][]byte, len(keys))
	for i, k := range keys {
		se := t.strs[k]
		if se.exists {
			out[i] = clone(se.val)
		}
	}
	return out, nil
}

// setLocal records key = v (v already owned by the tx).
func (t *tx) setLocal(key string, v []byte) {
	t.strs[key] = &strEntry{known: true, exists: true, val: v}
	t.hashes[key] = &hashEntry{cleared: true} // SET replaces a hash
}

func (t *tx) Set(key string, value []byte) {
	if !t.writable("set", key) {
		return
	}
	v := append([]byte{}, value...)
	t.setLocal(key, v)
	t.cmds = append(t.cmds, command{"SET", []any{t.e.key(key), v}})
}

func (t *tx) Delete(keys ...string) {
	if len(keys) == 0 || !t.writable("delete", keys[0]) {
		return
	}
	args := make([]any, len(keys))
	for i, k := range keys {
		t.strs[k] = &strEntry{known: true}
		t.hashes[k] = &hashEntry{cleared: true}
		args[i] = t.e.key(k)
	}
	t.cmds = append(t.cmds, command{"DEL", args})
}

func (t *tx) Append(key string, value []byte) {
	if !t.writable("append", key) {
		return
	}
	v := append([]byte{}, value...)
	switch se := t.strs[key]; {
	case se == nil:
		t.strs[key] = &strEntry{suffix: clone(v)}
	case se.known:
		se.val = append(append([]byte{}, se.val...), v...)
		se.exists = true
	default:
		se.suffix = append(se.suffix, v...)
	}
	t.cmds = append(t.cmds, command{"APPEND", []any{t.e.key(key), v}})
}

func (t *tx) IncrBy(key string, delta int64) (int64, error) {
	if t.readOnly {
		err := fmt.Errorf("redis: incrby %q inside a read-only View transaction", key)
		t.fail(err)
		return 0, err
	}
	v, err := t.Get(key) // WATCHes key unless the tx already knows it
	if err != nil {
		return 0, err
	}
	var n int64
	if v != nil {
		if n, err = strconv.ParseInt(string(v), 10, 64); err != nil {
			return 0, fmt.Errorf("redis incrby %q: value %q is not a decimal integer", key, v)
		}
	}
	if (delta > 0 && n > maxInt64-delta) || (delta < 0 && n < minInt64-delta) {
		return 0, fmt.Errorf("redis incrby %q: %d%+d overflows int64", key, n, delta)
	}
	n += delta
	nv := strconv.AppendInt(nil, n, 10)
	t.setLocal(key, nv)
	// SET of the computed value: the key is WATCHed, so this is INCRBY.
	t.cmds = append(t.cmds, command{"SET", []any{t.e.key(key), nv}})
	return n, nil
}

const (
	maxInt64 = int64(^uint64(0) >> 1)
	minInt64 = -maxInt64 - 1
)

func (t *tx) hash(key string) *hashEntry {
	h := t.hashes[key]
	if h == nil {
		h = &hashEntry{}
		t.hashes[key] = h
	}
	if h.fields == nil {
		h.fields = map[string]field{}
	}
	return h
}

func (t *tx) HGet(key, f string) ([]byte, error) {
	if err := t.usable(); err != nil {
		return nil, err
	}
	if h := t.hashes[key]; h != nil {
		if fv, ok := h.fields[f]; ok {
			if fv.deleted {
				return nil, nil
			}
			return clone(fv.val), nil
		}
		if h.cleared {
			return nil, nil
		}
	}
	v, err := redis.Bytes(t.fetch([]string{key}, "HGET", t.e.key(key), f))
	if errors.Is(err, redis.ErrNil) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("redis hget %q %q: %w", key, f, err)
	}
	return v, nil
}

func (t *tx) HSet(key, f string, value []byte) {
	if !t.writable("hset", key) {
		return
	}
	v := append([]byte{}, value...)
	t.hash(key).fields[f] = field{val: v}
	t.cmds = append(t.cmds, command{"HSET", []any{t.e.key(key), f, v}})
}

func (t *tx) HDel(key string, fields ...string) {
	if len(fields) == 0 || !t.writable("hdel", key) {
		return
	}
	h := t.hash(key)
	args := make([]any, 0, len(fields)+1)
	args = append(args, t.e.key(key))
	for _, f := range fields {
		h.fields[f] = field{deleted: true}
		args = append(args, f)
	}
	t.cmds = append(t.cmds, command{"HDEL", args})
}

func (t *tx) HGetAll(key string) (map[string][]byte, error) {
	if err := t.usable(); err != nil {
		return nil, err
	}
	out := map[string][]byte{}
	h := t.hashes[key]
	if h == nil || !h.cleared {
		vs, err := redis.Values(t.fetch([]string{key}, "HGETALL", t.e.key(key)))
		if err != nil {
			return nil, fmt.Errorf("redis hgetall %q: %w", key, err)
		}
		if len(vs)%2 != 0 {
			return nil, fmt.Errorf("redis hgetall %q: odd reply of %d elements", key, len(vs))
		}
		for i := 0; i < len(vs); i += 2 {
			k, err1 := redis.String(vs[i], nil)
			v, err2 := redis.Bytes(vs[i+1], nil)
			if err := errors.Join(err1, err2); err != nil {
				return nil, fmt.Errorf("redis hgetall %q: %w", key, err)
			}
			out[k] = v
		}
	}
	if h != nil {
		for f, fv := range h.fields {
			if fv.deleted {
				delete(out, f)
			} else {
				out[f] = clone(fv.val)
			}
		}
	}
	return out, nil
}

func (t *tx) HLen(key string) (int64, error) {
	if err := t.usable(); err != nil {
		return 0, err
	}
	if h := t.hashes[key]; h != nil {
		// Whether a written field is new depends on the server's
		// fields: count them all.
		m, err := t.HGetAll(key)
		return int64(len(m)), err
	}
	n, err := redis.Int64(t.fetch([]string{key}, "HLEN", t.e.key(key)))
	if err != nil {
		return 0, fmt.Errorf("redis hlen %q: %w", key, err)
	}
	return n, nil
}

var _ kv.Tx = (*tx)(nil)
