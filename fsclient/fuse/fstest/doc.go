// Package fstest holds whole-system tests of skiff's FUSE mount that go
// beyond single operations: two clients of one Redis volume watching each
// other's changes, a model-based random test that applies the same random
// operations to a mount and to a directory on the local disk and compares
// the two trees after every step, and a multi-GiB integrity test.
//
// The package has test files only (and this file). Every test mounts real
// volumes under t.TempDir() through fusetest and unmounts them in
// t.Cleanup, also when it fails.
//
// # Invariants the tests check
//
//   - Coherence between clients: a change made through one mount
//     (create, write then close, rename, unlink, mkdir, rmdir, link,
//     chmod) is seen by another mount of the same volume once the
//     attribute and entry timeouts have passed. The tests poll with a
//     deadline and never assert how fast.
//   - Equivalence with a local file system: every operation of the random
//     test succeeds on the mount exactly when it succeeds on the local
//     directory, fails with the same errno otherwise, and leaves the same
//     tree: names, types, sizes, permission bits, link counts, symlink
//     targets, file contents and user xattrs.
//   - Persistence: the tree and the data are the same after a remount.
//   - Integrity: a file of several GiB written with a position-derived
//     pattern reads back byte-exact, before and after a remount and after
//     random overwrites.
//
// # Replaying the random test
//
// TestModel prints its seed. Run it again with
//
//	go test ./fsclient/fuse/fstest -run TestModel -seed N [-steps M]
//
// or with SKIFF_FSTEST_SEED=N / SKIFF_FSTEST_STEPS=M in the environment
// (which works for `go test ./...` as well). -largesize sets the size of
// TestLargeFile's file.
package fstest
