package chunk

import (
	"context"
	"errors"
	"fmt"

	"github.com/skiff-fs/skiff/fsclient/slice"
)

// ErrNoCache is returned by Warm on a Store without Config.Cache.
var ErrNoCache = errors.New("no block cache configured")

// Block is one block object holding part of a file's visible data.
type Block struct {
	Key string // slice.BlockKey
	Len uint32 // the block's plain length
}

// FileBlocks lists, in file order and each once, the blocks holding the
// visible data of inode ino, whose length is size (skiff warmup uses it).
// Blocks of overwritten data that no byte of the file shows are left out.
func (s *Store) FileBlocks(ctx context.Context, m Meta, ino uint64, size uint64) ([]Block, error) {
	var out []Block
	seen := map[string]bool{}
	for c := uint32(0); uint64(c)*slice.ChunkSize < size; c++ {
		recs, err := m.ReadChunk(ctx, ino, c)
		if err != nil {
			return nil, fmt.Errorf("read records of inode %d chunk %d: %w", ino, c, err)
		}
		for i, rec := range recs {
			if err := rec.Valid(); err != nil {
				return nil, fmt.Errorf("inode %d chunk %d record %d: %w: metadata is corrupt", ino, c, i, err)
			}
		}
		v := &view{pieces: slice.Resolve(recs)}
		n := uint32(min(uint64(slice.ChunkSize), size-uint64(c)*slice.ChunkSize))
		walk(v, 0, n, s.cfg.BlockSize, func(_ uint32, br blockRead) {
			if !seen[br.key] {
				seen[br.key] = true
				out = append(out, Block{Key: br.key, Len: br.length})
			}
		}, func(uint32, uint32) {})
	}
	return out, nil
}

// Cached reports whether the cache holds b (without reading it).
func (s *Store) Cached(b Block) bool {
	return s.cfg.Cache != nil && s.cfg.Cache.Has(b.Key)
}

// Warm makes sure the cache holds b: unless it does already, it fetches
// the block (collapsed with any other fetch of it, under the download
// bound) and caches it. It reports whether it fetched. A block the cache
// had no room for is fetched and not kept.
func (s *Store) Warm(ctx context.Context, b Block) (fetched bool, err error) {
	if s.cfg.Cache == nil {
		return false, ErrNoCache
	}
	if s.cfg.Cache.Has(b.Key) {
		return false, nil
	}
	if _, err := s.block(ctx, b.Key, b.Len); err != nil {
		return false, err
	}
	return true, nil
}

// Evict drops b from the cache.
func (s *Store) Evict(b Block) {
	if s.cfg.Cache != nil {
		s.cfg.Cache.Remove(b.Key)
	}
}
