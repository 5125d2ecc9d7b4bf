// Package kv is the narrow transactional backend under the POSIX metadata
// model of package meta. An Engine holds exactly one volume; keys are plain
// strings chosen by meta, and an engine may add its own prefix (a Redis
// "?prefix=" or hash tag) without meta knowing.
//
// Guarantees every engine gives, checked by package kvtest:
//   - Update is atomic and isolated: fn sees a consistent view, and its
//     writes land all together or not at all;
//   - a transaction that read a key another client changed before commit
//     is re-run, at most a bounded number of times (then ErrConflict);
//   - an error from fn writes nothing and is returned as is;
//   - an unknown commit outcome is reported as an error wrapping
//     ErrCommitUnknown, never hidden and never retried blindly;
//   - values handed to and returned by a Tx are copies: the caller may
//     reuse its buffers.
package kv
