// Package object defines Store, the small interface between skiff's chunk
// layer and object storage, and decorators over any Store.
//
// Guarantees every Store gives (checked by objecttest.Run):
//
//   - Atomicity: Put replaces an object whole; a concurrent Get or Head sees
//     the old or the new object, never a mix or a prefix. skiff's block
//     objects are immutable and their keys unique, so in practice a key is
//     written once.
//   - Missing objects: Get and Head return an error wrapping ErrNotFound;
//     Delete of a missing key succeeds.
//   - Listing: List returns keys in lexical (byte) order, each key once when
//     paged with startAfter, including keys in nested "directories".
//   - Concurrency: every method may be called from many goroutines at once.
//   - Buffers: Put does not retain data after it returns. The reader Get
//     returns belongs to the caller, who must Close it; bytes read from it
//     are the caller's.
//   - Cancellation: every method returns an error once ctx is done.
//
// Implementations live in sub-packages so that this package imports no SDK:
// object/dir (a local directory) and object/gcs (Google Cloud Storage).
// object/stores opens either from a bucket URL; it is a separate package
// because it imports both implementations, which import this one.
// object/objecttest holds the conformance suite and a fault-injecting store
// for tests.
//
// Decorators: WithPrefix places every key under a fixed prefix. A decorator
// forwards Close to the store it wraps when that store is an io.Closer.
package object
