package chunk

import (
	"context"
	"errors"
	"fmt"

	"github.com/skiff-fs/skiff/fsclient/slice"
)

type compactJob struct {
	m   Meta
	ref chunkRef
}

// Compact rewrites the visible content of a chunk as one new slice per
// contiguous run of data (holes stay holes) and swaps the new records in
// with m.CompactChunk. It does nothing when that would not reduce the
// number of records. When the chunk changed meanwhile it deletes the
// blocks it wrote and returns an error wrapping ErrChunkChanged. It never
// deletes the old slices' blocks: meta frees them once unreferenced.
func (s *Store) Compact(ctx context.Context, m Meta, ino uint64, chunk uint32) error {
	recs, err := m.ReadChunk(ctx, ino, chunk)
	if err != nil {
		return fmt.Errorf("compact inode %d chunk %d: %w", ino, chunk, err)
	}
	for i, rec := range recs {
		if err := rec.Valid(); err != nil {
			return fmt.Errorf("compact inode %d chunk %d record %d: %w: metadata is corrupt", ino, chunk, i, err)
		}
	}
	runs := dataRuns(slice.Resolve(recs))
	if len(runs) >= len(recs) {
		return nil
	}
	var built []*wslice
	committed := false
	defer func() {
		if !committed {
			for _, ws := range built {
				ws.discard(context.WithoutCancel(ctx))
			}
		}
	}()
	repl := make([]slice.Slice, 0, len(runs))
	for _, run := range runs {
		ws, err := s.copyRun(ctx, m, chunk, run)
		if ws != nil {
			built = append(built, ws)
		}
		if err != nil {
			return fmt.Errorf("compact inode %d chunk %d: %w", ino, chunk, err)
		}
		repl = append(repl, ws.record())
	}
	err = m.CompactChunk(ctx, ino, chunk, recs, repl)
	switch {
	case err == nil:
		committed = true
		s.changed(ino, chunk)
		s.stats.compactions.Add(1)
		s.log.Debug("compacted chunk", "ino", ino, "chunk", chunk, "records", len(recs), "now", len(repl))
		return nil
	case errors.Is(err, ErrChunkChanged):
		s.stats.compactLost.Add(1)
		return fmt.Errorf("compact inode %d chunk %d: %w", ino, chunk, err)
	default:
		// The swap may have happened: keep the new blocks (gc removes them
		// if they are unreferenced).
		committed = true
		return fmt.Errorf("compact inode %d chunk %d: %w", ino, chunk, err)
	}
}

// dataRuns groups resolved pieces into maximal runs of adjacent data.
func dataRuns(pieces []slice.Slice) [][]slice.Slice {
	var runs [][]slice.Slice
	for i := 0; i < len(pieces); {
		if pieces[i].ID == 0 {
			i++
			continue
		}
		j := i + 1
		for j < len(pieces) && pieces[j].ID != 0 {
			j++
		}
		runs = append(runs, pieces[i:j])
		i = j
	}
	return runs
}

// copyRun writes the content of one run of pieces as a new slice and
// waits until it is stored. The returned slice (possibly with an error)
// must be discarded if it is not committed.
func (s *Store) copyRun(ctx context.Context, m Meta, chunk uint32, run []slice.Slice) (*wslice, error) {
	id, err := m.NewSliceID(ctx)
	if err != nil {
		return nil, fmt.Errorf("new slice id: %w", err)
	}
	ws := newWSlice(s, id, chunk, run[0].Pos)
	bs := s.cfg.BlockSize
	buf := make([]byte, bs)
	r := s.NewReader(0, nil) // for its block cache only: no views
	for _, pc := range run {
		v := &view{pieces: []slice.Slice{pc}}
		for at := pc.Pos; at < pc.End(); {
			n := min(pc.End()-at, bs)
			var err error
			walk(v, at, n, bs, func(pos uint32, br blockRead) {
				if err == nil {
					br.dst = buf[pos-at : pos-at+br.n]
					err = r.readBlock(ctx, br, true)
				}
			}, func(uint32, uint32) {})
			if err != nil {
				return ws, err
			}
			if err := s.reserve(ctx, int64(n)); err != nil {
				return ws, err
			}
			s.release(int64(n) - ws.write(ws.length, buf[:n]))
			at += n
		}
	}
	ws.seal()
	return ws, ws.wait(ctx)
}

// CompactLater queues the chunk for compaction by the Store's background
// worker, unless it is already queued or the queue is full.
func (s *Store) CompactLater(m Meta, ino uint64, chunk uint32) {
	ref := chunkRef{ino, chunk}
	s.mu.Lock()
	if s.mu.closed || s.mu.compacts[ref] {
		s.mu.Unlock()
		return
	}
	s.mu.compacts[ref] = true
	s.mu.Unlock()
	select {
	case s.compactQ <- compactJob{m, ref}:
	default:
		s.mu.Lock()
		delete(s.mu.compacts, ref)
		s.mu.Unlock()
	}
}

func (s *Store) compactWorker() {
	defer s.wg.Done()
	for {
		select {
		case <-s.ctx.Done():
			return
		case job := <-s.compactQ:
			err := s.Compact(s.ctx, job.m, job.ref.ino, job.ref.chunk)
			switch {
			case err == nil:
			case errors.Is(err, ErrChunkChanged):
				s.log.Debug("background compaction lost a race; it will be retried when the chunk grows", "ino", job.ref.ino, "chunk", job.ref.chunk)
			case s.ctx.Err() == nil:
				s.log.Warn("background compaction failed", "ino", job.ref.ino, "chunk", job.ref.chunk, "err", err)
			}
			s.mu.Lock()
			delete(s.mu.compacts, job.ref)
			s.mu.Unlock()
		}
	}
}
