package objecttest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"

	"github.com/skiff-fs/skiff/fsclient/object"
)

// Op is a set of Store operations.
type Op uint8

// The operations of object.Store, to be or-ed together.
const (
	OpGet Op = 1 << iota
	OpPut
	OpDelete
	OpHead
	OpList

	OpAll = OpGet | OpPut | OpDelete | OpHead | OpList
)

func (o Op) String() string {
	var names []string
	for i, n := range []string{"get", "put", "delete", "head", "list"} {
		if o&(1<<i) != 0 {
			names = append(names, n)
		}
	}
	if len(names) == 0 {
		return "none"
	}
	return strings.Join(names, "|")
}

// ErrInjected is the error a Fault returns unless it names another.
var ErrInjected = errors.New("injected fault")

// Fault describes calls that should misbehave.
type Fault struct {
	// Ops are the operations the fault applies to; 0 means all.
	Ops Op
	// Key is the key the fault applies to (for List, the prefix
	// argument); "" means any.
	Key string
	// Times is how many matching calls misbehave before the fault removes
	// itself; 0 means every matching call until the fault is removed.
	Times int
	// Err is the error returned, wrapped with the operation and key; nil
	// means ErrInjected. Use object.ErrNotFound to simulate a lost object.
	Err error
	// After makes the call reach the underlying store first and then
	// return Err anyway, like a reply lost after the store acted (a Put
	// that stored the object, a Delete that deleted it).
	After bool
	// Corrupt, when set, makes matching Get calls succeed but pass the
	// bytes read through Corrupt, which changes them in place (see
	// FlipBit). Err and After are ignored. Get calls of other operations
	// in Ops are not affected; Corrupt applies only to OpGet.
	Corrupt func(data []byte)
}

// FlipBit flips the lowest bit of the middle byte of data, if any. It is
// the usual Fault.Corrupt.
func FlipBit(data []byte) {
	if len(data) > 0 {
		data[len(data)/2] ^= 1
	}
}

// Faulty is an object.Store that passes calls to another Store except
// where an injected Fault says otherwise. The zero value is not usable;
// call NewFaulty.
type Faulty struct {
	s  object.Store
	mu struct {
		sync.Mutex
		faults []*Fault // Times counts down in place
		calls  map[Op]int
	}
}

var (
	_ object.Store = (*Faulty)(nil)
	_ io.Closer    = (*Faulty)(nil)
)

// NewFaulty returns a Faulty over s with no faults injected.
func NewFaulty(s object.Store) *Faulty {
	f := &Faulty{s: s}
	f.mu.calls = make(map[Op]int)
	return f
}

// Inject adds a fault and returns a function that removes it. Faults are
// consulted in the order they were injected; the first that matches a
// call decides it.
func (f *Faulty) Inject(ft Fault) (remove func()) {
	if ft.Ops == 0 {
		ft.Ops = OpAll
	}
	p := &ft
	f.mu.Lock()
	f.mu.faults = append(f.mu.faults, p)
	f.mu.Unlock()
	return func() {
		f.mu.Lock()
		defer f.mu.Unlock()
		f.removeLocked(p)
	}
}

func (f *Faulty) removeLocked(p *Fault) {
	for i, q := range f.mu.faults {
		if q == p {
			f.mu.faults = append(f.mu.faults[:i:i], f.mu.faults[i+1:]...)
			return
		}
	}
}

// FailNext makes the next n calls of ops (any key) fail with ErrInjected.
func (f *Faulty) FailNext(ops Op, n int) {
	if n > 0 {
		f.Inject(Fault{Ops: ops, Times: n})
	}
}

// FailKey makes every call of ops on key fail with ErrInjected until the
// returned function is called.
func (f *Faulty) FailKey(ops Op, key string) (remove func()) {
	return f.Inject(Fault{Ops: ops, Key: key})
}

// CorruptKey makes every Get of key return data with one bit flipped
// until the returned function is called.
func (f *Faulty) CorruptKey(key string) (remove func()) {
	return f.Inject(Fault{Ops: OpGet, Key: key, Corrupt: FlipBit})
}

