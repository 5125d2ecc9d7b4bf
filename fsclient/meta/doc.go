// Package meta is skiff's POSIX metadata model: namespace, attributes,
// permissions, link counts, rename rules, sticky bit, setgid directories,
// extended attributes, sessions with open-but-unlinked files, chunk slice
// lists and id allocation. It is written once over the narrow transactional
// backend kv.Engine; every engine (meta/redis, meta/bolt) passes the
// conformance suite in meta/metatest.
//
// # Invariants
//
// Atomicity. Every operation that changes more than one key runs as ONE
// kv.Engine.Update, so it lands whole or not at all, also across a Redis
// restart or a client crash. Update may run the transaction function more
// than once: the functions touch only the transaction, and work to do after
// the commit (usage counters, waking the background jobs) is collected in
// the transaction's effects, reset on each run, and applied once after a
// successful commit. An unknown commit outcome (the connection broke during
// EXEC) is returned as an error; the change is then either fully applied or
// not at all.
//
// Link counts are exact. Every read that a decision depends on (the parent's
// attributes, the entry, the target inode, the open records, each directory
// on the way to the root for a rename) is made inside the transaction, so
// on Redis it is WATCHed and a concurrent change re-runs the operation. A
// file's Nlink equals the number of entries naming it; a directory's Nlink
// is 2 + its subdirectories; a directory's Parent is the directory holding
// it (the root's is itself). CheckTree verifies this on a quiet volume.
//
// Lifetime of inodes and data. When the last link of a file goes, the inode
// is kept while any session has it open (a field in "o<ino>"): it is then
// removed by the last Release, by Close of the last session holding it, or
// by the cleanup of a stale session (any live client does this once a
// session missed heartbeats for Options.SessionTimeout). A removed file's
// size goes to "delfiles"; a background job moves its chunks' slices to the
// "delslices" queue (due at once: nobody can read the file any more) and a
// later pass calls the deleter set by SetDeleter for each due slice, removing
// it from the queue only after the deleter succeeded (deleting blocks is
// idempotent, so two clients doing it is harmless). Slices dropped by
// Truncate or CompactChunk are due after Options.SliceFreeDelay, so readers
// holding an older slice map can finish. Without a deleter, slices wait.
//
// Open files. Meta counts this client's handles per inode in memory; only
// the first Open of a regular file and its last Release write to the engine
// (the session's record in "o<ino>" and "sessopen<sid>"). Open needs a
// session (NewSession) unless the Meta is ReadOnly; a read-only client
// records nothing, so its open files are not protected from deletion by
// other clients.
//
// File locks. Flock, Getlk and Setlk keep BSD and POSIX locks in the
// engine, shared by every client; each change is one Update over the
// inode's lock hash, so conflicting requests never both succeed. A lock is
// owned by (session, FUSE lock owner) and ends with ReleaseLocks, Close of
// the session, or the cleanup of the session as stale; see lock.go.
//
// Caching. Meta caches nothing of the namespace: every call reads the
// engine. Lookup and GetAttr are one View (Lookup reads the entry, then the
// parent's and child's attributes in one MGet).
//
// Ids. Inode and slice ids come from the counters "nextInode" and
// "nextSlice" through Engine.Incr, Options.IDBatch at a time, kept in
// memory per client: ids are unique per volume but not dense, and a crashed
// client's unused batch is skipped. Inode 1 is the root; slice id 0 marks a
// hole record.
//
// Sessions and clocks. Heartbeats are the engine's time (Engine.Now: Redis
// TIME), so staleness is judged on one clock. A client cleans up other
// sessions only after its own heartbeats have succeeded, unbroken, for a
// whole SessionTimeout since it last (re)connected: after an outage of any
// length every client gets a full timeout to come back.
//
// Slice floor. Each session publishes in "sessslice" a lower bound of the
// slice ids it may still commit: written when it reserves a batch of ids
// (before handing any out) and raised by heartbeats as ids commit.
// SliceFloor is the minimum over live sessions; gc deletes no block of a
// slice at or above it. An id whose upload failed and was never committed
// keeps the session's floor down until the session ends (gc then only
// leaves more garbage for later).
//
// Usage. "usedSpace" (regular files' sizes rounded up to 4 KiB, plus the
// bytes of xattr names and values) and "usedInodes" are changed with
// Engine.Incr after each commit. They can drift
// when a client dies between a commit and its Incr, or when a commit's
// outcome is unknown; nothing recomputes them yet.
//
// Xattrs. One inode holds at most MaxXattrBytes (128 KiB) of xattr names
// and values; a SetXattr that would grow past it fails with ENOSPC (one
// value is at most 64 KiB, E2BIG past it). Removing an xattr or the inode
// releases its bytes from usedSpace. (Xattrs set before this accounting
// existed were never counted: their release makes usedSpace drift low,
// like any other drift.)
//
// # Key schema
//
// Keys are short ASCII strings; engines may prefix them (Redis hash tag).
// Numbers are decimal. Binary values are big-endian.
//
//	setting           JSON format.Format of the volume
//	nextInode         counter: last reserved inode number (Format sets 1)
//	nextSlice         counter: last reserved slice id
//	nextSession       counter: last session id
//	usedSpace         counter: bytes in use
//	usedInodes        counter: inodes in use
//	i<ino>            attributes: version byte 1, then typ u8, mode u16,
//	                  uid u32, gid u32, nlink u32, size u64, rdev u32,
//	                  atime/mtime/ctime i64 s, atime/mtime/ctime ns u32,
//	                  parent u64 (72 bytes)
//	d<ino>            hash of a directory: name -> type u8 + inode u64
//	c<ino>_<chunk>    slice list of a chunk: 24-byte slice.Slice records in
//	                  write order (later wins), holes have ID 0
//	s<ino>            symlink target
//	x<ino>            hash of extended attributes: name -> value
//	o<ino>            hash: session id -> 1, for each session with ino open
//	sessions          hash: session id -> last heartbeat, Unix milliseconds
//	sessinfo          hash: session id -> JSON SessionInfo
//	sessopen<sid>     hash: inode -> 1, the regular files session sid has open
//	sessslice         hash: session id -> decimal slice floor, the lowest
//	                  slice id the session may still commit (SliceFloor)
//	delfiles          hash: inode -> size u64, removed files whose chunks
//	                  still need to go to the delete queue
//	delslices         hash: slice id -> stored size u32 + due time u64
//	                  (Unix ns): slices whose blocks are to be deleted
//	lf<ino>           hash of flocks: <sid>_<owner> -> 'R' or 'W'
//	lp<ino>           hash of POSIX locks: <sid>_<owner> -> ranges sorted
//	                  and disjoint, each start u64, end u64 (inclusive,
//	                  2^64-1 = to EOF), pid u32, type 'R' or 'W' (21 bytes)
//	lk<sid>           hash: inode -> 1, the inodes session sid may hold
//	                  locks on (released by Close and stale cleanup)
//
// The attribute, entry and lock-range decoders reject malformed input with
// an error (wrapping errCorrupt) and never panic (FuzzDecodeAttr,
// FuzzDecodePlocks).
//
// # Errors
//
// POSIX outcomes are plain syscall.Errno values (test with errors.Is);
// other errors are wrapped with the operation and inode.
package meta
