package dir

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"

	"github.com/skiff-fs/skiff/fsclient/object"
)

// tmpPrefix starts the name of every temporary file. Keys may not have a
// segment with this prefix, so temporary files never collide with objects.
const tmpPrefix = ".skiff-tmp-"

// Store is an object.Store over a local directory.
type Store struct {
	root string // absolute, cleaned
}

var _ object.Store = (*Store)(nil)

// New returns a Store rooted at root, which may be relative. It creates
// root (and its parents) if it does not exist, and fails if root is not a
// directory.
func New(root string) (*Store, error) {
	if root == "" {
		return nil, errors.New("dir store: empty directory path")
	}
	abs, err := filepath.Abs(root)
	if err != nil {
		return nil, fmt.Errorf("dir store %q: %w", root, err)
	}
	if err := os.MkdirAll(abs, 0o755); err != nil {
		return nil, fmt.Errorf("dir store: create %s: %w", abs, err)
	}
	fi, err := os.Stat(abs)
	if err != nil {
		return nil, fmt.Errorf("dir store: %w", err)
	}
	if !fi.IsDir() {
		return nil, fmt.Errorf("dir store: %s is not a directory", abs)
	}
	return &Store{root: abs}, nil
}

// Root returns the absolute path of the store's directory.
func (s *Store) Root() string { return s.root }

// String returns "file://ROOT/".
func (s *Store) String() string { return "file://" + filepath.ToSlash(s.root) + "/" }

// CheckKey reports whether key can be stored, with an error wrapping
// object.ErrInvalidKey that says why not.
func CheckKey(key string) error {
	why := ""
	switch {
	case key == "":
		why = "it is empty"
	case strings.HasPrefix(key, "/"):
		why = "it starts with '/'"
	case strings.HasSuffix(key, "/"):
		why = "it ends with '/'"
	case strings.IndexByte(key, 0) >= 0:
		why = "it contains a NUL byte"
	default:
		why = checkSegments(key)
	}
	if why != "" {
		return fmt.Errorf("%w %q: %s", object.ErrInvalidKey, key, why)
	}
	return nil
}

// checkSegments checks the '/'-separated segments of a key or of a
// directory path without its trailing '/'. It returns why they are not
// acceptable, or "".
func checkSegments(p string) string {
	for seg := range strings.SplitSeq(p, "/") {
		switch {
		case seg == "":
			return "it has an empty segment (\"//\")"
		case seg == "." || seg == "..":
			return fmt.Sprintf("it has a %q segment", seg)
		case strings.HasPrefix(seg, tmpPrefix):
			return fmt.Sprintf("segments starting with %q are reserved", tmpPrefix)
		}
	}
	return ""
}

func (s *Store) path(key string) string {
	return filepath.Join(s.root, filepath.FromSlash(key))
}

// isMissing reports whether err from opening or statting a key's path
// means there is no such object: the file or a parent is missing, or a
// parent is a file.
func isMissing(err error) bool {
	return errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ENOTDIR)
}

// Get implements object.Store.
func (s *Store) Get(ctx context.Context, key string, off, limit int64) (io.ReadCloser, error) {
	if err := CheckKey(key); err != nil {
		return nil, err
	}
	if off < 0 || limit < -1 {
		return nil, fmt.Errorf("%s get %q: invalid range off=%d limit=%d", s, key, off, limit)
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("%s get %q: %w", s, key, err)
	}
	f, err := os.Open(s.path(key))
	if err != nil {
		if isMissing(err) {
			return nil, fmt.Errorf("%s get %q: %w", s, key, object.ErrNotFound)
		}
		return nil, fmt.Errorf("%s get %q: %w", s, key, err)
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("%s get %q: %w", s, key, err)
	}
	if !fi.Mode().IsRegular() {
		f.Close()
		return nil, fmt.Errorf("%s get %q: %w", s, key, object.ErrNotFound)
	}
	n := limit
	if n < 0 || n > math.MaxInt64-off {
		n = math.MaxInt64 - off
	}
	return &reader{ctx: ctx, f: f, r: io.NewSectionReader(f, off, n)}, nil
}

// reader reads a section of an open file and stops once ctx is done.
type reader struct {
	ctx context.Context
	f   *os.File
	r   *io.SectionReader
}

func (r *reader) Read(p []byte) (int, error) {
	if err := r.ctx.Err(); err != nil {
		return 0, err
	}
	return r.r.Read(p)
}

func (r *reader) Close() error { return r.f.Close() }

// Head implements object.Store.
func (s *Store) Head(ctx context.Context, key string) (object.Info, error) {
	if err := CheckKey(key); err != nil {
		return object.Info{}, err
	}
	if err := ctx.Err(); err != nil {
		return object.Info{}, fmt.Errorf("%s head %q: %w", s, key, err)
	}
	fi, err := os.Stat(s.path(key))
	if err != nil {
		if isMissing(err) {
			return object.Info{}, fmt.Errorf("%s head %q: %w", s, key, object.ErrNotFound)
		}
		return object.Info{}, fmt.Errorf("%s head %q: %w", s, key, err)
	}
	if !fi.Mode().IsRegular() {
		return object.Info{}, fmt.Errorf("%s head %q: %w", s, key, object.ErrNotFound)
	}
	return object.Info{Key: key, Size: fi.Size(), ModTime: fi.ModTime()}, nil
}

// Put implements object.Store.
func (s *Store) Put(ctx context.Context, key string, data []byte) error {
	if err := CheckKey(key); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("%s put %q: %w", s, key, err)
	}
	if err := s.put(ctx, key, data); err != nil {
		return fmt.Errorf("%s put %q: %w", s, key, err)
	}
	return nil
}

