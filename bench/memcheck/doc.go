// Package memcheck holds the end-to-end memory test of issue 12 (item 6):
// a `skiff mount` process (a normal, non-race build) reading 64 files of
// 32 MiB at once with the block cache off while 8 listings of a
// 200,000-entry directory run, must keep its resident memory within its
// block budget (--buffer-size) plus 150 MiB.
//
// TestMemoryUnderBudget starts a real redis-server (internal/testredis),
// formats a volume with blocks in a local directory (4 MiB blocks,
// unencrypted), writes the files and creates the directory entries in
// process through the volume's library API (fast; FUSE is not what is
// measured there), then mounts the volume with a freshly built skiff
// binary and samples the mount process's VmRSS every 100 ms, plus VmHWM
// at the end. It is skipped with -short: on a busy 2-core machine it
// takes about 2.5 minutes, most of it creating the 200,000 entries (one
// optimistic Redis transaction each, all on the same parent).
//
// MEMCHECK_SPLIT=1 also measures the reads alone and the listings alone,
// each in a fresh mount, to show where the memory goes.
//
// The package has no code besides its test.
package memcheck
