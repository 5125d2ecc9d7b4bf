package chunk

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/skiff-fs/skiff/fsclient/slice"
)

// FileWriter buffers, uploads and commits the writes of one open file. It
// is safe for concurrent use. Close it when the file is closed.
type FileWriter struct {
	s   *Store
	ino uint64
	m   Meta

	// flushMu serialises commits, so slices are committed in the order
	// they were created and later writes win.
	flushMu sync.Mutex
	mu      struct {
		sync.Mutex
		open    map[uint32]*wslice // the slice each chunk's writes go to
		pending []*wslice          // not yet committed, in creation order
		commits map[uint32]int     // commits per chunk (compaction trigger)
		err     error              // sticky: data of this writer was lost
		closed  bool
		last    time.Time // time of the last write
	}
}

// NewWriter returns a writer for inode ino that commits through m.
func (s *Store) NewWriter(ino uint64, m Meta) *FileWriter {
	w := &FileWriter{s: s, ino: ino, m: m}
	w.mu.open = make(map[uint32]*wslice)
	w.mu.commits = make(map[uint32]int)
	s.mu.Lock()
	s.mu.writers[w] = struct{}{}
	s.mu.Unlock()
	return w
}

// WriteAt buffers p at file offset off. It returns once the bytes are
// copied (the caller keeps p); they become visible to other clients after
// Flush. WriteAt waits while the Store's write buffer is used up, until
// uploads free it or ctx ends. After an upload or commit of this writer
// failed, WriteAt returns that error.
func (w *FileWriter) WriteAt(ctx context.Context, p []byte, off int64) (int, error) {
	ranges, err := slice.Split(off, int64(len(p)))
	if err != nil {
		return 0, err
	}
	bs := w.s.cfg.BlockSize
	written := 0
	for _, r := range ranges {
		for done := uint32(0); done < r.Len; {
			n := min(r.Len-done, bs)
			if err := w.s.reserve(ctx, int64(n)); err != nil {
				return written, err
			}
			b := r.Buf + int64(done)
			added, err := w.write(ctx, r.Chunk, r.Off+done, p[b:b+int64(n)])
			w.s.release(int64(n) - added)
			if err != nil {
				return written, err
			}
			done += n
			written += int(n)
		}
	}
	w.commitReady(ctx)
	return written, nil
}

// write puts p at chunk offset off into the chunk's open slice, starting a
// new slice when p cannot extend or rewrite the open one.
func (w *FileWriter) write(ctx context.Context, chunk, off uint32, p []byte) (int64, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.mu.closed {
		return 0, fmt.Errorf("write inode %d: %w", w.ino, ErrClosed)
	}
	if w.mu.err != nil {
		return 0, w.mu.err
	}
	ws := w.mu.open[chunk]
	if ws != nil && (off < ws.pos || !ws.writable(off-ws.pos, len(p))) {
		ws.seal()
		ws = nil
	}
	if ws == nil {
		id, err := w.m.NewSliceID(ctx)
		if err != nil {
			return 0, fmt.Errorf("write inode %d: new slice id: %w", w.ino, err)
		}
		ws = newWSlice(w.s, id, chunk, off)
		ws.born = time.Now()
		w.mu.open[chunk] = ws
		w.mu.pending = append(w.mu.pending, ws)
	}
	added := ws.write(off-ws.pos, p)
	ws.mtime = time.Now()
	w.mu.last = ws.mtime
	if ws.pos+ws.length == slice.ChunkSize {
		ws.seal()
		delete(w.mu.open, chunk)
	}
	return added, nil
}

// idleSince reports whether the writer holds uncommitted data and was not
// written for d.
func (w *FileWriter) idleSince(now time.Time, d time.Duration) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.mu.pending) > 0 && now.Sub(w.mu.last) >= d
}

// agedSince reports whether the writer's oldest uncommitted byte was
// written at least d ago (a steady writer never becomes idle).
func (w *FileWriter) agedSince(now time.Time, d time.Duration) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.mu.pending) > 0 && now.Sub(w.mu.pending[0].born) >= d
}

