package meta

import (
	"context"
	"fmt"
	"sort"
)

// Report is the result of CheckTree.
type Report struct {
	Inodes   int      // inodes found
	Dirs     int      // directories reachable from the root
	Entries  int      // directory entries
	Problems []string // empty for a healthy tree
}

// OK reports whether CheckTree found no problem.
func (r Report) OK() bool { return len(r.Problems) == 0 }

// CheckTree verifies the namespace without changing it: every dentry
// points to an existing inode of the recorded type, every inode is reachable
// from the root or is an open-but-unlinked file, every link count equals the
// number of entries naming the inode (plus 2 + subdirectories for a
// directory), and every directory's Parent is the directory holding it. On
// engines without snapshots (Redis) run it on a quiescent volume: it reads
// key by key.
func (m *Meta) CheckTree(ctx context.Context) (Report, error) {
	var r Report
	problem := func(format string, args ...any) {
		r.Problems = append(r.Problems, fmt.Sprintf(format, args...))
	}
	var inos []Ino
	if err := m.engine.Scan(ctx, "i", func(k string) bool {
		if ino, ok := parseInoKey(k, "i"); ok {
			inos = append(inos, ino)
		}
		return true
	}); err != nil {
		return r, fmt.Errorf("meta check: scan inodes: %w", err)
	}
	sort.Slice(inos, func(i, j int) bool { return inos[i] < inos[j] })
	attrs := make(map[Ino]Attr, len(inos))
	const batch = 512
	for i := 0; i < len(inos); i += batch {
		part := inos[i:min(i+batch, len(inos))]
		err := m.view(ctx, func(t *txn) error {
			keys := make([]string, len(part))
			for j, ino := range part {
				keys[j] = inodeKey(ino)
			}
			vals, err := t.tx.MGet(keys...)
			if err != nil {
				return err
			}
			for j, b := range vals {
				if b == nil {
					continue
				}
				a, err := decodeAttr(b)
				if err != nil {
					problem("inode %d: %v", part[j], err)
					continue
				}
				attrs[part[j]] = a
			}
			return nil
		})
		if err != nil {
			return r, fmt.Errorf("meta check: read inodes: %w", err)
		}
	}
	r.Inodes = len(attrs)

	links := make(map[Ino]uint32)   // entries naming each inode
	subdirs := make(map[Ino]uint32) // subdirectories of each directory
	parents := make(map[Ino]Ino)    // directory -> directory holding it
	root, ok := attrs[RootIno]
	if !ok || root.Typ != TypeDir {
		problem("root inode is missing or not a directory")
		return r, nil
	}
	queue := []Ino{RootIno}
	seen := map[Ino]bool{RootIno: true}
	for len(queue) > 0 {
		dir := queue[0]
		queue = queue[1:]
		r.Dirs++
		var ents map[string][]byte
		if err := m.view(ctx, func(t *txn) error {
			var err error
			ents, err = t.tx.HGetAll(dirKey(dir))
			return err
		}); err != nil {
			return r, fmt.Errorf("meta check: read directory %d: %w", dir, err)
		}
		for name, v := range ents {
			r.Entries++
			typ, ino, err := decodeDentry(v)
			if err != nil {
				problem("entry %d/%q: %v", dir, name, err)
				continue
			}
			a, ok := attrs[ino]
			if !ok {
				problem("entry %d/%q points to missing inode %d", dir, name, ino)
				continue
			}
			if a.Typ != typ {
				problem("entry %d/%q has type %d, inode %d has type %d", dir, name, typ, ino, a.Typ)
			}
			links[ino]++
			if a.Typ == TypeDir {
				subdirs[dir]++
				if p, dup := parents[ino]; dup {
					problem("directory %d is in both %d and %d", ino, p, dir)
					continue
				}
				parents[ino] = dir
				if !seen[ino] {
					seen[ino] = true
					queue = append(queue, ino)
				}
			}
		}
	}

	var open map[Ino]bool
	if err := m.view(ctx, func(t *txn) error {
		open = make(map[Ino]bool)
		for _, ino := range inos {
			a, ok := attrs[ino]
			if !ok || a.Nlink != 0 {
				continue
			}
			n, err := t.tx.HLen(openKey(ino))
			if err != nil {
				return err
			}
			open[ino] = n > 0
		}
		return nil
	}); err != nil {
		return r, fmt.Errorf("meta check: read open files: %w", err)
	}

	for _, ino := range inos {
		a, ok := attrs[ino]
		if !ok {
			continue
		}
		if a.Typ == TypeDir {
			want := 2 + subdirs[ino]
			if ino != RootIno && links[ino] == 0 {
				problem("directory %d is not reachable from the root", ino)
				continue
			}
			if a.Nlink != want {
				problem("directory %d has nlink %d, want %d (2 + %d subdirectories)", ino, a.Nlink, want, subdirs[ino])
			}
			wantParent := parents[ino]
			if ino == RootIno {
				wantParent = RootIno
			}
			if a.Parent != wantParent {
				problem("directory %d records parent %d but is in %d", ino, a.Parent, wantParent)
			}
			continue
		}
		if a.Nlink != links[ino] {
			problem("inode %d has nlink %d but %d entries", ino, a.Nlink, links[ino])
		}
		if links[ino] == 0 && !open[ino] {
			problem("inode %d is not reachable and not open anywhere", ino)
		}
	}
	return r, nil
}
