// Package chunk is the data path between files and object storage: it cuts
// written bytes into slices and blocks, stores blocks (compressed, then
// encrypted), commits slices to metadata, and reads file ranges back.
//
// It imports object, cache, slice and format, never meta: the few
// metadata calls it needs are the Meta interface, which vfs adapts.
//
// # Invariants
//
//   - Blocks are immutable. A block object's key (slice.BlockKey) names its
//     slice id, index and plain length; slice ids are never reused, so an
//     overwrite always makes new objects. Uploaded bytes are never changed:
//     a write that would touch an uploaded block starts a new slice.
//   - Commit after upload. A FileWriter commits a slice (Meta.WriteChunk)
//     only after every block of it is stored, and commits a file's slices
//     in the order they were written, so later writes win and a crash never
//     exposes a record whose blocks are missing. A slice whose upload
//     failed is never committed; Flush reports the error, naming the object.
//   - Bounded loss: written data is committed in the background once its
//     writer is idle for Config.FlushAfter, or once its oldest uncommitted
//     byte is FlushAfter/2 old (a writer that never pauses), so a kill -9
//     loses at most about FlushAfter of data not closed or fsynced.
//   - Compaction (Compact) writes new slices and swaps records with a
//     compare-and-swap (Meta.CompactChunk). It deletes only blocks it wrote
//     itself and only when the swap certainly did not happen; old slices are
//     freed by meta once no record references them (DeleteSlice).
//   - Write memory is bounded: bytes written and not yet uploaded count
//     against Config.BufferSize across all writers, and WriteAt waits
//     (honouring ctx) while it is used up. Full-size block buffers are
//     reused after their upload (a free list of at most
//     BufferSize/BlockSize), and so are encoding buffers (at most
//     UploadConcurrency, not counted against BufferSize; none is needed
//     beyond that since uploads are bounded), so a steady stream of
//     writes allocates no block-sized memory once warmed up and the Go
//     heap stays near BufferSize rather than growing with garbage.
//   - Fetch collapsing: at any moment at most one Get per block object (or
//     per byte range of one) is in flight in a Store, however many readers
//     want it; the others wait for its result. The download runs under the
//     Store's context and is canceled only when every waiter gave up.
//     Downloads are bounded by DownloadConcurrency, uploads by
//     UploadConcurrency.
//   - Readers cache each chunk's resolved records. A commit or compaction by
//     this process bumps a generation counter that makes the cached view
//     stale; changes made elsewhere need FileReader.Invalidate. vfs must
//     flush a file's writer before reading ranges it wrote, and before a
//     truncate.
//   - Reads: a read copies from a whole block its FileReader holds, else
//     reads just its range from the cache when the cache can serve ranges
//     (it holds decoded blocks, or the stored form of a plain volume),
//     verifying only the cache pieces it touches and allocating nothing.
//     Otherwise a read that continues the previous one fetches whole
//     blocks; other reads fetch only the byte range they need where
//     blocks are plain (no compression, no encryption), else whole blocks,
//     and with a cache a partial read of a block it lacks also starts
//     fetching the whole block into it (whole-block prefetch). A shared
//     cache of compressed or encrypted blocks holds only the stored form,
//     so a hit there still reads and decodes the whole block.
//   - Read-ahead: a sequential reader's window starts at one block and
//     doubles up to Config.Readahead, shrinking towards one block while
//     more than half the write buffer budget is in use (memory pressure).
//     Blocks in the window that the cache can serve by range are only
//     prefetched into the kernel's page cache (Cache.Prefetch); the others
//     are fetched whole into the FileReader, which keeps up to
//     Readahead/BlockSize+3 whole blocks and never evicts a block read
//     ahead before it was read.
//   - One memory budget: readers' whole blocks, from the start of their
//     download until the reader drops them, count against BufferSize
//     with the write buffers (Stats.Held). Reads yield to writes: while
//     the total is over BufferSize, read-ahead is refused and a reader
//     that receives a block first drops blocks it has already read, and
//     keeps none when that does not make room (the waiting read still
//     gets its bytes; the next read of that block fetches it again). So
//     reader memory beyond the budget is at most the blocks that reads
//     are waiting for (at most DownloadConcurrency fetches at once).
//   - Cache (Config.Cache, optional): every whole-block fetch asks the
//     cache (memory, then disk) first, inside the collapsed fetch, so
//     cache hits need no download slot and concurrent readers of one block
//     still cause one cache read or one Get. A fetched block is put into
//     the cache decoded, or in its stored form when the cache is Shared
//     (and then decoded after every hit). An entry that does not decode to
//     its key's length is removed and the block fetched again; the cache
//     itself drops entries that fail their checksum (and a stored form
//     that fails its block sums is dropped too). With CacheWrites,
//     uploaded blocks are cached too (on disk only: Cache.Write, so the
//     write buffers can be reused). DeleteSlice removes a slice's
//     blocks from the cache. Warm, Cached and Evict serve skiff warmup.
//
// # Locking
//
// FileWriter.flushMu → FileWriter.mu → wslice.mu → Store.mu, and
// FileReader.mu → Store.mu. Store.mu is innermost; no I/O happens under
// it. Object I/O never happens under a FileWriter's or FileReader's mu;
// Meta.NewSliceID may (meta allocates ids in batches).
//
// # Buffers
//
// WriteAt copies p before returning; the caller owns p again afterwards.
// ReadAt fills p and keeps no reference to it after returning. Block
// contents shared between readers are never modified.
//
// # Stored block format (data format versions 1 and 2)
//
//	byte 0     header: bits 7-4 version (1 or 2), bit 3 encrypted,
//	           bits 2-0 codec: 0 none, 1 lz4 (block format), 2 zstd (frame)
//	plain      header ‖ body
//	encrypted  header ‖ nonce (24 random bytes) ‖ ciphertext of body ‖ tag (16)
//
// Version 1: body is the payload, the block compressed with the header's
// codec; a block that compression would not shrink is stored with codec 0.
//
// Version 2 (end-to-end checksums): sums are CRC-32C (Castagnoli), uint32
// little endian, each seeded with CRC-32C(object key ‖ piece number as
// uint32 little endian), so a block stored under another key, or a piece
// moved within a block, fails like a flipped byte.
//
//	codec 0    sum₀ ‖ piece₀ ‖ sum₁ ‖ piece₁ ‖ …: the plain block in pieces
//	           of 64 KiB (the last one shorter), each after its sum
//	codec 1,2  sum ‖ payload: one sum of the whole plain block (piece
//	           number 0xFFFFFFFF), checked after decompression
//
// Encryption is XChaCha20-Poly1305 under the volume's 32-byte data key,
// with associated data header ‖ object key, so a block copied over another
// object, or with its header changed, fails authentication. Version 2
// keeps its sums inside the ciphertext too: they cost a CRC pass (a small
// fraction of the cipher's cost), keep one body layout for every volume,
// and check the plain bytes after decompression and decryption, which the
// AEAD tag (over the ciphertext) does not.
//
// Decoding checks the header's version and form, every sum, and that the
// plain length equals the length in the key; every failure is ErrCorrupt
// naming the key, never bytes. Every block says its version, so a volume
// holds both: Config.BlockFormat (the volume's format.Version) chooses
// what new blocks are written in, and all are read.
//
// On a volume with neither compression nor encryption, part of a block is
// read with one range Get: in version 1 plain bytes [off, off+n) at
// 1+off; in version 2 the whole pieces holding them, with their sums,
// which are verified (the rest of the block is neither read nor
// verified). A range read cannot see the header, so on a volume that may
// hold both versions (Config.OldBlocks) it reads the block's header byte
// first, once per block. A Shared cache holding such stored forms serves
// ranges the same way, the entry's length telling the versions apart.
//
// Where sums are checked: every block read from the object store (whole
// or by range), and every hit of a Shared cache (stored form). A cache
// private to the pod holds decoded blocks that passed their sums when
// fetched (or, for CacheWrites, the very buffer the sums were computed
// from) under the cache's own per-4 KiB CRC-32C, verified on every read of
// it; so every byte a reader returns has been checked against a sum made
// from the bytes the writer was given. A mismatch is ErrCorrupt, which
// the FUSE edge turns into EIO and a "DATA LOSS" log line naming the key.
//
// # Keys
//
// The data key is random (NewKey) and stored only wrapped, in
// format.Sealed: XChaCha20-Poly1305 (nonce ‖ ciphertext, associated data
// "skiff data key v1") under a key derived from the passphrase with
// argon2id (16-byte random salt; time 3, 64 MiB, 4 threads, recorded in the
// Sealed record). OpenKey unwraps it.
package chunk
