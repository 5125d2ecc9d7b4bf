package image

import (
	"container/list"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"

	"github.com/skiff-fs/skiff/fsclient/cache"
)

// Stamp identifies one state of a file's data in meta.
type Stamp struct {
	Size         uint64
	Mtime, Ctime int64 // ns
}

// Config configures a Store. Zero values mean the documented defaults.
type Config struct {
	// Dir holds the images (created 0700).
	Dir string
	// Cache, when set, is the block cache whose limit and floor images
	// share (cache.Claim).
	Cache *cache.Cache
	// Limit is the most bytes all images may use. Default: half of
	// Cache's limit, or 10 GiB without a cache.
	Limit int64
	// MinSize is the smallest file worth an image. Default 1 MiB.
	MinSize int64
	// Logger receives warnings. Default: discard.
	Logger *slog.Logger
}

// Errors of Build.
var (
	ErrNoRoom  = errors.New("image: no room in the cache for the image")
	ErrChanged = errors.New("image: the file changed while its image was built")
	ErrBusy    = errors.New("image: another image of the file was being built")
)

// allocUnit is what a file's size is rounded up to when counted.
const allocUnit = 4096

func onDisk(n uint64) int64 { return int64((n + allocUnit - 1) &^ (allocUnit - 1)) }

// Store is a directory of file images. It is safe for concurrent use.
type Store struct {
	cfg Config
	log *slog.Logger

	mu struct {
		sync.Mutex
		imgs     map[uint64]*img          // by inode
		lru      list.List                // of *img, most recently used at the front
		bytes    int64                    // counted bytes of imgs
		building map[uint64]chan struct{} // inodes whose image is being written (counted in bytes); closed when done
	}
}

type img struct {
	ino   uint64
	st    Stamp
	elem  *list.Element
	bytes int64
}

// Open opens (creating if needed) the image directory and indexes the
// images in it; images that no longer fit are removed.
func Open(cfg Config) (*Store, error) {
	if cfg.Dir == "" {
		return nil, errors.New("image: no directory given")
	}
	if cfg.Limit == 0 {
		cfg.Limit = 10 << 30
		if cfg.Cache != nil {
			cfg.Limit = cfg.Cache.Limit() / 2
		}
	}
	if cfg.MinSize == 0 {
		cfg.MinSize = 1 << 20
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if err := os.MkdirAll(cfg.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("image: create %s: %w", cfg.Dir, err)
	}
	s := &Store{cfg: cfg, log: cfg.Logger}
	s.mu.imgs = make(map[uint64]*img)
	s.mu.building = make(map[uint64]chan struct{})
	if err := s.scan(); err != nil {
		return nil, err
	}
	return s, nil
}

// Fits reports whether a file of size bytes may have an image: at least
// Config.MinSize, and within Config.Limit.
func (s *Store) Fits(size uint64) bool {
	return int64(size) >= s.cfg.MinSize && onDisk(size) <= s.cfg.Limit
}

func name(ino uint64, st Stamp) string {
	return fmt.Sprintf("%d-%x-%x-%x", ino, st.Size, uint64(st.Mtime), uint64(st.Ctime))
}

func parse(n string) (uint64, Stamp, bool) {
	f := strings.Split(n, "-")
	if len(f) != 4 {
		return 0, Stamp{}, false
	}
	ino, e1 := strconv.ParseUint(f[0], 10, 64)
	size, e2 := strconv.ParseUint(f[1], 16, 64)
	mt, e3 := strconv.ParseUint(f[2], 16, 64)
	ct, e4 := strconv.ParseUint(f[3], 16, 64)
	if err := errors.Join(e1, e2, e3, e4); err != nil || ino == 0 {
		return 0, Stamp{}, false
	}
	return ino, Stamp{Size: size, Mtime: int64(mt), Ctime: int64(ct)}, true
}

func (s *Store) path(ino uint64, st Stamp) string { return filepath.Join(s.cfg.Dir, name(ino, st)) }

// scan indexes the directory: newest images first, so the oldest are the
// ones that do not fit.
func (s *Store) scan() error {
	ents, err := os.ReadDir(s.cfg.Dir)
	if err != nil {
		return fmt.Errorf("image: read %s: %w", s.cfg.Dir, err)
	}
	type found struct {
		ino  uint64
		st   Stamp
		info fs.FileInfo
	}
	var all []found
	for _, e := range ents {
		p := filepath.Join(s.cfg.Dir, e.Name())
		ino, st, ok := parse(e.Name())
		info, err := e.Info()
		if !ok || err != nil || !info.Mode().IsRegular() || uint64(info.Size()) != st.Size {
			// A temporary file of a build a crash cut short, or a foreign one.
			s.removeFile(p)
			continue
		}
		all = append(all, found{ino, st, info})
	}
	sort.Slice(all, func(i, j int) bool { return all[i].info.ModTime().After(all[j].info.ModTime()) })
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, f := range all {
		n := onDisk(f.st.Size)
		if s.mu.imgs[f.ino] != nil || s.mu.bytes+n > s.cfg.Limit || !s.claim(n) {
			s.removeFile(s.path(f.ino, f.st))
			continue
		}
		im := &img{ino: f.ino, st: f.st, bytes: n}
		im.elem = s.mu.lru.PushBack(im)
		s.mu.imgs[f.ino] = im
		s.mu.bytes += n
	}
	return nil
}

func (s *Store) claim(n int64) bool { return s.cfg.Cache == nil || s.cfg.Cache.Claim(n) }

func (s *Store) unclaim(n int64) {
	if s.cfg.Cache != nil {
		s.cfg.Cache.Unclaim(n)
	}
}

func (s *Store) removeFile(p string) {
	if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
		s.log.Warn("image: remove", "path", p, "err", err)
	}
}

