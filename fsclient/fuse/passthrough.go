package fuse

import (
	"os"
	"sync"
	"syscall"
	"time"

	gofuse "github.com/hanwen/go-fuse/v2/fuse"
)

// passthrough hands files to the kernel to read directly (FUSE
// passthrough, Linux ≥ 6.9): a read-only open of a file with a file image
// (vfs.Image) is answered with FOPEN_PASSTHROUGH and the image as its
// backing file, so its reads, page cache included, are the local file
// system's and never reach skiff.
//
// The kernel's rules, which every reply here keeps:
//   - An inode has one backing file at a time, and while any handle of an
//     inode is open with passthrough, every open of it must be too, with
//     the same backing file (the kernel fails any other with EIO): later
//     opens reuse the registered id.
//   - Passthrough and page-cache ("cached") opens of an inode exclude each
//     other (ETXTBSY): an inode with cached handles open gets no
//     passthrough.
//
// So while passthrough handles of an inode are open:
//   - a read-only open of it that cannot read their backing file (a reader
//     of a later state of the file than the image's) is "routed":
//     FOPEN_PASSTHROUGH with FOPEN_DIRECT_IO, whose reads go to skiff and
//     only mmap goes to the backing file (so a mapping shows the state the
//     passthrough readers opened);
//   - an open for writing fails with ETXTBSY, as writing a running
//     program does: the kernel would send the writes of a shared writable
//     mmap of it to the backing file, where skiff never sees them. Once
//     the readers close the file, it opens for writing as usual. The
//     kernel sends RELEASE after close(2) returns, so a writer first waits
//     up to releaseGrace for the readers' RELEASEs: a program that closes
//     its reader and at once opens the file for writing is not refused.
//
// The first registration that fails (a kernel without passthrough, not
// root) turns passthrough off for the mount.
type passthrough struct {
	mu       sync.Mutex
	released chan struct{} // closed (and replaced) when a handle is released
	on       bool
	srv      *gofuse.Server
	inodes   map[uint64]*ptInode // by node id
	fhs      map[uint64]ptHandle // by handle
}

type ptInode struct {
	id      int32  // backing id while pt > 0
	file    fileID // the backing file
	pt      int    // passthrough handles open (passthrough or routed)
	cached  int    // page-cache handles open
	writers int    // opens for writing under way (ptBegin, then ptOpen)
}

type fileID struct{ dev, ino uint64 }

type ptMode uint8

const (
	modeCached ptMode = iota
	modeRouted        // FOPEN_PASSTHROUGH|FOPEN_DIRECT_IO: I/O through skiff
	modePass          // reads by the kernel from the backing file
	modeBusy          // refused: ETXTBSY (a writer while passthrough handles are open)
)

type ptHandle struct {
	node uint64
	mode ptMode
}

func identity(f *os.File) (fileID, bool) {
	var st syscall.Stat_t
	if err := syscall.Fstat(int(f.Fd()), &st); err != nil {
		return fileID{}, false
	}
	return fileID{uint64(st.Dev), st.Ino}, true
}

// ptBegin is called before an open for writing of node reaches vfs (which
// may truncate): it reports false when the open must fail with ETXTBSY,
// and otherwise keeps passthrough off node until ptOpen (or ptAbort).
func (fs *fileSystem) ptBegin(node uint64) bool {
	p := &fs.pt
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.on && len(p.inodes) == 0 {
		return true
	}
	var deadline <-chan time.Time
	for {
		st := p.inodes[node]
		if st == nil {
			st = &ptInode{}
			p.inodes[node] = st
		}
		if st.pt == 0 {
			st.writers++
			return true
		}
		if deadline == nil {
			t := time.NewTimer(releaseGrace)
			defer t.Stop()
			deadline = t.C
		}
		ch := p.released
		p.mu.Unlock()
		select {
		case <-ch:
			p.mu.Lock()
		case <-deadline:
			p.mu.Lock()
			if st := p.inodes[node]; st != nil && st.pt > 0 {
				return false
			}
		}
	}
}

// releaseGrace is how long an open for writing waits for the RELEASEs of
// passthrough handles the kernel may have closed already.
const releaseGrace = 5 * time.Second

