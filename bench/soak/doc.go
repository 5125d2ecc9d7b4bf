// Package soak is `make soak`: a soak test of a Redis volume under faults
// (issue 12), and the oracle it checks the volume against.
//
// TestSoak builds skiff, starts redis-server on a free loopback port (AOF
// with appendfsync always, so a restart loses nothing Redis acknowledged)
// and keeps blocks in the in-process GCS emulator behind a reverse proxy
// that fails a share of requests with 503 (some before, some after they
// took effect) and delays others (-soak.store=dir uses a directory
// instead). N `skiff mount` processes (-soak.clients, default 3) mount the
// volume; one worker per client does random operations in its own
// directory: create, write, append, overwrite ranges, truncate, fsync,
// close, reads of its own writes, rename, unlink, mkdir, and reads of
// other clients' closed files through its own mount. Meanwhile Redis is
// stopped (SIGTERM or SIGKILL) and restarted on its port, client processes
// are killed -9 and remounted, and skiff gc --delete runs. An operation
// that does not return within -soak.hang is recorded as a hang and its
// client killed and remounted. At the end every client unmounts, gc
// --delete and fsck run (fsck must be clean), and a fresh mount reads the
// whole volume back for the oracle to check.
//
// The run lasts -soak.duration, else $SOAK_DURATION, else 30 s (the smoke
// run of `go test ./...`; skipped with -short). Everything is on
// loopback; processes and mounts are removed on failure too.
//
// # The oracle
//
// An operation's failure is never a test failure in itself: faults make
// operations fail (EIO, ENOTCONN after a kill, ...). The oracle records
// what the run may rely on:
//
//   - Metadata operations (create, rename, unlink, mkdir) are acknowledged
//     when they return success. When one fails its outcome is unknown: the
//     file may or may not exist (create, unlink), or is at one of its old
//     and new names (rename). Names are never reused, so both outcomes are
//     checkable; such a file is left alone ("limbo") and checked at the end.
//   - A file's content is acknowledged when close or fsync on the handle
//     that wrote it returns success: Acked is then exactly what the handle
//     shows. Writes and truncates after that are Pending.
//   - A failed write, truncate, fsync or close, or a kill -9 of the mount
//     holding the handle, taints the file: any subset of its pending
//     changes, in any order, may have been stored, and no later success
//     acknowledges them, so the file is not changed again.
//   - At the end a file with nothing pending must read back exactly
//     (sha256). A file with pending changes must keep every acknowledged
//     byte that no pending write covers and no pending truncate cut; every
//     byte it holds must be the acknowledged one, one some pending write
//     put at that offset, or a zero where a truncate or an extension could
//     have left a hole; it is no longer than the largest size it had.
//   - Every entry on the volume must be one a worker made; every
//     directory certainly made must exist.
//
// During the run, a read through the writer's own handle must show its
// writes, and a read through another client of a file closed more than 3 s
// ago (past the attribute and entry caches) must show the acknowledged
// bytes; wrong bytes there fail the test too.
package soak
