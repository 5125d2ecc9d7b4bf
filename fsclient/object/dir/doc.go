// Package dir implements object.Store over a local directory, for
// single-node volumes and for tests.
//
// Layout: key "a/b/c" is the file ROOT/a/b/c; the '/'-separated segments of
// a key become directories, created on demand. Keys must have no empty, "."
// or ".." segments, no leading or trailing '/', no NUL byte, and no segment
// starting with ".skiff-tmp-" (reserved for temporary files); other keys are
// refused with an error wrapping object.ErrInvalidKey, so no key can reach
// outside ROOT. A key cannot be both an object and the directory of another
// key ("a" and "a/b"); skiff's block keys never are.
//
// Atomicity and durability: Put writes a temporary file in the target
// directory, fsyncs it, renames it over the key and fsyncs the directory,
// so after Put returns the object survives a crash, and a reader sees the
// old or the new file whole (an open reader keeps reading the file it
// opened). Temporary files left by a crash are named ".skiff-tmp-*" and are
// ignored by List; they may be removed by hand at any time when no Put is
// running.
//
// Delete removes the file and then the directories it leaves empty (never
// ROOT), so listings of a long-lived store stay fast. Put recreates
// directories a concurrent Delete removed.
//
// List walks only the directories that can hold keys with the given prefix
// and after startAfter, in key order, and stops once it has limit keys.
//
// Concurrency: a *Store has no mutable state; all methods are safe for
// concurrent use, also by several processes sharing ROOT. Buffers: Put does
// not keep data; the reader from Get reads the file directly and must be
// closed. Files are created with mode 0600 and directories with 0755
// (before the umask).
package dir