// ptAbort ends a ptBegin whose open failed.
func (fs *fileSystem) ptAbort(node uint64) {
	p := &fs.pt
	p.mu.Lock()
	defer p.mu.Unlock()
	if st := p.inodes[node]; st != nil && st.writers > 0 {
		st.writers--
		p.forgetIdle(node, st)
	}
}

func (p *passthrough) forgetIdle(node uint64, st *ptInode) {
	if st.pt == 0 && st.cached == 0 && st.writers == 0 {
		delete(p.inodes, node)
	}
}

// ptOpen decides how the kernel opens handle fh of node: passthrough or
// routed (with the backing id), cached, or not at all (modeBusy: the caller
// releases fh and answers ETXTBSY). write says the handle may write; image
// returns a read-only handle's file image (nil for writers) and is called
// only when passthrough is possible.
func (fs *fileSystem) ptOpen(node, fh uint64, write bool, image func() (*os.File, bool)) (ptMode, int32) {
	p := &fs.pt
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.on && len(p.inodes) == 0 {
		return modeCached, 0
	}
	st := p.inodes[node]
	if st == nil {
		st = &ptInode{}
		p.inodes[node] = st
	}
	if write && st.writers > 0 {
		st.writers-- // its ptBegin
	}
	mode := modeCached
	switch {
	case st.pt > 0 && write:
		p.forgetIdle(node, st)
		return modeBusy, 0
	case st.pt > 0:
		mode = modeRouted
		if f, ok := image(); ok {
			if id, ok := identity(f); ok && id == st.file {
				mode = modePass
			}
			f.Close()
		}
	case !write && st.cached == 0 && st.writers == 0 && p.on && p.srv != nil:
		if f, ok := image(); ok {
			mode = fs.register(st, f)
			f.Close()
		}
	}
	if mode == modeCached {
		st.cached++
	} else {
		st.pt++
	}
	p.fhs[fh] = ptHandle{node: node, mode: mode}
	return mode, st.id
}

// register makes f node's backing file (p.mu held).
func (fs *fileSystem) register(st *ptInode, f *os.File) ptMode {
	p := &fs.pt
	id, ok := identity(f)
	if !ok {
		return modeCached
	}
	bid, errno := p.srv.RegisterBackingFd(&gofuse.BackingMap{Fd: int32(f.Fd())})
	if errno != 0 {
		p.on = false
		fs.v.DisableImages()
		fs.log.Info("fuse: the kernel refused a passthrough file, so reads of cached files go through skiff (passthrough needs Linux 6.9 or later and root)", "errno", errno)
		return modeCached
	}
	st.id, st.file = bid, id
	return modePass
}

// ptRelease forgets handle fh; the last passthrough handle of an inode
// releases its backing id.
func (fs *fileSystem) ptRelease(fh uint64) {
	p := &fs.pt
	p.mu.Lock()
	defer p.mu.Unlock()
	h, ok := p.fhs[fh]
	if !ok {
		return
	}
	delete(p.fhs, fh)
	close(p.released)
	p.released = make(chan struct{})
	st := p.inodes[h.node]
	switch h.mode {
	case modePass, modeRouted:
		st.pt--
		if st.pt == 0 {
			if errno := p.srv.UnregisterBackingFd(st.id); errno != 0 {
				fs.log.Warn("fuse: release a passthrough backing file", "node", h.node, "errno", errno)
			}
			st.id, st.file = 0, fileID{}
		}
	case modeCached:
		st.cached--
	}
	p.forgetIdle(h.node, st)
}

// ptFlags sets the open flags of mode.
func ptFlags(out *gofuse.OpenOut, mode ptMode, id int32) {
	switch mode {
	case modePass:
		out.OpenFlags |= gofuse.FOPEN_PASSTHROUGH
		out.OpenFlags &^= gofuse.FOPEN_KEEP_CACHE
		out.BackingID = id
	case modeRouted:
		out.OpenFlags |= gofuse.FOPEN_PASSTHROUGH | gofuse.FOPEN_DIRECT_IO
		out.OpenFlags &^= gofuse.FOPEN_KEEP_CACHE
		out.BackingID = id
	}
}
