package soak

import (
	"bytes"
	"crypto/sha256"
	"fmt"
	"sort"
	"sync"
)

// OpKind is the kind of a content change not yet acknowledged.
type OpKind int

const (
	// OpWrite wrote Data at Off.
	OpWrite OpKind = iota
	// OpTruncate set the size to Size.
	OpTruncate
)

// Op is one content change made through a handle after the file's last
// acknowledgement.
type Op struct {
	Kind OpKind
	Off  int64
	Data []byte
	Size int64
}

// File is the oracle's record of one regular file (see the package doc
// for the rules). Paths and flags are changed only by the worker that
// owns the file, under Oracle's lock; Mu is held by whoever reads or
// changes the file on a mount, so another client's cross-read never
// overlaps its owner's changes.
type File struct {
	Mu sync.Mutex

	ID int
	// Paths are the names the file may have: one, or two after a rename
	// whose outcome is unknown.
	Paths []string
	// MaybeAbsent: a create or unlink of it failed, so it may or may not
	// exist.
	MaybeAbsent bool
	// Gone: an unlink of it succeeded; no candidate path may exist.
	Gone bool
	// Limbo: its name or existence is unknown, so no worker touches it
	// again; it is checked only at the end.
	Limbo bool
	// Acked is the content as of the last close or fsync that returned
	// success (empty after a successful create).
	Acked []byte
	// Pending are the changes made since, in order.
	Pending []Op
	// Cur is what the owner's handle shows: Acked with Pending applied.
	Cur []byte
	// Tainted: a write, truncate, fsync or close failed, or the mount
	// holding its handle was killed. Pending may have been stored in
	// part, in any combination, so Acked never advances again.
	Tainted bool
	// Acks counts acknowledgements.
	Acks int
}

// Write records a write of data at off through the owner's handle.
func (f *File) Write(off int64, data []byte) {
	d := bytes.Clone(data)
	f.Pending = append(f.Pending, Op{Kind: OpWrite, Off: off, Data: d})
	end := off + int64(len(d))
	if end > int64(len(f.Cur)) {
		f.Cur = append(f.Cur, make([]byte, end-int64(len(f.Cur)))...)
	}
	copy(f.Cur[off:], d)
}

// Truncate records a truncate to size through the owner's handle.
func (f *File) Truncate(size int64) {
	f.Pending = append(f.Pending, Op{Kind: OpTruncate, Size: size})
	if size <= int64(len(f.Cur)) {
		f.Cur = f.Cur[:size]
	} else {
		f.Cur = append(f.Cur, make([]byte, size-int64(len(f.Cur)))...)
	}
}

// Ack records a successful fsync or close: everything written through
// the handle is acknowledged. A tainted file's acknowledgement does not
// advance (see Tainted).
func (f *File) Ack() {
	if f.Tainted {
		return
	}
	f.Acked = bytes.Clone(f.Cur)
	f.Pending = nil
	f.Acks++
}

// Taint records that the fate of the pending changes is unknown.
func (f *File) Taint() { f.Tainted = true }

// Exact reports whether the file's content is known exactly: nothing
// pending.
func (f *File) Exact() bool { return len(f.Pending) == 0 }

// CheckContent checks got, the file's content read back, against the
// record. It returns how many acknowledged bytes it compared (bytes that
// no later change could have altered) and an error describing the first
// violation:
//   - with nothing pending, got must equal Acked (sha256);
//   - otherwise every acknowledged byte that no pending write covers and
//     no pending truncate cut must read back, and every byte of got must
//     be the acknowledged byte, a byte some pending write put there, or
//     zero where a truncate or an extension may have left a hole; the
//     size is at most the largest size the file had since the
//     acknowledgement.
func (f *File) CheckContent(got []byte) (verified int64, err error) {
	if len(f.Pending) == 0 {
		if sha256.Sum256(got) != sha256.Sum256(f.Acked) {
			return 0, fmt.Errorf("content differs from the acknowledged state: %s", diff(f.Acked, got))
		}
		return int64(len(f.Acked)), nil
	}
	maxSize := int64(len(f.Acked))
	minCut := int64(-1) // the smallest pending truncate size
	for _, op := range f.Pending {
		switch op.Kind {
		case OpWrite:
			maxSize = max(maxSize, op.Off+int64(len(op.Data)))
		case OpTruncate:
			maxSize = max(maxSize, op.Size)
			if minCut < 0 || op.Size < minCut {
				minCut = op.Size
			}
		}
	}
	if int64(len(got)) > maxSize {
		return 0, fmt.Errorf("size %d exceeds the largest size %d the file had since its last acknowledgement", len(got), maxSize)
	}
	covered := func(p int64) (bool, []byte) {
		var vals []byte
		for _, op := range f.Pending {
			if op.Kind == OpWrite && p >= op.Off && p < op.Off+int64(len(op.Data)) {
				vals = append(vals, op.Data[p-op.Off])
			}
		}
		return len(vals) > 0, vals
	}
	for p := int64(0); p < int64(len(f.Acked)); p++ {
		cov, _ := covered(p)
		if cov || (minCut >= 0 && minCut <= p) {
			continue
		}
		if p >= int64(len(got)) {
			return verified, fmt.Errorf("acknowledged byte at offset %d lost: file is only %d bytes (acknowledged %d)", p, len(got), len(f.Acked))
		}
		if got[p] != f.Acked[p] {
			return verified, fmt.Errorf("acknowledged byte at offset %d is %#x, want %#x", p, got[p], f.Acked[p])
		}
		verified++
	}
	for p := int64(0); p < int64(len(got)); p++ {
		b := got[p]
		if p < int64(len(f.Acked)) && b == f.Acked[p] {
			continue
		}
		if b == 0 && (p >= int64(len(f.Acked)) || (minCut >= 0 && minCut <= p)) {
			continue
		}
		if _, vals := covered(p); bytes.IndexByte(vals, b) >= 0 {
			continue
		}
		return verified, fmt.Errorf("byte at offset %d is %#x, which neither the acknowledged state nor any later write put there", p, b)
	}
	return verified, nil
}

