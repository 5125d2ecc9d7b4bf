// Package bolt is the embedded kv.Engine for single-node volumes
// (META_URL "bolt://PATH"), built on go.etcd.io/bbolt.
//
// Layout inside the file:
//   - bucket "kv" holds plain string keys: key -> value;
//   - bucket "h" holds one nested bucket per hash, named by the hash's key,
//     whose entries are field -> value. A hash whose last field is removed
//     is removed, as in Redis.
//
// A key is either a string or a hash: Set on a key replaces a hash of the
// same name (as Redis SET does), Delete removes both, and Scan reports such a
// key once. Callers should not mix the two types on one key (Redis answers
// WRONGTYPE).
//
// Guarantees:
//   - Update is one bbolt read-write transaction: serializable (bbolt has
//     one writer at a time), so it never conflicts and fn runs exactly once.
//     An error from fn, or any failed write inside it (an empty key, a key
//     longer than bbolt's limit), rolls the whole transaction back; nothing
//     is written.
//   - With Options.NoSync false (the default) a successful Update is on
//     disk (fdatasync) before it returns. There is no unknown outcome: the
//     commit either returned nil or it did not happen.
//   - View is a bbolt read-only transaction: a consistent snapshot. A write
//     inside View makes View fail with an error.
//   - Values handed out are copies; bbolt memory never escapes a transaction.
//   - One process at a time: bbolt takes an exclusive flock on the file.
//     A second Open (from any process, the same one included) waits
//     Options.LockTimeout and then fails with an error wrapping kv.ErrLocked
//     that tells the user the volume is in use.
//
// Only a regular file, or a path that does not exist yet, is opened: a
// device, directory, FIFO or socket is refused before open (os.Stat) and
// again on the opened descriptor (fstat), because bbolt writes its first
// pages into a file it finds empty and a block device reports size 0.
//
// Engine is safe for concurrent use; a Tx is not (and must not outlive fn).
package bolt