func (s *Store) put(ctx context.Context, key string, data []byte) (err error) {
	path := s.path(key)
	dir := filepath.Dir(path)
	f, err := createTemp(dir)
	if err != nil {
		return err
	}
	tmp := f.Name()
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(tmp)
		}
	}()
	if _, err := f.Write(data); err != nil {
		return err
	}
	if err := f.Sync(); err != nil {
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		return err
	}
	return syncDir(dir)
}

// createTemp creates a temporary file in dir, creating dir if needed. It
// retries a few times because a concurrent Delete may remove dir once it
// is empty, between MkdirAll and the file's creation.
func createTemp(dir string) (*os.File, error) {
	for attempt := 0; ; attempt++ {
		f, err := os.CreateTemp(dir, tmpPrefix+"*")
		if err == nil || !errors.Is(err, fs.ErrNotExist) || attempt == 10 {
			return f, err
		}
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return nil, err
		}
	}
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			// A concurrent Delete removed the new file and its directory;
			// the Put happened, then the Delete.
			return nil
		}
		return err
	}
	defer d.Close()
	return d.Sync()
}

// Delete implements object.Store. It also removes the directories the
// object leaves empty, up to but not including the root.
func (s *Store) Delete(ctx context.Context, key string) error {
	if err := CheckKey(key); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("%s delete %q: %w", s, key, err)
	}
	path := s.path(key)
	fi, err := os.Lstat(path)
	switch {
	case isMissing(err):
		return nil
	case err != nil:
		return fmt.Errorf("%s delete %q: %w", s, key, err)
	case fi.IsDir():
		return nil // a directory is not an object
	}
	if err := os.Remove(path); err != nil && !isMissing(err) {
		return fmt.Errorf("%s delete %q: %w", s, key, err)
	}
	for dir := filepath.Dir(path); dir != s.root && strings.HasPrefix(dir, s.root); dir = filepath.Dir(dir) {
		// rmdir fails on a non-empty directory, which ends the climb; a
		// concurrent Put recreates what we remove.
		if syscall.Rmdir(dir) != nil {
			break
		}
	}
	return nil
}

// List implements object.Store.
func (s *Store) List(ctx context.Context, prefix, startAfter string, limit int) ([]object.Info, error) {
	if limit <= 0 {
		limit = object.DefaultListLimit
	}
	// Start at the deepest directory the prefix names. If that directory
	// is not a valid key path, no key can have the prefix.
	base := ""
	if i := strings.LastIndexByte(prefix, '/'); i >= 0 {
		base = prefix[:i+1]
		if base == "/" || checkSegments(base[:len(base)-1]) != "" || strings.IndexByte(base, 0) >= 0 {
			return nil, nil
		}
	}
	l := lister{ctx: ctx, s: s, prefix: prefix, startAfter: startAfter, limit: limit}
	if _, err := l.walk(base); err != nil {
		return nil, fmt.Errorf("%s list prefix %q after %q: %w", s, prefix, startAfter, err)
	}
	return l.out, nil
}

type lister struct {
	ctx                context.Context
	s                  *Store
	prefix, startAfter string
	limit              int
	out                []object.Info
}

type entry struct {
	key   string // for a directory, its path with a trailing '/'
	isDir bool
	de    fs.DirEntry
}

// walk lists directory rel ("" or "a/b/") in key order and reports whether
// the listing is full.
func (l *lister) walk(rel string) (full bool, err error) {
	if err := l.ctx.Err(); err != nil {
		return false, err
	}
	f, err := os.Open(filepath.Join(l.s.root, filepath.FromSlash(rel)))
	if err != nil {
		if isMissing(err) {
			return false, nil // vanished, or the prefix names no directory
		}
		return false, err
	}
	des, err := f.ReadDir(-1)
	f.Close()
	if err != nil {
		if isMissing(err) {
			return false, nil
		}
		return false, err
	}
	ents := make([]entry, 0, len(des))
	for _, de := range des {
		name := de.Name()
		if strings.HasPrefix(name, tmpPrefix) {
			continue
		}
		switch t := de.Type(); {
		case t.IsDir():
			// Every key below starts with name+"/", so sorting the
			// directory as name+"/" puts its subtree in key order among
			// its siblings ("a-c" < "a/b" < "a0").
			ents = append(ents, entry{key: rel + name + "/", isDir: true, de: de})
		case t.IsRegular():
			ents = append(ents, entry{key: rel + name, de: de})
		}
	}
	slices.SortFunc(ents, func(a, b entry) int { return cmp.Compare(a.key, b.key) })
	for _, e := range ents {
		k := e.key
		if e.isDir {
			if !strings.HasPrefix(k, l.prefix) && !strings.HasPrefix(l.prefix, k) {
				continue // no key below can have the prefix
			}
			if k < l.startAfter && !strings.HasPrefix(l.startAfter, k) {
				continue // every key below sorts before startAfter
			}
			full, err := l.walk(k)
			if full || err != nil {
				return full, err
			}
			continue
		}
		if !strings.HasPrefix(k, l.prefix) || k <= l.startAfter {
			continue
		}
		fi, err := e.de.Info()
		if err != nil {
			if isMissing(err) {
				continue // deleted since ReadDir
			}
			return false, err
		}
		l.out = append(l.out, object.Info{Key: k, Size: fi.Size(), ModTime: fi.ModTime()})
		if len(l.out) == l.limit {
			return true, nil
		}
	}
	return false, nil
}
