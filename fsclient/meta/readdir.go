package meta

import (
	"context"
	"fmt"
	"hash/maphash"
)

// DirPage is how many entries ReaddirPage reads per page by default.
const DirPage = 512

// ReaddirPage lists one page of a directory without copying the whole of
// it: about limit entries (DirPage when limit <= 0) from cursor on, and
// the cursor of the next page ("" after the last one). The first page
// (cursor "") starts with "." and "..". Entries come in the engine's
// order, not sorted, and a page may hold more than limit of them. The
// listing is not a snapshot: entries added or removed between pages may or
// may not appear, and on Redis an entry may appear on more than one page
// (HSCAN), so a caller that needs each name once filters with a NameSet.
// With plus every entry carries its full attributes (entries removed
// meanwhile are left out). The caller needs read permission on the
// directory; it is checked on every page.
func (m *Meta) ReaddirPage(ctx context.Context, c Caller, ino Ino, plus bool, cursor string, limit int) ([]Entry, string, error) {
	if limit <= 0 {
		limit = DirPage
	}
	var out []Entry
	err := m.view(ctx, func(t *txn) error {
		out = out[:0]
		d, err := t.dir(ino)
		if err != nil {
			return err
		}
		if err := access(d, &c, R_OK); err != nil {
			return err
		}
		if cursor != "" {
			return nil
		}
		out, err = t.dots(out, ino, d, plus)
		return err
	})
	if err != nil {
		return nil, "", wrap(err, "readdir %d", ino)
	}
	fields, next, err := m.engine.HScan(ctx, dirKey(ino), cursor, limit)
	if err != nil {
		return nil, "", wrap(err, "readdir %d", ino)
	}
	start := len(out)
	for _, f := range fields {
		typ, child, err := decodeDentry(f.Value)
		if err != nil {
			return nil, "", wrap(fmt.Errorf("entry %d/%q: %w", ino, f.Name, err), "readdir %d", ino)
		}
		out = append(out, Entry{Name: f.Name, Ino: child, Attr: Attr{Typ: typ}})
	}
	if !plus || len(out) == start {
		return out, next, nil
	}
	err = m.view(ctx, func(t *txn) error {
		inos := make([]Ino, 0, len(out)-start)
		for _, e := range out[start:] {
			inos = append(inos, e.Ino)
		}
		if err := t.loadAttrs(inos...); err != nil {
			return err
		}
		kept := out[:start]
		for _, e := range out[start:] {
			a, err := t.attr(e.Ino)
			if err != nil {
				continue // removed since the page was read
			}
			e.Attr = *a
			kept = append(kept, e)
		}
		out = kept
		return nil
	})
	if err != nil {
		return nil, "", wrap(err, "readdir %d", ino)
	}
	return out, next, nil
}

// NameSet remembers the names a listing has returned, so that names an
// engine reports again on a later page (Redis HSCAN may) are dropped. It
// keeps a 64-bit keyed hash per name (about 20-40 bytes each in a Go
// map, whatever the name's length: some 6 MiB for a listing of 200k
// entries). Two different names of one listing collide with probability
// about n²/2^65 (1e-9 for 200k names); the hash key is random per set, so
// no name can be chosen to collide.
type NameSet struct {
	seed maphash.Seed
	seen map[uint64]struct{}
}

// NewNameSet returns an empty set.
func NewNameSet() *NameSet {
	return &NameSet{seed: maphash.MakeSeed(), seen: make(map[uint64]struct{})}
}

// Add adds name and reports whether it was new.
func (s *NameSet) Add(name string) bool {
	h := maphash.String(s.seed, name)
	if _, ok := s.seen[h]; ok {
		return false
	}
	s.seen[h] = struct{}{}
	return true
}

// dots appends "." and ".." of directory ino (attributes d) to out; with
// plus ".." carries the parent's full attributes.
func (t *txn) dots(out []Entry, ino Ino, d *Attr, plus bool) ([]Entry, error) {
	out = append(out, Entry{Name: ".", Ino: ino, Attr: *d})
	pa := Attr{Typ: TypeDir}
	if plus {
		p, err := t.attr(d.Parent)
		if err != nil {
			return out, err
		}
		pa = *p
	}
	return append(out, Entry{Name: "..", Ino: d.Parent, Attr: pa}), nil
}
