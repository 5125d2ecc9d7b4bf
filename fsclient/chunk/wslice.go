package chunk

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/skiff-fs/skiff/fsclient/slice"
)

// wslice is a slice being written. Its bytes are contiguous from pos; they
// are buffered per block, and a block uploads as soon as it is full (the
// last, shorter block when the slice is sealed). Uploaded blocks are
// immutable, so only bytes in blocks not yet uploaded may be rewritten.
//
// The owner (a FileWriter under its mu, or Compact) serialises write and
// seal; upload goroutines report through wslice.mu.
type wslice struct {
	s      *Store
	id     uint64
	chunk  uint32
	pos    uint32 // chunk offset of the slice's first byte
	length uint32 // bytes written
	mtime  time.Time
	born   time.Time // time of the first write (FileWriter's slices)
	blocks []wblock
	sealed bool
	done   chan struct{} // closed once sealed and every upload finished

	mu struct {
		sync.Mutex
		running int   // uploads started, not finished
		sealed  bool  // seal was called (mirrors sealed for goroutines)
		err     error // first upload error
	}
}

type wblock struct {
	buf      []byte // buffered bytes; nil once uploading
	uploaded bool   // upload started: the block is immutable
}

func newWSlice(s *Store, id uint64, chunk, pos uint32) *wslice {
	return &wslice{s: s, id: id, chunk: chunk, pos: pos, done: make(chan struct{})}
}

// writable reports whether n bytes at slice offset so can go into this
// slice: they must start inside or right after its bytes and must not
// touch an uploaded block.
func (ws *wslice) writable(so uint32, n int) bool {
	if ws.sealed || so > ws.length || uint64(ws.pos)+uint64(so)+uint64(n) > slice.ChunkSize {
		return false
	}
	end := min(uint64(so)+uint64(n), uint64(ws.length))
	bs := uint64(ws.s.cfg.BlockSize)
	for bi := uint64(so) / bs; bi*bs < end; bi++ {
		if ws.blocks[bi].uploaded {
			return false
		}
	}
	return true
}

// write copies p to slice offset so (writable must hold) and returns how
// many bytes the buffers grew by. Blocks that become full start uploading.
func (ws *wslice) write(so uint32, p []byte) (added int64) {
	bs := ws.s.cfg.BlockSize
	for len(p) > 0 {
		bi, bo := int(so/bs), int(so%bs)
		for len(ws.blocks) <= bi {
			ws.blocks = append(ws.blocks, wblock{})
		}
		b := &ws.blocks[bi]
		n := min(len(p), int(bs)-bo)
		if need := bo + n; need > len(b.buf) {
			if need > cap(b.buf) {
				b.buf = ws.grow(b.buf, need, bi > 0)
			}
			added += int64(need - len(b.buf))
			b.buf = b.buf[:need]
		}
		copy(b.buf[bo:], p[:n])
		p = p[n:]
		so += uint32(n)
		ws.length = max(ws.length, so)
		if len(b.buf) == int(bs) {
			ws.upload(bi)
		}
	}
	return added
}

// grow returns buf with room for need bytes. Capacity doubles from 64 KiB
// up to the block size, so small files hold small buffers; a block after
// the first (full) one, or one that needs a quarter of the block size,
// gets the whole block size at once (a reused buffer).
func (ws *wslice) grow(buf []byte, need int, full bool) []byte {
	bs := int(ws.s.cfg.BlockSize)
	c := min(max(need, 2*cap(buf), 64<<10), bs)
	if full || c >= bs/4 {
		c = bs
	}
	nb := ws.s.getBuf(c)
	nb = append(nb, buf...)
	ws.s.putBuf(buf)
	return nb
}

// upload starts storing block bi, which then belongs to the upload
// goroutine; its buffer returns to the budget when the Put ends.
func (ws *wslice) upload(bi int) {
	s := ws.s
	b := &ws.blocks[bi]
	buf := b.buf
	b.buf, b.uploaded = nil, true
	key := slice.BlockKey(ws.id, bi, uint32(len(buf)))
	ws.mu.Lock()
	ws.mu.running++
	ws.mu.Unlock()
	s.uploading.Add(1)
	ok := s.goroutine(func() {
		err := s.putBlock(s.ctx, key, buf)
		s.release(int64(len(buf)))
		s.uploading.Add(-1)
		s.putBuf(buf)
		ws.finished(err)
	})
	if !ok {
		s.release(int64(len(buf)))
		s.uploading.Add(-1)
		ws.finished(fmt.Errorf("upload block %s: %w", key, ErrClosed))
	}
}

func (ws *wslice) finished(err error) {
	ws.mu.Lock()
	defer ws.mu.Unlock()
	ws.mu.running--
	if err != nil && ws.mu.err == nil {
		ws.mu.err = err
	}
	if ws.mu.running == 0 && ws.mu.sealed {
		close(ws.done)
	}
}

// seal ends the slice: its last block uploads even if short, and no more
// bytes are accepted.
func (ws *wslice) seal() {
	if ws.sealed {
		return
	}
	ws.sealed = true
	if n := len(ws.blocks); n > 0 && !ws.blocks[n-1].uploaded && len(ws.blocks[n-1].buf) > 0 {
		ws.upload(n - 1)
	}
	ws.mu.Lock()
	ws.mu.sealed = true
	if ws.mu.running == 0 {
		close(ws.done)
	}
	ws.mu.Unlock()
}

// ready reports whether the slice is sealed and every upload has ended.
func (ws *wslice) ready() bool {
	select {
	case <-ws.done:
		return true
	default:
		return false
	}
}

// wait waits until the sealed slice's uploads end and returns the first
// upload error.
func (ws *wslice) wait(ctx context.Context) error {
	select {
	case <-ws.done:
	case <-ctx.Done():
		return ctx.Err()
	}
	ws.mu.Lock()
	defer ws.mu.Unlock()
	return ws.mu.err
}

// record is the slice's record for meta.
func (ws *wslice) record() slice.Slice {
	return slice.Slice{Pos: ws.pos, ID: ws.id, Size: ws.length, Len: ws.length}
}

// discard deletes whatever blocks of a never committed slice were stored.
// It waits for running uploads first. Errors are logged: a leftover block
// is garbage that gc finds, not data loss.
func (ws *wslice) discard(ctx context.Context) {
	ws.seal()
	select {
	case <-ws.done:
	case <-ctx.Done():
		return
	}
	if err := ws.s.DeleteSlice(ctx, ws.id, ws.length); err != nil {
		ws.s.log.Warn("could not delete the blocks of an uncommitted slice", "slice", ws.id, "err", err)
	}
}
