// Package supervisor keeps a FUSE mount alive while the process that runs
// the file system (the worker) dies, is OOM-killed or is upgraded: a small
// supervisor process owns the /dev/fuse descriptor and relays every
// request to the worker. It is shared by the sidecar and the CSI plugin.
//
// # Design: a relay, not a direct hand-off
//
// The supervisor mounts (mount(2) with fd=, rootmode, user_id, group_id,
// max_read, allow_other, default_permissions: the kernel checks
// permissions and the hello tells each worker so, as the hand-off state
// tells an adopter) and reads each kernel
// request from /dev/fuse. It forwards it to the worker over a
// SOCK_SEQPACKET socketpair, which keeps message boundaries as /dev/fuse
// does; the worker's go-fuse serves its end through go-fuse's "/dev/fd/N"
// mount point (fuse.ServeConn), with ordinary read and writev: go-fuse
// issues no ioctl on it and splices only ReadResults backed by a file
// descriptor, which skiff does not return. The socket's send buffer is
// raised (SO_SNDBUFFORCE, else SO_SNDBUF up to net.core.wmem_max) to carry
// one message of MaxWrite; when it cannot, MaxWrite is lowered and the
// INIT reply's max_write/max_pages are clamped to match.
//
// The supervisor records:
//   - the kernel's INIT and the first worker's reply. A new worker gets the
//     INIT replayed; its reply is checked (same protocol version, same
//     capability flags, max_write not smaller) and swallowed.
//   - every request not yet answered, by unique (FORGET, BATCH_FORGET and
//     NOTIFY_REPLY have no reply and are not kept; INTERRUPTs are kept
//     with the request they interrupt). Notifications from the worker
//     (unique 0) pass through to the kernel.
//   - the open file and directory handles (from OPEN, CREATE, TMPFILE and
//     OPENDIR replies, until RELEASE). A new worker opens each again under
//     the same number (fuse.ConnOptions.Handles); the worker numbers
//     handles itself and maps them to vfs handles, so numbers survive it.
//   - acknowledged writes not yet committed (the write journal): a WRITE
//     whose reply said OK stays in the worker's memory until a flush
//     uploads and commits it, so a SIGKILL would lose it although the
//     application was told it was written. The supervisor keeps each such
//     WRITE until a FLUSH, FSYNC, READ (vfs flushes dirty data first),
//     FALLOCATE or truncating SETATTR of the inode, dispatched after the
//     write was acknowledged, succeeds. Past Config.JournalSync bytes per
//     inode (32 MiB) it sends the worker an FSYNC of its own (a unique
//     with the top bit set, answered to the supervisor only), so the
//     journal stays bounded.
//
// When the worker dies the supervisor stops dispatching (new requests
// queue), relays every reply the dead worker had written, starts a new
// worker (backoff from 50ms doubling to 5s; more than MaxRestarts starts
// within RestartWindow is a crash loop: logged, the mount is detached and
// Err reports it, so that applications fail instead of hanging), hands it
// the relay socket over the control socket with SCM_RIGHTS, replays INIT,
// replays the journal (in dispatch order, under synthetic uniques) and
// re-sends the unanswered requests in unique order. The kernel never sees
// the worker change: applications see a stall (about 0.1 s here), not an
// error. This works on every kernel: re-sending happens in the supervisor,
// so FUSE_NOTIFY_RESEND (Linux 6.9+) is not needed.
//
// Upgrade is the same path done gently: pause, wait for the old worker's
// requests (DrainTimeout), ask it to stop (it flushes every file, closes
// its volume and exits — a bbolt volume is locked by one process at a
// time), then start the new binary and resume. The stall lasts the flush
// plus the new worker's start.
//
// The supervisor pins the worker's executable: it keeps the file open and
// runs it through /proc/self/fd, so a restart after a crash runs the
// binary it was given even when another file has since been renamed onto
// the path (a delivery for the next upgrade). If the new binary does not
// start, the supervisor goes back to the pinned one; only after an
// upgrade succeeds is the new file pinned instead.
//
// # Supervisor hand-off: a new supervisor takes the connection over
//
// A worker upgrade keeps the supervisor; replacing the supervisor itself
// (a new skiff version, a new CSI mounter pod) uses the hand-off. A
// supervisor started with Config.HandOffSocket listens there (a unix
// socket, mode 0600); Adopt, in the new process, connects and:
//
//  1. the old supervisor quiesces exactly as for an upgrade: new requests
//     queue, the worker's requests drain (DrainTimeout), the worker
//     flushes every file (so no acknowledged write exists only in its
//     memory) and exits; then it stops reading /dev/fuse;
//  2. it sends its /dev/fuse descriptor (SCM_RIGHTS) and its state as
//     versioned JSON (HandOffVersion): the recorded INIT and the first
//     worker's INIT reply, the open handles, the requests not answered
//     (with their INTERRUPTs), the write journal (empty unless the final
//     flush failed: then the writes travel and are replayed), the worker
//     generation;
//  3. the new supervisor starts its own worker (its own binary and
//     version), replays INIT into it and checks the reply against the
//     recorded one, reopens the handles, and says ready;
//  4. the old one answers release, closes its copy of the descriptor and
//     stops (Done; HandedOff is true) without unmounting; the new one
//     replays the journal, re-sends the queued requests and reads
//     /dev/fuse — as after a worker crash. It listens on its own
//     HandOffSocket for the next hand-off.
//
// Applications see a stall (the old worker's flush plus the new worker's
// start), not an error; the mount, its st_dev and every bind of it stay.
// Until release, any failure (an adopter of another version of the
// record, another mount point, a worker that does not start, a closed
// socket) leaves the connection with the old supervisor, which starts a
// worker again and serves on; the adopter answers no request before
// release, so nothing is answered twice. After release the old process
// is irrelevant: kill -9 of it changes nothing. One window remains: if
// the adopter dies between the old one's release and its first read of
// /dev/fuse, both copies of the descriptor are gone and the mount ends
// (ENOTCONN), as it would if the one supervisor died.
//
// The direct hand-off (the worker reads /dev/fuse itself, the supervisor
// keeps a duplicate descriptor and the INIT) was rejected: go-fuse keeps
// the negotiated INIT state private, so a new Server cannot resume a
// connection without a fork of go-fuse; re-issuing taken requests needs
// FUSE_NOTIFY_RESEND (Linux 6.9+ only, nothing on older kernels); and
// since the supervisor would not see the traffic, writes acknowledged but
// not committed (up to the worker's write buffer, 300 MiB by default)
// would be lost with the worker, as would its handle table. The relay's
// cost, measured with bench/relaybench (bbolt + local directory store,
// 1 GiB sequential, 1 MiB requests, page cache dropped, median of 3, on a
// 2-CPU VM shared with other test runs (load 4 to 12), Linux 6.18; two
// runs of `go run ./bench/relaybench -size 1024 -runs 3`):
//
//	                direct   relay   ratio
//	write (MB/s)       287     281    0.98
//	read  (MB/s)       622     404    0.65
//	write (MB/s)       408     392    0.96
//	read  (MB/s)       593     441    0.74
//
// Writes are bound by the worker's store and lose nothing measurable.
// Reads pay two extra copies of each 1 MiB reply (worker to socket,
// socket to supervisor) and two context switches; on this loaded 2-CPU
// machine that is a quarter to a third of the local-disk read rate. Against a real
// object store (GCS: tens to a few hundred MB/s per client) the relay is
// not the bottleneck, and correctness across a SIGKILL (the journal) is
// not available otherwise, so the relay is kept. If local-cache reads
// ever dominate, FUSE passthrough (go-fuse RegisterBackingFd, through the
// supervisor's descriptor) is the way to bypass both processes.
//
// # The supervisor stays small and out of the Go poller
//
// No Redis, no object store, no volume: only the relay state above and
// one MaxWrite buffer per relay goroutine and per queued WRITE. It sets
// its oom_score_adj to -999 and each worker's to 1000 (when permitted;
// lowering needs CAP_SYS_RESOURCE), so the OOM killer picks the worker.
// /dev/fuse and the relay sockets are read with plain system calls and
// poll(2), never through the Go runtime's epoll: a Go program that opens
// a file on a FUSE mount makes the runtime epoll_ctl it, which sends
// FUSE_POLL and holds the epoll lock until the answer comes — through
// the relay. Start therefore switches POLL off for the connection at once
// (fuse.DisablePoll: the worker's go-fuse answers ENOSYS, and the kernel
// never asks again): otherwise a process hosting a Supervisor that opens
// a file on its own mount can freeze, its thread waiting in epoll_ctl
// while a garbage collection waits for that thread. The process that hosts a Supervisor must still not keep
// files open on its own mount across a worker restart: forking the new
// worker makes the child close (and so FLUSH) them before exec, while
// the mount is paused.
//
// # Worker side
//
// A worker's main calls Attach(os.NewFile(WorkerControlFD, ...)) to get
// the hello (mount point, generation, handles) and the relay socket, opens
// its volume, and calls Worker.Serve, which answers the supervisor's flush
// and stop requests and reports the worker's version. skiff's own worker
// is the hidden `skiff __worker`; `skiff mount --supervise` runs a
// supervisor (SIGUSR2 upgrades to --worker-binary, SIGTERM flushes and
// unmounts; --handoff-socket PATH listens for a successor, and
// `skiff mount --supervise --adopt PATH META_URL MOUNTPOINT` is one: it
// takes the mount over and exits the old process with status 0).
//
// # Known limits
//
//   - Locks (flock, POSIX) held through a dead worker's meta session are
//     not taken over; they end with that session.
//   - A file unlinked while open may not be opened again by a new worker
//     (after an upgrade the old worker's release frees it); its users get
//     EBADF.
//   - Mounting needs CAP_SYS_ADMIN (no fusermount3 path).
//   - The supervisor process is the one thing that must not die: when it
//     does (kill -9, its container restarted) the connection ends. Only a
//     planned replacement goes through the hand-off.
package supervisor