// Reset removes every fault.
func (f *Faulty) Reset() {
	f.mu.Lock()
	f.mu.faults = nil
	f.mu.Unlock()
}

// Calls returns how many calls of ops the store has seen, faulty or not.
func (f *Faulty) Calls(ops Op) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	n := 0
	for op, c := range f.mu.calls {
		if op&ops != 0 {
			n += c
		}
	}
	return n
}

// match counts the call and returns the fault that applies to it, if any.
func (f *Faulty) match(op Op, key string) *Fault {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.mu.calls[op]++
	for _, ft := range f.mu.faults {
		if ft.Ops&op == 0 || (ft.Key != "" && ft.Key != key) {
			continue
		}
		if ft.Corrupt != nil && op != OpGet {
			continue
		}
		c := *ft
		if ft.Times > 0 {
			ft.Times--
			if ft.Times == 0 {
				f.removeLocked(ft)
			}
		}
		return &c
	}
	return nil
}

func (f *Faulty) fail(ft *Fault, op Op, key string) error {
	err := ft.Err
	if err == nil {
		err = ErrInjected
	}
	return fmt.Errorf("%s %s %q: %w", f, op, key, err)
}

// Get implements object.Store.
func (f *Faulty) Get(ctx context.Context, key string, off, limit int64) (io.ReadCloser, error) {
	ft := f.match(OpGet, key)
	switch {
	case ft == nil:
		return f.s.Get(ctx, key, off, limit)
	case ft.Corrupt != nil:
		rc, err := f.s.Get(ctx, key, off, limit)
		if err != nil {
			return nil, err
		}
		defer rc.Close()
		data, err := io.ReadAll(rc)
		if err != nil {
			return nil, err
		}
		ft.Corrupt(data)
		return io.NopCloser(bytes.NewReader(data)), nil
	case ft.After:
		rc, err := f.s.Get(ctx, key, off, limit)
		if err != nil {
			return nil, err
		}
		rc.Close()
	}
	return nil, f.fail(ft, OpGet, key)
}

// Put implements object.Store.
func (f *Faulty) Put(ctx context.Context, key string, data []byte) error {
	ft := f.match(OpPut, key)
	if ft == nil {
		return f.s.Put(ctx, key, data)
	}
	if ft.After {
		if err := f.s.Put(ctx, key, data); err != nil {
			return err
		}
	}
	return f.fail(ft, OpPut, key)
}

// Delete implements object.Store.
func (f *Faulty) Delete(ctx context.Context, key string) error {
	ft := f.match(OpDelete, key)
	if ft == nil {
		return f.s.Delete(ctx, key)
	}
	if ft.After {
		if err := f.s.Delete(ctx, key); err != nil {
			return err
		}
	}
	return f.fail(ft, OpDelete, key)
}

// Head implements object.Store.
func (f *Faulty) Head(ctx context.Context, key string) (object.Info, error) {
	ft := f.match(OpHead, key)
	if ft == nil {
		return f.s.Head(ctx, key)
	}
	if ft.After {
		if _, err := f.s.Head(ctx, key); err != nil {
			return object.Info{}, err
		}
	}
	return object.Info{}, f.fail(ft, OpHead, key)
}

// List implements object.Store. A fault's Key is matched against prefix.
func (f *Faulty) List(ctx context.Context, prefix, startAfter string, limit int) ([]object.Info, error) {
	ft := f.match(OpList, prefix)
	if ft == nil {
		return f.s.List(ctx, prefix, startAfter, limit)
	}
	if ft.After {
		if _, err := f.s.List(ctx, prefix, startAfter, limit); err != nil {
			return nil, err
		}
	}
	return nil, f.fail(ft, OpList, prefix)
}

// String implements object.Store.
func (f *Faulty) String() string { return "faulty(" + f.s.String() + ")" }

// Close closes the underlying store if it is an io.Closer.
func (f *Faulty) Close() error {
	if c, ok := f.s.(io.Closer); ok {
		return c.Close()
	}
	return nil
}
