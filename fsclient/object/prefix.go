package object

import (
	"context"
	"io"
	"strings"
)

// WithPrefix returns a Store that stores key under prefix+key in s. Keys
// returned by List have the prefix stripped, so callers never see it. The
// prefix is used verbatim: pass "vol1/" rather than "vol1" to get a
// directory-like prefix. An empty prefix returns s itself.
//
// The returned store has a Close method that closes s if s is an io.Closer.
func WithPrefix(s Store, prefix string) Store {
	if prefix == "" {
		return s
	}
	return &prefixed{s: s, prefix: prefix}
}

type prefixed struct {
	s      Store
	prefix string
}

var (
	_ Store     = (*prefixed)(nil)
	_ io.Closer = (*prefixed)(nil)
)

func (p *prefixed) Get(ctx context.Context, key string, off, limit int64) (io.ReadCloser, error) {
	return p.s.Get(ctx, p.prefix+key, off, limit)
}

func (p *prefixed) Put(ctx context.Context, key string, data []byte) error {
	return p.s.Put(ctx, p.prefix+key, data)
}

func (p *prefixed) Delete(ctx context.Context, key string) error {
	return p.s.Delete(ctx, p.prefix+key)
}

func (p *prefixed) Head(ctx context.Context, key string) (Info, error) {
	info, err := p.s.Head(ctx, p.prefix+key)
	if err != nil {
		return Info{}, err
	}
	info.Key = key
	return info, nil
}

func (p *prefixed) List(ctx context.Context, prefix, startAfter string, limit int) ([]Info, error) {
	if startAfter != "" {
		// Without this, startAfter "" would become p.prefix and exclude an
		// object named exactly p.prefix (the empty key), which no caller
		// can name anyway; with it, startAfter keeps its meaning.
		startAfter = p.prefix + startAfter
	}
	infos, err := p.s.List(ctx, p.prefix+prefix, startAfter, limit)
	if err != nil {
		return nil, err
	}
	out := infos[:0]
	for _, info := range infos {
		k, ok := strings.CutPrefix(info.Key, p.prefix)
		if !ok || k == "" {
			continue // cannot happen with a conforming s
		}
		info.Key = k
		out = append(out, info)
	}
	return out, nil
}

func (p *prefixed) String() string { return p.s.String() + p.prefix }

// Close closes the wrapped store if it is an io.Closer.
func (p *prefixed) Close() error {
	if c, ok := p.s.(io.Closer); ok {
		return c.Close()
	}
	return nil
}
