// Package cache is skiff's local block cache: a bounded directory of
// block files (an emptyDir or NVMe in the pod) in front of object storage,
// plus a small memory tier for hot blocks.
//
// Keys are block object keys (slice.BlockKey, relative to the volume's
// prefix); a Cache serves one volume, so callers give each volume its own
// directory (volume.Open uses DIR/<volume uuid>). Blocks are immutable, so
// an entry never goes stale: the only ways to lose one are eviction,
// Remove, and damage on disk.
//
// # What is stored
//
// The cache stores the bytes it is given; package chunk decides which. With
// Config.Shared false (the default: the directory is private to the pod,
// e.g. its own emptyDir) chunk caches decoded blocks, after decryption and
// decompression, so a hit costs one local read. With Shared true (a
// directory other pods or users can read) chunk caches the stored form,
// still encrypted on an encrypted volume, and decodes after every hit.
// Each entry records which form it holds; an entry written under the other
// setting is dropped (at re-index, or as a miss). Files are created 0600
// in directories 0700 either way.
//
// # Range reads
//
// ReadAt reads part of an entry: it preads only the 4 KiB pieces holding
// the range (whole pieces straight into the caller's buffer, in one
// pread; each partly covered one at the edges through a pooled scratch
// buffer) and verifies each piece's checksum, so an aligned 4 KiB read
// costs one pread of one page-aligned 4 KiB piece and no allocation. The most recently read entry
// files (64) stay open with their verified piece tables; a file whose
// entry is unlinked is closed once its readers are done, so its space is
// freed (an entry another process unlinked keeps its space while its file
// stays among the 64). The memory tier serves ranges too. Ranges only
// make sense of decoded data (or of a stored form that is the plain bytes
// behind a header, which chunk knows): a compressed or encrypted stored
// form must be read whole (Get) and decoded. Prefetch asks the kernel to
// read an entry's file into its page cache ahead of a sequential reader.
//
// # Invariants
//
//   - Size limit: the bytes of the index (each file's size rounded up to
//     4 KiB), plus the bytes reserved by Puts in progress, plus the bytes of
//     evicted files not yet unlinked never exceed Config.Size. A Put
//     reserves its bytes, evicting first, before it creates a file, and an
//     evicted file is counted until it is unlinked, so the files on disk
//     never exceed the limit however many goroutines Put at once.
//     Stats.Peak is the largest total ever reached.
//   - Free-space floor: before writing, a Put makes sure that at least
//     Config.FreeRatio of the file system would stay free (measured as
//     df(1) does: space reserved for root is neither free nor counted in
//     the total; less the bytes other Puts have reserved), evicting more if
//     needed. A Put that cannot fit under either bound is skipped: caching
//     is best effort and never fails a read or a write. When the floor is
//     what stops it, the log says so (at most once a minute).
//   - Checksums: every entry carries a CRC-32C of each 4 KiB piece of its
//     data and one of its header (format below); padding must be zero. Every byte read from disk
//     has had its piece verified in that read (Get verifies every piece,
//     ReadAt the pieces it reads), and a header is verified before its
//     table is used. A damaged, truncated or foreign entry is removed and
//     reported as a miss (the caller fetches the block again); it is never
//     returned. The memory tier holds data that was verified or put.
//   - Atomic writes: an entry is written to a temporary file (a name
//     starting with '.') and renamed into place, so a crash leaves either
//     nothing or a complete file. Temporary files are removed when the
//     directory is opened.
//   - Restart: New scans the directory and rebuilds the index with each
//     file's size and last access time (the later of atime and mtime). It
//     reads and verifies each file's header: entries of an older format
//     (version 1, one CRC over the whole entry) or of the other form are
//     removed (Stats.Stale), entries with a damaged header or a wrong size
//     are removed (Stats.Corrupt); the data is verified on read.
//   - Eviction is a segmented LRU: a new entry is on probation; a hit
//     moves it to the protected segment (at most 80% of Size), whose least
//     recently used entries fall back to probation. Victims come from the
//     probation segment's cold end first, so a one-time scan of many blocks
//     (a big sequential read) does not flush blocks that are read again.
//   - Other processes: an entry another process (skiff warmup) wrote into
//     the same directory is found on a miss and adopted into the index. The
//     size limit is enforced by each process over the entries it knows of.
//
// # Memory tier
//
// Up to Config.MemSize bytes of recently put or read entries stay in
// memory (LRU), so hot blocks skip the disk. Get's result is shared with
// the memory tier and must not be modified; Put keeps a reference to its
// data (without copying), so the caller must not modify it afterwards.
// Write caches on disk only and keeps no reference (for callers that
// reuse their buffers); ReadAt copies and keeps no reference either.
//
// # Entry file format
//
//	offset 0   magic "skc2"
//	offset 4   flags: bit 0 set if the data is the stored form (Shared);
//	           bit 1 set if the data is aligned (below)
//	offset 5   log2 of the piece size (12: 4 KiB; 12 to 24 accepted)
//	offset 6   2 bytes zero
//	offset 8   data length L, uint32 little endian
//	offset 12  CRC-32C (Castagnoli) of bytes 0-11, four zero bytes and
//	           the piece table, uint32 little endian
//	offset 16  piece table: ceil(L / piece size) CRC-32Cs, one per piece
//	           of the data, uint32 little endian each
//	then       if aligned: zero bytes up to the next multiple of 4 KiB,
//	           so pieces are page-aligned (entries of 64 KiB and more)
//	then       data (L bytes)
//
// Format version 1 ("skc1": a 16-byte header with one CRC of the whole
// data) is no longer read: such entries are removed at re-index.
//
// An entry of key K lives at DIR/blocks/K.
//
// # Locking
//
// Cache.mu guards the index; Cache.mem.mu the memory tier; Cache.files.mu
// the open files. No two are ever held together, and no file I/O happens
// under any (statfs aside, which runs before mu is taken).
package cache
