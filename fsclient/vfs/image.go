package vfs

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"sync"
	"syscall"

	"github.com/skiff-fs/skiff/fsclient/image"
	"github.com/skiff-fs/skiff/fsclient/meta"
)

// images builds and hands out file images (package image) for FUSE
// passthrough: a file whose every block is in the block cache gets a
// whole-file copy there, built in the background by one goroutine, and a
// later read-only open of the same state of the file reads it through the
// kernel directly (see Image).
type images struct {
	store *image.Store
	queue chan meta.Ino
	stop  context.CancelFunc
	done  chan struct{}

	mu struct {
		sync.Mutex
		off    bool
		queued map[meta.Ino]bool
	}
}

// imageQueue bounds the inodes waiting for an image; more are dropped
// (they are asked for again at their next open).
const imageQueue = 256

func (v *VFS) startImages() error {
	if !v.cfg.Images {
		return nil
	}
	c := v.cs.Cache()
	if c == nil || c.Shared() {
		// Images hold plain data: only for a cache private to the pod.
		return nil
	}
	st, err := image.Open(image.Config{Dir: filepath.Join(c.Dir(), "images"), Cache: c, Logger: v.log})
	if err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(context.Background())
	im := &images{store: st, queue: make(chan meta.Ino, imageQueue), stop: cancel, done: make(chan struct{})}
	im.mu.queued = make(map[meta.Ino]bool)
	v.img = im
	go v.imageWorker(ctx)
	return nil
}

// stopImages ends the image builder (at Close).
func (v *VFS) stopImages() {
	if v.img == nil {
		return
	}
	v.img.stop()
	<-v.img.done
}

// DisableImages stops building and handing out images (the FUSE layer
// found the kernel will not take them). Images on disk stay for a later
// mount.
func (v *VFS) DisableImages() {
	if v.img == nil {
		return
	}
	v.img.mu.Lock()
	v.img.mu.off = true
	v.img.mu.Unlock()
}

// ImageStats reports the image store (zero without images).
func (v *VFS) ImageStats() image.Stats {
	if v.img == nil {
		return image.Stats{}
	}
	return v.img.store.Stats()
}

func (im *images) enabled() bool {
	im.mu.Lock()
	defer im.mu.Unlock()
	return !im.mu.off
}

// wantImage queues ino, last seen at stamp st, for an image, unless it is
// queued already, has the image of st, or is too small or too big for one
// (no meta call is spent on those).
func (v *VFS) wantImage(ino meta.Ino, st cacheStamp) {
	im := v.img
	if im == nil || !im.store.Fits(st.size) || im.store.Has(uint64(ino), st.image()) {
		return
	}
	im.mu.Lock()
	defer im.mu.Unlock()
	if im.mu.off || im.mu.queued[ino] {
		return
	}
	select {
	case im.queue <- ino:
		im.mu.queued[ino] = true
	default:
	}
}

func (v *VFS) imageWorker(ctx context.Context) {
	defer close(v.img.done)
	for {
		select {
		case <-ctx.Done():
			return
		case ino := <-v.img.queue:
			if v.img.enabled() {
				if _, err := v.buildImage(ctx, ino); err != nil && !errors.Is(err, image.ErrNoRoom) && !errors.Is(err, image.ErrBusy) && ctx.Err() == nil {
					v.log.Warn("vfs: file image", "ino", ino, "err", err)
				}
			}
			v.img.mu.Lock()
			delete(v.img.mu.queued, ino)
			v.img.mu.Unlock()
		}
	}
}

// busy reports whether this client has ino open for writing or holds
// unflushed writes to it.
func (v *VFS) busy(ino meta.Ino) bool {
	v.mu.Lock()
	of := v.mu.files[ino]
	w := of != nil && of.writers > 0
	v.mu.Unlock()
	return w || of != nil && of.dirty()
}

// buildImage builds ino's image if the file is big enough, unchanged
// here, and wholly in the block cache (an image never fetches). It reports
// whether the image of the file's current state exists afterwards.
func (v *VFS) buildImage(ctx context.Context, ino meta.Ino) (bool, error) {
	st := v.img.store
	if v.busy(ino) {
		return false, nil
	}
	a, err := v.m.GetAttr(ctx, ino)
	if err != nil || a.Typ != meta.TypeFile || !st.Fits(a.Size) {
		return false, err
	}
	stamp := stampOf(&a).image()
	if st.Has(uint64(ino), stamp) {
		return true, nil
	}
	blocks, err := v.cs.FileBlocks(ctx, v.cm, uint64(ino), a.Size)
	if err != nil {
		return false, err
	}
	for _, b := range blocks {
		if !v.cs.Cached(b) {
			return false, nil
		}
	}
	r := v.cs.NewReader(uint64(ino), v.cm)
	defer r.Close()
	err = st.Build(ctx, uint64(ino), stamp, func(p []byte, off int64) (int, error) {
		return r.ReadAt(ctx, p, off, a.Size)
	})
	if err != nil {
		return false, err
	}
	// A change during the build (here or by another client) makes the
	// image stale: drop it now rather than at the next open.
	if b, err := v.m.GetAttr(ctx, ino); err != nil || stampOf(&b) != stampOf(&a) || v.busy(ino) {
		st.Remove(uint64(ino))
		return false, nil
	}
	return true, nil
}

// BuildImage builds the image of the file handle fh opened now, if it can
// have one, and waits for it (skiff warmup asks for it through the mount,
// so that the first read after a warmup reads the image). It returns
// syscall.ENOTSUP without images and syscall.ENODATA when the file gets
// none: too small, not wholly cached, open for writing here, or no room.
func (v *VFS) BuildImage(ctx context.Context, fh uint64) error {
	if v.img == nil || !v.img.enabled() {
		return syscall.ENOTSUP
	}
	h := v.handle(fh)
	if h == nil {
		return syscall.EBADF
	}
	ok, err := v.buildImage(ctx, h.ino)
	if errors.Is(err, image.ErrNoRoom) || errors.Is(err, image.ErrBusy) || err == nil && !ok {
		return syscall.ENODATA
	}
	return err
}

// Image returns the file image behind handle fh (just returned by Open),
// for the kernel to read the file from directly: only for a handle open
// read-only, of a file this client neither has open for writing nor holds
// unflushed writes to, whose image matches the state meta showed at the
// open. Without one it asks for an image to be built and reports false.
// The caller owns the returned file.
func (v *VFS) Image(fh uint64) (*os.File, bool) {
	if v.img == nil || !v.img.enabled() {
		return nil, false
	}
	v.mu.Lock()
	h := v.mu.handles[fh]
	ok := h != nil && !h.write && h.flags&syscall.O_TRUNC == 0 && h.cache.valid && h.of.writers == 0
	v.mu.Unlock()
	if !ok || h.of.dirty() {
		return nil, false
	}
	f, ok := v.img.store.Lookup(uint64(h.ino), h.cache.stamp.image())
	if !ok {
		v.wantImage(h.ino, h.cache.stamp)
	}
	return f, ok
}

func (s cacheStamp) image() image.Stamp {
	return image.Stamp{Size: s.size, Mtime: s.mtime, Ctime: s.ctime}
}