// sealAll seals every open slice, so their partly filled blocks upload.
func (w *FileWriter) sealAll() {
	w.mu.Lock()
	defer w.mu.Unlock()
	for c, ws := range w.mu.open {
		ws.seal()
		delete(w.mu.open, c)
	}
}

// commitReady commits the slices at the head of the queue whose uploads
// have ended, unless a Flush is already committing.
func (w *FileWriter) commitReady(ctx context.Context) {
	if !w.flushMu.TryLock() {
		return
	}
	defer w.flushMu.Unlock()
	for {
		w.mu.Lock()
		var ws *wslice
		if len(w.mu.pending) > 0 && w.mu.pending[0].ready() {
			ws = w.mu.pending[0]
		}
		w.mu.Unlock()
		if ws == nil || w.commit(ctx, ws) != nil {
			return
		}
	}
}

// Flush uploads everything written so far and commits it: when Flush
// returns nil, the data is durable in object storage and visible in
// metadata. If any block of this writer failed to upload or any commit
// failed, Flush returns that error (naming the object) now and on every
// later call: the data is lost and that slice was not committed.
func (w *FileWriter) Flush(ctx context.Context) error {
	w.flushMu.Lock()
	defer w.flushMu.Unlock()
	w.mu.Lock()
	for c, ws := range w.mu.open {
		ws.seal()
		delete(w.mu.open, c)
	}
	todo := append([]*wslice(nil), w.mu.pending...)
	w.mu.Unlock()
	for _, ws := range todo {
		if err := w.commit(ctx, ws); err != nil {
			return err
		}
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.mu.err
}

// commit waits for the uploads of ws, the head of the pending queue, and
// commits it. w.flushMu must be held. It returns an error only when ws
// stays pending (ctx ended); a failed upload or commit removes ws and
// fails the writer.
func (w *FileWriter) commit(ctx context.Context, ws *wslice) error {
	if err := ws.wait(ctx); err != nil {
		if ctx.Err() != nil {
			return err
		}
		w.fail(ws, fmt.Errorf("write inode %d chunk %d: %w", w.ino, ws.chunk, err))
		ws.discard(ctx)
		return nil
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	// The commit is not canceled with ctx: an interrupted write or fsync
	// must not leave the outcome unknown and fail the file.
	if err := w.m.WriteChunk(context.WithoutCancel(ctx), w.ino, ws.chunk, ws.record(), ws.mtime); err != nil {
		// The outcome is unknown: the record may be committed, so its
		// blocks stay; gc removes them if it was not.
		w.fail(ws, fmt.Errorf("commit slice %d of inode %d chunk %d: %w", ws.id, w.ino, ws.chunk, err))
		return nil
	}
	w.s.changed(w.ino, ws.chunk)
	w.mu.Lock()
	w.mu.commits[ws.chunk]++
	trigger := w.mu.commits[ws.chunk]%w.s.cfg.CompactThreshold == 0
	w.mu.Unlock()
	if trigger {
		w.s.CompactLater(w.m, w.ino, ws.chunk)
	}
	w.dequeue(ws)
	return nil
}

// fail records err (the first one) and drops ws, the head of the queue.
func (w *FileWriter) fail(ws *wslice, err error) {
	w.mu.Lock()
	if w.mu.err == nil {
		w.mu.err = err
	}
	w.mu.Unlock()
	w.dequeue(ws)
	w.s.log.Error("file data lost", "ino", w.ino, "err", err)
}

func (w *FileWriter) dequeue(ws *wslice) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.mu.pending) > 0 && w.mu.pending[0] == ws {
		w.mu.pending = w.mu.pending[1:]
	}
}

// Close flushes and releases the writer; it returns Flush's error. The
// writer must not be used afterwards.
func (w *FileWriter) Close(ctx context.Context) error {
	err := w.Flush(ctx)
	w.mu.Lock()
	w.mu.closed = true
	w.mu.Unlock()
	w.s.mu.Lock()
	delete(w.s.mu.writers, w)
	w.s.mu.Unlock()
	return err
}