// dropLocked removes im from the index; the caller removes its file and
// gives back its bytes.
func (s *Store) dropLocked(im *img) {
	s.mu.lru.Remove(im.elem)
	delete(s.mu.imgs, im.ino)
	s.mu.bytes -= im.bytes
}

func (s *Store) discard(im *img) {
	s.removeFile(s.path(im.ino, im.st))
	s.unclaim(im.bytes)
}

// Has reports whether ino has an image of stamp st.
func (s *Store) Has(ino uint64, st Stamp) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	im := s.mu.imgs[ino]
	return im != nil && im.st == st
}

// Lookup opens ino's image of stamp st for reading. An image of another
// stamp is stale and removed.
func (s *Store) Lookup(ino uint64, st Stamp) (*os.File, bool) {
	s.mu.Lock()
	im := s.mu.imgs[ino]
	if im == nil {
		s.mu.Unlock()
		return nil, false
	}
	if im.st != st {
		s.dropLocked(im)
		s.mu.Unlock()
		s.discard(im)
		return nil, false
	}
	s.mu.lru.MoveToFront(im.elem)
	s.mu.Unlock()
	f, err := os.Open(s.path(ino, st))
	if err != nil {
		s.log.Warn("image: open", "ino", ino, "err", err)
		s.Remove(ino)
		return nil, false
	}
	return f, true
}

// Remove removes ino's image, if any.
func (s *Store) Remove(ino uint64) {
	s.mu.Lock()
	im := s.mu.imgs[ino]
	if im != nil {
		s.dropLocked(im)
	}
	s.mu.Unlock()
	if im != nil {
		s.discard(im)
	}
}

// Stats is a snapshot of the store.
type Stats struct {
	Images int
	Bytes  int64
	Limit  int64
}

// Stats returns a snapshot of the store.
func (s *Store) Stats() Stats {
	s.mu.Lock()
	defer s.mu.Unlock()
	return Stats{Images: len(s.mu.imgs), Bytes: s.mu.bytes, Limit: s.cfg.Limit}
}

