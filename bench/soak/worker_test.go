package soak

import (
	"bytes"
	"crypto/sha256"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync"
	"time"
)

const (
	maxFileSize = 1 << 20 // no file grows past 1 MiB
	maxWrite    = 192 << 10
	maxLive     = 24 // files a worker keeps
	maxOpen     = 4  // handles a worker keeps open
	// crossAge is how long a file must be unchanged before another client
	// reads it (longer than the mounts' attribute and entry timeouts).
	crossAge = 3 * time.Second
)

// handle is an open file of a worker, on one generation of its mount.
type handle struct {
	f   *os.File
	gen int
}

// fileState is what a worker keeps beside the oracle's File.
type fileState struct {
	*File
	changed time.Time // the last change or open, for cross reads
	open    bool      // the owner has a handle (guarded by File.Mu)
}

// worker runs random operations on its client's mount, in its own
// directory, recording them in the oracle.
type worker struct {
	cl   *client
	o    *Oracle
	st   *stats
	rng  *rand.Rand
	root string // its directory, relative to the volume root
	seq  int

	live    []*fileState // its files that are neither gone nor in limbo
	dirs    []string     // directories certainly made
	handles map[*fileState]*handle

	// all is every worker's files, for cross reads.
	all *sharedFiles
}

// sharedFiles is the list of all workers' files.
type sharedFiles struct {
	mu    sync.Mutex
	files []*fileState
}

func (s *sharedFiles) add(f *fileState) {
	s.mu.Lock()
	s.files = append(s.files, f)
	s.mu.Unlock()
}

func (s *sharedFiles) pick(rng *rand.Rand) *fileState {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.files) == 0 {
		return nil
	}
	return s.files[rng.IntN(len(s.files))]
}

func (w *worker) abs(rel string) string { return filepath.Join(w.cl.mnt, rel) }

func (w *worker) name(prefix string) string {
	w.seq++
	return filepath.Join(w.dirs[w.rng.IntN(len(w.dirs))], fmt.Sprintf("%s%d", prefix, w.seq))
}

// run performs operations until stop is closed, then closes its handles.
func (w *worker) run(stop <-chan struct{}, pause time.Duration) {
	for {
		select {
		case <-stop:
			w.closeAll()
			return
		default:
		}
		w.step()
		if pause > 0 {
			time.Sleep(time.Duration(w.rng.Int64N(int64(pause) + 1)))
		}
	}
}

// closeAll closes every handle (an acknowledgement where it succeeds).
func (w *worker) closeAll() {
	for fs := range w.handles {
		fs.Mu.Lock()
		w.cl.gate.RLock()
		w.dropStale(fs)
		if _, ok := w.handles[fs]; ok {
			w.cl.begin("close at the end " + fs.Paths[0])
			w.closeFile(fs)
			w.cl.end()
		}
		w.cl.gate.RUnlock()
		fs.Mu.Unlock()
	}
}

// dropStale closes fs's handle if it belongs to an earlier mount (the
// client was killed): its pending changes are of unknown fate. The
// caller holds fs.Mu and the gate.
func (w *worker) dropStale(fs *fileState) {
	h, ok := w.handles[fs]
	if !ok || h.gen == w.cl.gen {
		return
	}
	fs.Taint()
	h.f.Close()
	delete(w.handles, fs)
	fs.open = false
}

func (w *worker) closeFile(fs *fileState) {
	h := w.handles[fs]
	err := h.f.Close()
	delete(w.handles, fs)
	fs.open = false
	fs.changed = time.Now()
	w.st.op("close", err)
	if err != nil {
		fs.Taint()
		return
	}
	fs.Ack()
}

// fail records a failed content change on fs: its fate is unknown, and
// the handle is closed.
func (w *worker) fail(fs *fileState) {
	fs.Taint()
	if h, ok := w.handles[fs]; ok {
		h.f.Close()
		delete(w.handles, fs)
		fs.open = false
	}
}

func (w *worker) removeLive(fs *fileState) {
	for i, x := range w.live {
		if x == fs {
			w.live = append(w.live[:i], w.live[i+1:]...)
			return
		}
	}
}

// step performs one random operation.
func (w *worker) step() {
	r := w.rng.IntN(100)
	switch {
	case r < 10 || len(w.live) == 0:
		if len(w.live) < maxLive {
			w.create()
		} else {
			w.unlink()
		}
	case r < 75:
		w.content()
	case r < 81:
		w.rename()
	case r < 86:
		w.unlink()
	case r < 88:
		w.mkdir()
	default:
		w.crossRead()
	}
}

func (w *worker) locked(fs *fileState, what string, fn func()) {
	fs.Mu.Lock()
	defer fs.Mu.Unlock()
	w.cl.gate.RLock()
	defer w.cl.gate.RUnlock()
	w.dropStale(fs)
	w.cl.begin(what)
	defer w.cl.end()
	fn()
}

func (w *worker) create() {
	rel := w.name("f")
	w.cl.gate.RLock()
	defer w.cl.gate.RUnlock()
	w.cl.begin("create " + rel)
	defer w.cl.end()
	f, err := os.OpenFile(w.abs(rel), os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o644)
	w.st.op("create", err)
	fs := &fileState{File: w.o.NewFile(rel, err != nil), changed: time.Now()}
	if err != nil {
		return
	}
	// Nobody else can see fs yet: no lock needed to set it up.
	w.live = append(w.live, fs)
	if len(w.handles) < maxOpen {
		w.handles[fs] = &handle{f: f, gen: w.cl.gen}
		fs.open = true
	} else {
		w.st.op("close", f.Close()) // an empty file: nothing to acknowledge
	}
	w.all.add(fs) // from here on other workers see it, under fs.Mu
}

