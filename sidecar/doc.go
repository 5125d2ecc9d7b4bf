// Package sidecar is the skiff client in a pod (DESIGN.md §6, issue #5):
// it mounts the volumes the webhook listed in SKIFF_VOLUMES, keeps them
// mounted, answers the kubelet's probes, and leaves cleanly. It reads no
// flags or environment itself: cmd/skiff-sidecar builds a Config.
//
// # Configuration and secrets
//
// New validates the Config and reads each volume's Secret keys from its
// secretDir: metaurl (required), passphrase and google-credentials.json
// (optional). Secrets are kept in Spec and never logged: Spec's LogValue
// and redact.URL leave passwords out. Unknown mount options are logged and
// ignored, never fatal.
//
// # Memory: one budget
//
// The Go runtime honours GOMEMLIMIT by itself. The sidecar also sizes its
// buffers from it: the write buffer (written data not yet uploaded) is
// min(Config.BufferSize, 25% of GOMEMLIMIT) and the cache memory tier
// min(Config.CacheMem, 10% of GOMEMLIMIT), both for all volumes together,
// split equally (at least 16 MiB of write buffer per volume, one largest
// block). Each volume's chunk store blocks writers when its share is in
// use, so sustained writes to a slow store stall instead of growing the
// heap (the e2e test checks peak RSS <= budget + 150 MiB over a 3 GiB
// write).
//
// # Mounting, and stale mounts
//
// Each volume has a mount loop (keep). Before every mount it looks at the
// mount path: if statfs(2) fails with ENOTCONN (the FUSE server of a mount
// there died: the previous sidecar container was killed, OOM-killed or
// restarted) or the mount table lists a fuse.skiff mount there, it
// detaches that mount with umount2(MNT_DETACH) — unless the dead mount is
// shared. After a container restart it always is: the runtime bound the
// emptyDir into the new container, and the emptyDir's topmost mount was
// the dead FUSE mount that had propagated to the host, so the mount path
// is a bind of that dead mount and the only link to the apps' copies of
// it; detaching it would cut the link (an unmount propagates only through
// the parent, here the container's root). So the new mount goes on top of
// it instead, and propagates through its peer group to the apps
// (HostToContainer, rslave), where it covers their dead copy. (statfs,
// not stat: FUSE answers stat of a dead mount's root from its attribute
// cache for up to the attribute timeout.)
//
// The volume is always mounted on a staging directory of the sidecar's
// own (Config.StageDir/<volume>) and bound onto the mount path: in a pod
// the mount path is itself a mount (the emptyDir), which fuse.Mount's
// checks refuse, and the bind is what propagates. A watcher notices when
// the bind is unmounted from outside.
//
// What apps see across a sidecar restart: descriptors they opened on the
// old mount stay bound to the dead connection: every operation that needs
// the server fails with ENOTCONN (or EIO; pages still in the kernel's
// cache may be read), and a process whose working directory is
// inside the old mount keeps the detached tree. Paths opened again after
// the new mount is up resolve to it and work. Data the dead sidecar had
// acknowledged but not uploaded is lost (close(2) and fsync(2) wait for
// the upload, so data an app closed or synced is safe). This is why
// DESIGN.md §6 has the webhook turn an app's subPath into a mount of its
// own: a bind of a sub-directory of the FUSE mount would pin the dead
// connection for the life of the app container, with no path to open
// again. ModeSupervised avoids the dead mount altogether when only the
// worker dies: the supervisor keeps /dev/fuse open and a new worker
// takes over.
//
// A mount that goes away while the sidecar runs (unmounted from outside,
// or a supervised mount whose supervisor gave up) is cleaned up and
// mounted again, with backoff; failed mounts (Redis not up yet) are
// retried the same way, from 0.5 s to 30 s.
//
// # Probes
//
// Bodies are "ok" or "not ready" / "not healthy", never the reason: the
// port listens on the pod IP, where any pod may ask. The reason goes to
// the log, once per change, with the volume's secrets removed.
//
// /readyz is 200 when every volume is mounted and statfs(2) on its mount
// path reaches a FUSE file system within Config.ReadyTimeout (2 s). The
// statfs runs in its own goroutine; a probe waits for it at most the
// timeout, and at most one statfs per volume is in flight, so a hung FUSE
// server neither hangs the probe nor piles up goroutines. /healthz is 200
// while the mount loop's heartbeat (every second) is fresh and no mount
// attempt is stuck; it does not touch the mounts, so a slow object store
// does not get the sidecar restarted. /metrics is Prometheus: per volume
// object requests, bytes and errors, cache hits, misses and bytes,
// write-buffer use (dirty bytes), peak and limit, meta transaction
// retries (Redis), FUSE operation latency and errors
// (skiff_fuse_op_duration_seconds{op}, skiff_fuse_op_errors_total{op,errno}),
// mount counts, the statfs round trip through FUSE, and the Go and
// process collectors. The metric names are package telemetry's.
//
// In ModeSupervised the volume counters live in the worker: each worker
// serves them on a unix socket (skiff mount --metrics-socket,
// StageDir/<volume>.metrics, bound again by every new worker), and
// /metrics gathers every volume's socket at scrape time (in parallel,
// 3 s each), adds the volume label, and merges them with the sidecar's
// own metrics; a worker that cannot be reached (it is being replaced) is
// left out of that scrape and logged. Counters restart from zero with
// each worker, which Prometheus reads as a counter reset.
// skiff_worker_generation and skiff_worker_info{version} come from the
// supervisor's status file (StageDir/<volume>.status).
//
// # Shutdown
//
// When Run's context ends (SIGTERM), /readyz turns 503 and every volume
// is shut down in parallel within Config.GracePeriod: the bind on the
// mount path is detached at once (MNT_DETACH: its propagated copies
// leave the apps' namespaces even while files are open there; those
// files keep working until closed); the direct mount
// remounts its superblock read-only so new opens for writing fail with
// EROFS (the kernel refuses while files are open for writing; those
// writers can still write until the unmount), flushes every open file's
// written data until GracePeriod minus 2 s, unmounts (lazily with
// MNT_DETACH when busy), releases the remaining handles, closes the
// volume, which ends its meta session, and logs how many written bytes
// could not be flushed. Run returns nil only when nothing was lost.
//
// # Mount modes
//
// A Mounter mounts one volume. Direct serves it in this process (as
// `skiff mount` does). Supervised runs `skiff mount --supervise` per
// volume: the supervisor (fsclient/fuse/supervisor) keeps /dev/fuse
// across worker crashes and upgrades. Config.Mode picks one;
// Config.Mounter overrides both.
//
// A supervised mount gets the META_URL as a file name
// (--meta-url-file, the Secret's metaurl file), never the URL itself:
// command lines are visible to every process of the pod's PID namespace.
// On SIGUSR2 the sidecar calls Upgrade: it signals every supervisor,
// which replaces its worker (without unmounting) by one started from
// Config.WorkerBinary, read again at each upgrade, and waits until the
// status files show the new workers; it logs their versions. Deliver a
// new binary at that path by rename. A volume whose supervisor exits
// (a crash loop) is mounted again by its mount loop; SIGTERM reaches the
// supervisor, which asks its worker to flush, unmounts and waits for the
// kernel to release the connection, within the grace period.
//
// # Goroutines
//
// Run owns everything it starts: the probe server, one mount loop per
// volume and the statfs calls; it returns after the loops have shut their
// volumes down and the probe server has stopped. A statfs blocked in a
// hung kernel request is the one exception: it ends when the kernel
// answers or the mount is detached.
package sidecar
