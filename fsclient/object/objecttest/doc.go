// Package objecttest holds what tests of object stores and of their users
// share: Run, the one conformance suite every object.Store passes, and
// Faulty, a Store decorator that injects errors and corrupts data on
// demand so that higher layers (chunk, vfs) can test their handling of EIO,
// lost replies and corrupted blocks.
//
// Faulty is safe for concurrent use; faults may be injected and removed
// while other goroutines use the store. Bytes returned by a corrupted Get
// are a private copy owned by the caller.
package objecttest
