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
// at the end. It takes about a minute and is skipped with -short.
//
// The package has no code besides its test.
package memcheck