func diff(want, got []byte) string {
	n := min(len(want), len(got))
	for i := 0; i < n; i++ {
		if want[i] != got[i] {
			return fmt.Sprintf("first difference at offset %d (got %#x, want %#x; sizes got %d, want %d)", i, got[i], want[i], len(got), len(want))
		}
	}
	return fmt.Sprintf("sizes differ: got %d, want %d", len(got), len(want))
}

// Dir is the oracle's record of a directory made by a worker.
type Dir struct {
	Path  string
	Maybe bool // its mkdir failed: it may or may not exist
}

// Oracle is the acknowledged state of the whole run: every file and
// directory the workers made. It is safe for concurrent use; each File
// is changed only by its owner.
type Oracle struct {
	mu    sync.Mutex
	files []*File
	dirs  []*Dir
}

// NewFile records a file at path; maybe says its create failed.
func (o *Oracle) NewFile(path string, maybe bool) *File {
	o.mu.Lock()
	defer o.mu.Unlock()
	f := &File{ID: len(o.files), Paths: []string{path}, MaybeAbsent: maybe, Limbo: maybe}
	o.files = append(o.files, f)
	return f
}

// NewDir records a directory; maybe says its mkdir failed.
func (o *Oracle) NewDir(path string, maybe bool) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.dirs = append(o.dirs, &Dir{Path: path, Maybe: maybe})
}

// Renamed records a rename of f to path: done says it succeeded,
// otherwise its outcome is unknown.
func (o *Oracle) Renamed(f *File, path string, done bool) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if done {
		f.Paths = []string{path}
		return
	}
	f.Paths = append(f.Paths, path)
	f.Limbo = true
}

// Unlinked records an unlink of f: done says it succeeded.
func (o *Oracle) Unlinked(f *File, done bool) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if done {
		f.Gone = true
		return
	}
	f.MaybeAbsent = true
	f.Limbo = true
}

// Files returns the files recorded so far.
func (o *Oracle) Files() []*File {
	o.mu.Lock()
	defer o.mu.Unlock()
	return append([]*File(nil), o.files...)
}

// Result is what Verify found.
type Result struct {
	Files, ExactFiles, InexactFiles int
	BytesVerified                   int64
	Problems                        []string
}

// Verify compares the tree read back after the run (regular files by
// path, with their content, and directories; paths relative to the
// volume root, under the workers' directories only) with the oracle:
// every file certainly present is at its one path with content passing
// CheckContent; a file whose rename's outcome is unknown is at exactly
// one of its paths (or none, if it may be absent); an unlinked file is
// at none; every entry on the volume is one the oracle knows; every
// directory certainly made exists.
func (o *Oracle) Verify(files map[string][]byte, dirs map[string]bool) Result {
	o.mu.Lock()
	defer o.mu.Unlock()
	var r Result
	claimed := map[string]bool{}
	for _, f := range o.files {
		var found []string
		for _, p := range f.Paths {
			claimed[p] = true
			if _, ok := files[p]; ok {
				found = append(found, p)
			}
		}
		switch {
		case f.Gone:
			if len(found) > 0 {
				r.Problems = append(r.Problems, fmt.Sprintf("file %d: unlinked, but %v exists", f.ID, found))
			}
			continue
		case len(found) > 1:
			r.Problems = append(r.Problems, fmt.Sprintf("file %d: exists at more than one of %v", f.ID, found))
			continue
		case len(found) == 0:
			if !f.MaybeAbsent {
				r.Problems = append(r.Problems, fmt.Sprintf("file %d: missing (acknowledged at %v, %d bytes)", f.ID, f.Paths, len(f.Acked)))
			}
			continue
		}
		r.Files++
		if f.Exact() {
			r.ExactFiles++
		} else {
			r.InexactFiles++
		}
		n, err := f.CheckContent(files[found[0]])
		r.BytesVerified += n
		if err != nil {
			r.Problems = append(r.Problems, fmt.Sprintf("file %d at %s: %v", f.ID, found[0], err))
		}
	}
	for _, d := range o.dirs {
		claimed[d.Path] = true
		if !d.Maybe && !dirs[d.Path] {
			r.Problems = append(r.Problems, fmt.Sprintf("directory %s: missing", d.Path))
		}
	}
	var unknown []string
	for p := range files {
		if !claimed[p] {
			unknown = append(unknown, p)
		}
	}
	for p := range dirs {
		if !claimed[p] {
			unknown = append(unknown, p+"/")
		}
	}
	sort.Strings(unknown)
	for _, p := range unknown {
		r.Problems = append(r.Problems, fmt.Sprintf("%s: on the volume but never made by a worker", p))
	}
	return r
}