// ReadAtFunc reads the file's bytes at off into p, as io.ReaderAt does.
type ReadAtFunc func(p []byte, off int64) (int, error)

// Build writes the image of ino at stamp st from read, which must return
// the file's st.Size bytes. It does nothing when the image exists; while
// another Build of ino runs it waits for that one and returns ErrBusy
// unless it made the image of st. It makes room by removing the least
// recently used images and claiming the bytes from the cache; ErrNoRoom
// when there is none.
func (s *Store) Build(ctx context.Context, ino uint64, st Stamp, read ReadAtFunc) error {
	n := onDisk(st.Size)
	if n > s.cfg.Limit {
		return ErrNoRoom
	}
	s.mu.Lock()
	if im := s.mu.imgs[ino]; im != nil && im.st == st {
		s.mu.Unlock()
		return nil
	}
	if ch := s.mu.building[ino]; ch != nil {
		s.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
		if s.Has(ino, st) {
			return nil
		}
		return ErrBusy
	}
	var victims []*img
	for s.mu.bytes+n > s.cfg.Limit && s.mu.lru.Len() > 0 {
		im := s.mu.lru.Back().Value.(*img)
		s.dropLocked(im)
		victims = append(victims, im)
	}
	room := s.mu.bytes+n <= s.cfg.Limit // other builds may hold the rest
	done := make(chan struct{})
	defer close(done)
	if room {
		s.mu.building[ino] = done
		s.mu.bytes += n // counted from now on, so builds cannot overrun Limit together
	}
	s.mu.Unlock()
	for _, im := range victims {
		s.discard(im)
	}
	if !room {
		return ErrNoRoom
	}
	err := ErrNoRoom
	if s.claim(n) {
		if err = s.write(ctx, ino, st, read); err != nil {
			s.unclaim(n)
		}
	}
	s.mu.Lock()
	delete(s.mu.building, ino)
	if err != nil {
		s.mu.bytes -= n
		s.mu.Unlock()
		return err
	}
	old := s.mu.imgs[ino]
	if old != nil {
		s.dropLocked(old)
	}
	im := &img{ino: ino, st: st, bytes: n}
	im.elem = s.mu.lru.PushFront(im)
	s.mu.imgs[ino] = im
	s.mu.Unlock()
	if old != nil {
		s.discard(old)
	}
	return nil
}

// copyBuf is the size of Build's reads.
const copyBuf = 1 << 20

func (s *Store) write(ctx context.Context, ino uint64, st Stamp, read ReadAtFunc) (err error) {
	f, err := os.CreateTemp(s.cfg.Dir, "."+strconv.FormatUint(ino, 10)+"-*.tmp")
	if err != nil {
		return fmt.Errorf("image: create: %w", err)
	}
	defer func() {
		if err != nil {
			f.Close()
			s.removeFile(f.Name())
		}
	}()
	buf := make([]byte, copyBuf)
	for off := uint64(0); off < st.Size; {
		if err := ctx.Err(); err != nil {
			return err
		}
		want := min(uint64(len(buf)), st.Size-off)
		n, rerr := read(buf[:want], int64(off))
		if n < int(want) {
			if rerr == nil || rerr == io.EOF {
				return fmt.Errorf("%w: %d bytes at %d, the file has %d", ErrChanged, n, off, st.Size)
			}
			return fmt.Errorf("image: read inode %d at %d: %w", ino, off, rerr)
		}
		if _, err := f.WriteAt(buf[:n], int64(off)); err != nil {
			return fmt.Errorf("image: write: %w", err)
		}
		off += uint64(n)
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("image: sync: %w", err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("image: close: %w", err)
	}
	if err := os.Rename(f.Name(), s.path(ino, st)); err != nil {
		return fmt.Errorf("image: rename: %w", err)
	}
	return nil
}