// content does a write, append, overwrite, truncate, fsync, close or read
// on one of its files, opening it first if needed.
func (w *worker) content() {
	var cands []*fileState
	for _, fs := range w.live {
		if !fs.Tainted {
			cands = append(cands, fs)
		}
	}
	if len(cands) == 0 {
		return
	}
	fs := cands[w.rng.IntN(len(cands))]
	w.locked(fs, "content op on "+fs.Paths[0], func() {
		if fs.Tainted {
			return
		}
		h, ok := w.handles[fs]
		if !ok {
			if len(w.handles) >= maxOpen {
				return
			}
			f, err := os.OpenFile(w.abs(fs.Paths[0]), os.O_RDWR, 0)
			w.st.op("open", err)
			if err != nil {
				return
			}
			h = &handle{f: f, gen: w.cl.gen}
			w.handles[fs] = h
			fs.open = true
			fs.changed = time.Now()
		}
		size := int64(len(fs.Cur))
		r := w.rng.IntN(100)
		switch {
		case r < 60: // write, append or overwrite
			var off int64
			kind := "write"
			switch w.rng.IntN(3) {
			case 0:
				off, kind = size, "append"
			case 1:
				off, kind = w.rng.Int64N(size+1), "overwrite"
			default:
				off = w.rng.Int64N(size + 64<<10 + 1)
			}
			n := 1 + w.rng.Int64N(maxWrite)
			if off >= maxFileSize {
				off = w.rng.Int64N(maxFileSize)
			}
			n = min(n, maxFileSize-off)
			data := make([]byte, n)
			for i := range data {
				data[i] = byte(w.rng.Uint32())
			}
			fs.Write(off, data) // recorded first: a failed write may still land
			_, err := h.f.WriteAt(data, off)
			w.st.op(kind, err)
			if err != nil {
				w.fail(fs)
			}
			fs.changed = time.Now()
		case r < 67:
			ns := w.rng.Int64N(size + 32<<10 + 1)
			ns = min(ns, maxFileSize)
			fs.Truncate(ns)
			err := h.f.Truncate(ns)
			w.st.op("truncate", err)
			if err != nil {
				w.fail(fs)
			}
			fs.changed = time.Now()
		case r < 80:
			err := h.f.Sync()
			w.st.op("fsync", err)
			if err != nil {
				w.fail(fs)
				return
			}
			fs.Ack()
		case r < 92:
			w.closeFile(fs)
		default:
			// A process reads its own writes.
			buf := make([]byte, len(fs.Cur)+1)
			n, err := h.f.ReadAt(buf, 0)
			if err == io.EOF {
				err = nil
			}
			w.st.op("read", err)
			if err == nil && !bytes.Equal(buf[:n], fs.Cur) {
				w.st.anomaly("client %d: reading back its own writes of %s (file %d) through its open handle: %s",
					w.cl.id, fs.Paths[0], fs.ID, diff(fs.Cur, buf[:n]))
			}
		}
	})
}

// closedLive picks one of its files that has no open handle.
func (w *worker) closedLive() *fileState {
	var cands []*fileState
	for _, fs := range w.live {
		if _, ok := w.handles[fs]; !ok {
			cands = append(cands, fs)
		}
	}
	if len(cands) == 0 {
		return nil
	}
	return cands[w.rng.IntN(len(cands))]
}

func (w *worker) rename() {
	fs := w.closedLive()
	if fs == nil {
		return
	}
	to := w.name("r")
	w.locked(fs, "rename "+fs.Paths[0]+" "+to, func() {
		err := os.Rename(w.abs(fs.Paths[0]), w.abs(to))
		w.st.op("rename", err)
		w.o.Renamed(fs.File, to, err == nil)
		if err != nil {
			w.removeLive(fs)
		}
		fs.changed = time.Now()
	})
}

func (w *worker) unlink() {
	fs := w.closedLive()
	if fs == nil {
		return
	}
	w.locked(fs, "unlink "+fs.Paths[0], func() {
		err := os.Remove(w.abs(fs.Paths[0]))
		w.st.op("unlink", err)
		w.o.Unlinked(fs.File, err == nil)
		w.removeLive(fs)
	})
}

func (w *worker) mkdir() {
	if len(w.dirs) > 8 {
		return
	}
	rel := w.name("d")
	w.cl.gate.RLock()
	defer w.cl.gate.RUnlock()
	w.cl.begin("mkdir " + rel)
	defer w.cl.end()
	err := os.Mkdir(w.abs(rel), 0o755)
	w.st.op("mkdir", err)
	w.o.NewDir(rel, err != nil)
	if err == nil {
		w.dirs = append(w.dirs, rel)
	}
}

// crossRead reads, through this client's mount, a file another client
// closed or fsynced more than crossAge ago and has not touched since:
// close-to-open consistency says it shows the acknowledged bytes.
func (w *worker) crossRead() {
	fs := w.all.pick(w.rng)
	if fs == nil || !fs.Mu.TryLock() {
		return
	}
	defer fs.Mu.Unlock()
	if fs.Gone || fs.Limbo || fs.Tainted || fs.open || !fs.Exact() || time.Since(fs.changed) < crossAge {
		return
	}
	w.cl.gate.RLock()
	defer w.cl.gate.RUnlock()
	w.cl.begin("cross read " + fs.Paths[0])
	defer w.cl.end()
	got, err := os.ReadFile(w.abs(fs.Paths[0]))
	w.st.op("cross-read", err)
	if err == nil && sha256.Sum256(got) != sha256.Sum256(fs.Acked) {
		w.st.anomaly("client %d: reading %s (file %d), closed by its writer %v ago: %s",
			w.cl.id, fs.Paths[0], fs.ID, time.Since(fs.changed).Round(time.Millisecond), diff(fs.Acked, got))
	}
}
